"""`bench loop`: the review → retrain loop end to end, measured against injected noise.

From dataset D's clean originals (injected noise undone), each noise kind gets a noisy copy at the given
ratio in a temporary database (never the user's). There a method trains (before), a reviewer decides the
`--decide` most suspicious training pairs (lowest clean_prob) with their ground truth through the store's
`decide` (keep a clean pair, reject a noisy one: the decisions enter the meta-data), and the method retrains
like the first run with the meta-data as it then is (after). Reported for both runs: how many of those
decisions the run agrees with, and the AUROC on the other training pairs (meta-data pairs excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.benchmarks import write_section
from core.progress import Progress

REVIEWER = "bench-loop"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("loop", parents=[common], help="decide the most suspicious pairs, retrain, compare",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo", help="dataset whose clean originals are used (default demo)")
    p.add_argument("--noise", type=float, default=0.4, help="noise ratio (default 0.4)")
    p.add_argument("--kinds", default="ncr,hard", help="comma-separated noise kinds: ncr (random), decl, hard")
    p.add_argument("--method", default="mscn", help="the method trained before and after (default mscn)")
    p.add_argument("--decide", type=int, default=100, help="pairs decided between the runs (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of both runs")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the method's default)")
    p.add_argument("--model", default=None, help="model (default concord-tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting (repeatable)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def most_suspicious(store, run_id: int, n: int) -> pd.DataFrame:
    """The run's `n` training pairs with the lowest clean_prob (ties by pair id) that are not meta-data pairs
    and have no decision yet, with their ground truth `is_noisy`."""
    run = store.run(run_id)
    frame = store.pairs_frame(run.dataset_id, run_id, split="train")
    meta_pairs = set(store.meta_frame(run.dataset_id)["pair_id"].dropna().astype(int))
    frame = frame[~frame["pair_id"].isin(meta_pairs) & frame["decision"].isna() & frame["clean_prob"].notna()]
    return frame.sort_values(["clean_prob", "pair_id"]).head(n)[["pair_id", "clean_prob", "is_noisy"]]


def decide_with_truth(store, dataset_id: int, pairs: pd.DataFrame, run_id: int) -> dict[str, int]:
    """Keep the clean pairs and reject the noisy ones (by `is_noisy`), as a reviewer who knows; returns counts."""
    noisy = pairs["is_noisy"].astype(bool).to_numpy()
    ids = pairs["pair_id"].astype(int).to_numpy()
    if (~noisy).any():
        store.decide(dataset_id, ids[~noisy].tolist(), "keep", REVIEWER, run_id=run_id)
    if noisy.any():
        store.decide(dataset_id, ids[noisy].tolist(), "reject", REVIEWER, run_id=run_id)
    return {"kept": int((~noisy).sum()), "rejected": int(noisy.sum())}


def review_loop(store, dataset: str, method: str, decide: int, *, model: str | None = None, device: str = "auto",
                seed: int = 0, epochs: int | None = None, settings: dict[str, Any] | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
    """Train `method` on `dataset`, decide its `decide` most suspicious pairs by ground truth, retrain it with
    the meta-data as it then is; returns both runs' agreement with the decisions and AUROC on the other pairs."""
    from core.metadata import agreement_history, meta_summary, start_retrain
    from core.models import DEFAULT_MODEL
    from core.training import execute_run, start_run

    progress = progress or Progress()
    ds = store.dataset(dataset)
    first = start_run(store, dataset, method, model=model or DEFAULT_MODEL, device=device, seed=seed, epochs=epochs,
                      settings=settings)
    t0 = time.perf_counter()
    execute_run(store, first, progress)
    seconds = time.perf_counter() - t0
    decided = decide_with_truth(store, ds.id, most_suspicious(store, first, decide), first)
    second = start_retrain(store, dataset)
    execute_run(store, second, progress)
    after, before = agreement_history(store, ds.id, runs=2)
    assert (after["run_id"], before["run_id"]) == (second, first), "another run finished during the loop"
    summary = meta_summary(store, ds.id)
    figures = ("agree", "total", "rate", "auroc")
    return {"method": method, **decided, "seconds_per_run": seconds,
            "meta_positives": summary["positives"], "meta_negatives": summary["negatives"],
            "before": {k: before[k] for k in figures}, "after": {k: after[k] for k in figures}}


def markdown(rows: list[dict[str, Any]], command: str, seconds: float) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    agree = lambda a: f"{a['agree']}/{a['total']}"  # noqa: E731
    lines = [f"Command: `{command}` ({seconds / 60:.1f} min on {os.cpu_count()} CPU cores, {platform.machine()}). "
             "Decided: the most suspicious training pairs of the first run, kept or rejected by their ground "
             "truth. Agreement: decisions the run agrees with (keep ↔ not flagged). AUROC: the other training "
             "pairs (meta-data excluded).", "",
             "| noise | method | decided (kept / rejected) | meta +/− after | agreement before → after "
             "| AUROC before → after | s/run |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} {r['ratio']} | {r['method']} | {r['kept'] + r['rejected']} ({r['kept']} / "
                     f"{r['rejected']}) | {r['meta_positives']} / {r['meta_negatives']} | "
                     f"{agree(r['before'])} → {agree(r['after'])} | {fmt(r['before']['auroc'])} → "
                     f"{fmt(r['after']['auroc'])} | {r['seconds_per_run']:.0f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.cli.train import parse_sets
    from core.noise import clean_records, inject_noise_copy
    from core.store import Store

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    source = ctx.store.dataset(args.dataset)
    records = clean_records(ctx.store.dataset_records(source.id))
    settings = parse_sets(args.sets)
    progress, bar = cli_progress()
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="concord-bench-loop-") as tmp, \
                Store.open(Path(tmp) / "bench.duckdb") as store:
            store.write_dataset("clean", source.root, source.source_format, records, parent=source.name)
            for kind in kinds:
                name = f"{kind}-{args.noise}"
                inject_noise_copy(store, "clean", name, args.noise, kind, args.seed)
                row = {"kind": kind, "ratio": args.noise} | review_loop(
                    store, name, args.method, args.decide, model=args.model, device=args.device, seed=args.seed,
                    epochs=args.epochs, settings=settings, progress=progress)
                rows.append(row)
                if not args.json:
                    bar.close()
                    print(json.dumps(row, default=float))
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    command = (f"python -m core bench loop --dataset {args.dataset} --noise {args.noise} --kinds {args.kinds} "
               f"--method {args.method} --decide {args.decide}" + (f" --epochs {args.epochs}" if args.epochs else "")
               + "".join(f" --set {s}" for s in args.sets))
    if not args.no_docs:
        write_section(f"loop: {args.dataset} {args.kinds} {args.noise} {args.method}",
                      "## Review → retrain loop (`bench loop`)\n\n" + markdown(rows, command, seconds))
    if args.json:
        print(json.dumps({"rows": rows, "seconds": seconds, "dataset": args.dataset}, default=float))
    else:
        print(markdown(rows, command, seconds))
    return 0
