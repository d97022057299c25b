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
import json
import os
import platform
from typing import Any

import numpy as np

from core.benchmarks import add_output_options, add_training_options, scratch_store, write_section


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("npc-diagnose", parents=[common], help="NPC's memory bank and weights against the truth",
                       description=__doc__)
    p.add_argument("--dataset", default="demo", help="dataset whose clean originals are used (default demo)")
    p.add_argument("--noise", type=float, default=0.4, help="noise ratio (default 0.4)")
    p.add_argument("--kind", default="hard", help="noise kind: ncr, decl, hard (default hard)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the run")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: NPC's default)")
    add_training_options(p, set_help="an NPC setting, e.g. warmup_epochs=3 (repeatable)")
    add_output_options(p)
    p.set_defaults(handler=run)


def _auroc(noisy: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(noisy, score)) if 0 < noisy.sum() < len(noisy) else None


def epoch_figures(npc, epoch: int) -> dict[str, Any]:
    """What NPC holds after `epoch`, against the training pairs' ground truth (see the module docstring)."""
    train = npc.data.train
    noisy = npc.data.is_noisy[train] == 1
    out: dict[str, Any] = {"epoch": epoch + 1,
                           "loss_auroc": _auroc(noisy, npc.per_sample_losses(npc.model, train, npc.ctx.seed))}
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
        "r_auroc": _auroc(noisy[np.isfinite(r)], -r[np.isfinite(r)]),
        "r_quantiles": [round(float(q), 4) for q in np.nanpercentile(r, [5, 25, 50, 75, 95])]}


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.cli.train import parse_sets
    from core.methods import make_config
    from core.methods.npc import NPC
    from core.models import DEFAULT_MODEL
    from core.noise import inject_noise_copy
    from core.training import prepare, start_run

    class Observed(NPC):
        """NPC that records `epoch_figures` after every epoch."""

        def setup(self) -> None:
            super().setup()
            self.figures: list[dict[str, Any]] = []

        def end_epoch(self, epoch: int) -> dict[str, Any]:
            summary = super().end_epoch(epoch)
            self.figures.append(epoch_figures(self, epoch))
            return summary

    settings = parse_sets(args.sets) | ({"epochs": args.epochs} if args.epochs else {})
    progress, bar = cli_progress()
    try:
        with scratch_store(ctx.store, args.dataset, "npc-diagnose") as store:
            inject_noise_copy(store, "clean", "noisy", args.noise, args.kind, args.seed)
            run_id = start_run(store, "noisy", "npc", model=args.model or DEFAULT_MODEL, device=args.device,
                               seed=args.seed, settings=settings)
            method = Observed(make_config("npc", store.run(run_id).config), prepare(store, store.run(run_id), progress))
            result = method.run()
    finally:
        bar.close()
    train = method.data.train
    noisy = method.data.is_noisy[train] == 1
    final = {"auroc": _auroc(noisy, 1 - result.clean_prob[train]), "weight_auroc": _auroc(noisy, 1 - result.weight[train]),
             "rsum": result.metrics.get("retrieval", {}).get("rsum")}
    out = {"noise": f"{args.kind} {args.noise}", "seed": args.seed, "epochs": method.config.epochs,
           "warmup_epochs": method.warmup, "epochs_figures": method.figures, "final": final}
    command = (f"python -m core bench npc-diagnose --dataset {args.dataset} --noise {args.noise} --kind {args.kind} "
               f"--seed {args.seed}" + (f" --epochs {args.epochs}" if args.epochs else "")
               + "".join(f" --set {s}" for s in args.sets))
    if not args.no_docs:
        write_section(f"npc-diagnose: {args.dataset} {args.kind} {args.noise} {' '.join(args.sets)}".strip(),
                      markdown(out, command))
    print(json.dumps(out, default=float) if args.json else markdown(out, command))
    return 0


def markdown(out: dict[str, Any], command: str) -> str:
    fmt = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"## NPC diagnosis (`bench npc-diagnose`, {out['noise']})", "",
             f"Command: `{command}` ({out['epochs']} epochs, {out['warmup_epochs']} of them warm-up; "
             f"{os.cpu_count()} CPU cores, {platform.machine()}).", "",
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
