"""`bench mscn-diagnose`: what MSCN's head and purification do, epoch by epoch.

A noisy copy of dataset D's clean originals goes into a temporary database (never the user's), and MSCN trains on
it as a run would. After each epoch (network A when co-training), against the injected ground truth of the
training pairs: the meta loss of the epoch's meta steps; the head's score `p` on this epoch's meta-data (mean on
positives and negatives, and its AUROC there) and on the training pairs (mean on clean and noisy ones, and its
AUROC as a detector); after a purification, the pairs set aside for the next epoch with the noisy share among
them, and the noisy share among the pairs kept; rSum on `test`. At the end: the run's AUROC of `clean_prob` and
of `p`, and rSum.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from core.benchmarks._diagnose import auroc, fmt, header, observed_run, register_diagnose, report


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    register_diagnose(sub, common, "mscn-diagnose", "MSCN's head and purification against the truth", __doc__,
                      "an MSCN setting, e.g. warmup_epochs=2 (repeatable)", run)


def epoch_figures(mscn, epoch: int) -> dict[str, Any]:
    """What MSCN's first network holds after `epoch`, against the training pairs' ground truth (see the module
    docstring). Purification figures only after an epoch that purified."""
    train = mscn.data.train
    noisy = mscn.data.is_noisy[train] == 1
    net = mscn.nets[0]
    p, meta, labels = mscn.pair_and_meta_scores(net)
    p = p[train]
    out: dict[str, Any] = {
        "epoch": epoch + 1, "p_auroc": auroc(noisy, -p),
        "p_clean": float(p[~noisy].mean()), "p_noisy": float(p[noisy].mean()),
        "meta_positive": float(meta[labels == 1].mean()), "meta_negative": float(meta[labels == 0].mean()),
        "meta_auroc": auroc(labels == 0, -meta), "rsum": (mscn.retrieval_on_test() or {}).get("rsum")}
    if mscn.purifies_after(epoch):
        aside = ~net.keep[train]
        out |= {"set_aside": int(aside.sum()),
                "set_aside_noisy_share": float(noisy[aside].mean()) if aside.any() else None,
                "kept_noisy_share": float(noisy[~aside].mean()) if (~aside).any() else None}
    return out


def run(args: argparse.Namespace, ctx) -> int:
    method, result = observed_run(args, ctx, "mscn", epoch_figures)
    return report("mscn-diagnose", args, method, result, method.config.warmup_epochs, markdown)


def markdown(out: dict[str, Any], command: str) -> str:
    lines = header("mscn-diagnose", "MSCN", out, command) + [
        "| epoch | meta loss | p on meta pos / neg (AUROC) | p on clean / noisy training pairs | p AUROC "
        "| set aside for the next epoch (noisy share) | noisy share kept | rSum |",
        "|---|---|---|---|---|---|---|---|"]
    for f in out["epochs_figures"]:
        aside = f"{f['set_aside']} ({fmt(f['set_aside_noisy_share'])})" if "set_aside" in f else ""
        lines.append(f"| {f['epoch']}{' (warm-up)' if f['epoch'] <= out['warmup_epochs'] else ''} | "
                     f"{fmt(f.get('meta_loss'))} | {fmt(f['meta_positive'])} / {fmt(f['meta_negative'])} "
                     f"({fmt(f['meta_auroc'])}) | {fmt(f['p_clean'])} / {fmt(f['p_noisy'])} | {fmt(f['p_auroc'])} | "
                     f"{aside} | {fmt(f.get('kept_noisy_share'))} | {fmt(f['rsum'], 1)} |")
    fin = out["final"]
    lines += ["", f"End of training: AUROC of clean_prob {fmt(fin['auroc'])}, of p {fmt(fin['weight_auroc'])}; "
              f"rSum {fmt(fin['rsum'], 1)}."]
    return "\n".join(lines)
