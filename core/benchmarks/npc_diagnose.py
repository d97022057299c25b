"""`bench npc-diagnose`: does NPC's per-sample weight see the noise? Its memory bank and `r`/`w`, epoch by epoch.

A noisy copy of dataset D's clean originals goes into a temporary database (never the user's), and NPC trains
on it as a run would. After each epoch, against the injected ground truth of the training pairs: the AUROC of
the per-sample loss (what the clean selection and the final `clean_prob` use); after the warm-up also the
memory bank (clean pairs chosen, the noisy share among them and among the entries actually used, the most
uses of one entry), and the noisy vs clean means of `w`, the share of `w < 1`, the AUROC of `r` (low `r`
read as noisy) and its quantiles. At the end: the run's AUROC of `clean_prob` and of `w`, and rSum.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from core.benchmarks._diagnose import auroc, fmt, header, observed_run, register_diagnose, report


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    register_diagnose(sub, common, "npc-diagnose", "NPC's memory bank and weights against the truth", __doc__,
                      "an NPC setting, e.g. warmup_epochs=3 (repeatable)", run)


def epoch_figures(npc, epoch: int) -> dict[str, Any]:
    """What NPC holds after `epoch`, against the training pairs' ground truth (see the module docstring)."""
    train = npc.data.train
    noisy = npc.data.is_noisy[train] == 1
    out: dict[str, Any] = {"epoch": epoch + 1,
                           "loss_auroc": auroc(noisy, npc.per_sample_losses(npc.model, train, npc.ctx.seed))}
    if epoch < npc.warmup:
        return out
    pool_noisy = np.concatenate([noisy, np.zeros(len(npc.pool) - npc.pool.n_train, bool)])  # meta pairs: clean
    clean = npc.clean
    entries = np.concatenate([npc.i_entry, npc.t_entry])
    entries = entries[entries >= 0]
    w, r = npc.w[train], npc.r[train]
    return out | {
        "bank": int(clean.sum()), "bank_noisy_share": float(pool_noisy[clean].mean()) if clean.any() else None,
        "entries_distinct": int(len(np.unique(entries))),
        "entries_noisy_share": float(pool_noisy[entries].mean()) if len(entries) else None,
        "entry_max_uses": int(np.bincount(entries).max()) if len(entries) else 0,
        "w_noisy": float(w[noisy].mean()), "w_clean": float(w[~noisy].mean()),
        "w_below_1": float((w < 1).mean()),
        "r_auroc": auroc(noisy[np.isfinite(r)], -r[np.isfinite(r)]),
        "r_quantiles": [round(float(q), 4) for q in np.nanpercentile(r, [5, 25, 50, 75, 95])]}


def run(args: argparse.Namespace, ctx) -> int:
    method, result = observed_run(args, ctx, "npc", epoch_figures)
    return report("npc-diagnose", args, method, result, method.warmup, markdown)


def markdown(out: dict[str, Any], command: str) -> str:
    lines = header("npc-diagnose", "NPC", out, command) + [
        "| epoch | loss AUROC | bank (noisy share) | entries used (noisy share, max uses) | w noisy / clean "
        "| w < 1 | r AUROC | r 5/25/50/75/95% |", "|---|---|---|---|---|---|---|---|"]
    for f in out["epochs_figures"]:
        if "bank" not in f:
            lines.append(f"| {f['epoch']} (warm-up) | {fmt(f['loss_auroc'])} | | | | | | |")
            continue
        lines.append(f"| {f['epoch']} | {fmt(f['loss_auroc'])} | {f['bank']} ({fmt(f['bank_noisy_share'])}) | "
                     f"{f['entries_distinct']} ({fmt(f['entries_noisy_share'])}, {f['entry_max_uses']}) | "
                     f"{fmt(f['w_noisy'])} / {fmt(f['w_clean'])} | {fmt(f['w_below_1'], 2)} | {fmt(f['r_auroc'])} | "
                     + " / ".join(f"{q:.3f}" for q in f["r_quantiles"]) + " |")
    fin = out["final"]
    lines += ["", f"End of training: AUROC of clean_prob {fmt(fin['auroc'])}, of w {fmt(fin['weight_auroc'])}; "
              f"rSum {fmt(fin['rsum'], 1)}."]
    return "\n".join(lines)
