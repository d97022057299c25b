"""`bench loop`: the review → retrain loop end to end, measured against injected noise.

From dataset D's clean originals (injected noise undone), each noise kind gets a noisy copy at the given ratio
in a temporary database (never the user's). There a method trains (before), a reviewer decides the first
`--decide` training pairs of its Review queue (`--order`: most suspicious or most uncertain first) with their
ground truth through the store's `decide` (keep a clean pair, reject a noisy one: the decisions enter the
meta-data), and the method retrains like the first run with the meta-data as it then is (after); with
`--replace-seed` the seed drawn from the clean split is removed first, so the retrain learns from the reviewed
pairs alone. Reported for both runs, per seed and as means over seeds: how many of those decisions the run
agrees with, and the AUROC on the other training pairs (meta-data pairs excluded).

A method that trains no network (`concord`, the fused score) is not retrained: its classifier is refitted on the
decisions. `--decide 100,500` then decides in steps (the first 100 pairs of the queue, refit, the next 400 of the
reordered queue, refit), and each step's AUROC on the pairs not yet decided is compared with the first fit's
on the same pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.benchmarks import (add_output_options, add_training_options, check_ranges, check_training, counts, names,
                             refuse_training_options, repeated_options, scratch_store, write_section)
from core.errors import ConcordError
from core.progress import Progress

REVIEWER = "bench-loop"
LOOP_TARGET = 0.02
"""The gain on the other training pairs that issue 19 asks of 100 decisions."""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("loop", parents=[common], help="decide pairs of the Review queue, retrain, compare",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo", help="dataset whose clean originals are used (default demo)")
    p.add_argument("--noise", type=float, default=0.4, help="noise ratio (default 0.4)")
    p.add_argument("--kinds", default="ncr,hard", help="comma-separated noise kinds: ncr (random), decl, hard")
    p.add_argument("--method", default="mscn", help="the method trained before and after (default mscn)")
    p.add_argument("--decide", default="100", help="pairs decided between the runs (default 100); for concord, "
                   "comma-separated cumulative steps, each followed by a refit (e.g. 100,500)")
    p.add_argument("--order", default="suspicious", choices=("suspicious", "uncertain"),
                   help="Review queue order the pairs are decided in (default: most suspicious first)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, each for the noise and both runs (default 1)")
    p.add_argument("--cells", type=Path, nargs="+", default=None, metavar="DIR",
                   help="train nothing: decide and refit on the fused runs of the stores earlier `bench quality "
                   "--keep DIR` runs left, or a folder of them (b1, NPC and MSCN fused, every cell of a sweep; each "
                   "store is copied first, nothing kept changes)")
    p.add_argument("--replace-seed", action="store_true",
                   help="remove the seed meta-data before the retrain: it learns from the decisions alone")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the method's default)")
    add_training_options(p)
    add_output_options(p)
    p.set_defaults(handler=run, parser=p)


def review_picks(store, run_id: int, n: int, order: str = "suspicious") -> pd.DataFrame:
    """The first `n` training pairs of the run's Review queue in `order` (`core.review.ORDERS`: suspicious,
    uncertain, …) that are undecided and not meta-data pairs, with their ground truth `is_noisy`."""
    from core.review import QueueSpec, build_queue
    run = store.run(run_id)
    meta_pairs = set(store.meta_frame(run.dataset_id)["pair_id"].dropna().astype(int))
    head = build_queue(store, run.dataset_id, run, QueueSpec(order=order, split="train"), reviewer=REVIEWER,
                       limit=n + len(meta_pairs)).head
    head = head[~head["pair_id"].isin(meta_pairs)].head(n)
    truth = store.pairs_frame(run.dataset_id, split="train").set_index("pair_id")["is_noisy"]
    return head.assign(is_noisy=truth.reindex(head["pair_id"]).to_numpy())[["pair_id", "clean_prob", "is_noisy"]]


def decide_with_truth(store, dataset_id: int, pairs: pd.DataFrame, run_id: int) -> dict[str, int]:
    """Keep the clean pairs and reject the noisy ones (by `is_noisy`), as a reviewer who knows; returns counts."""
    noisy = pairs["is_noisy"].astype(bool).to_numpy()
    ids = pairs["pair_id"].astype(int).to_numpy()
    if (~noisy).any():
        store.decide(dataset_id, ids[~noisy].tolist(), "keep", REVIEWER, run_id=run_id)
    if noisy.any():
        store.decide(dataset_id, ids[noisy].tolist(), "reject", REVIEWER, run_id=run_id)
    return {"kept": int((~noisy).sum()), "rejected": int(noisy.sum())}


def remove_seed(store, dataset_id: int) -> int:
    """Remove the active meta-data entries drawn from the clean split (source `seed`); returns how many."""
    from core.metadata import remove_entries
    meta = store.meta_frame(dataset_id)
    seed = meta.loc[meta["source"] == "seed", "entry_id"].astype(int).tolist()
    return remove_entries(store, dataset_id, seed) if seed else 0


def first_run(store, dataset: str, method: str, model: str | None, device: str, seed: int, epochs: int | None,
              settings: dict[str, Any] | None, progress: Progress) -> tuple[int, float]:
    """Train the loop's first run of `method`; returns (run id, seconds it took)."""
    from core.models import DEFAULT_MODEL
    from core.training import execute_run, start_run
    run_id = start_run(store, dataset, method, model=model or DEFAULT_MODEL, device=device, seed=seed, epochs=epochs,
                       settings=settings)
    t0 = time.perf_counter()
    execute_run(store, run_id, progress)
    return run_id, time.perf_counter() - t0


def review_loop(store, dataset: str, method: str, decide: int, *, order: str = "suspicious",
                model: str | None = None, device: str = "auto", seed: int = 0, epochs: int | None = None,
                settings: dict[str, Any] | None = None, replace_seed: bool = False,
                progress: Progress | None = None) -> dict[str, Any]:
    """Train `method` on `dataset`, decide the first `decide` pairs of its Review queue in `order` by ground
    truth (and with `replace_seed` remove the seed meta-data), retrain it with the meta-data as it then is;
    returns both runs' agreement with the decisions and AUROC on the other pairs."""
    from core.metadata import agreement_history, meta_summary, start_retrain
    from core.training import execute_run

    progress = progress or Progress()
    ds = store.dataset(dataset)
    first, seconds = first_run(store, dataset, method, model, device, seed, epochs, settings, progress)
    decided = decide_with_truth(store, ds.id, review_picks(store, first, decide, order), first)
    if replace_seed:
        remove_seed(store, ds.id)
    second = start_retrain(store, dataset)
    execute_run(store, second, progress)
    after, before = agreement_history(store, ds.id, runs=2)
    assert (after["run_id"], before["run_id"]) == (second, first), "another run finished during the loop"
    summary = meta_summary(store, ds.id)
    figures = ("agree", "total", "rate", "auroc")
    return {"method": method, **decided, "seconds_per_run": seconds,
            "meta_positives": summary["positives"], "meta_negatives": summary["negatives"],
            "before": {k: before[k] for k in figures}, "after": {k: after[k] for k in figures}}


def _auroc_on(frame: pd.DataFrame, clean_prob: pd.Series) -> float | None:
    from core.evaluate import detection_metrics
    return detection_metrics(frame["is_noisy"].astype(bool).to_numpy(),
                             clean_prob.reindex(frame["pair_id"]).to_numpy())["auroc"]


def fused_loop(store, dataset: str, method: str, steps: list[int], *, order: str = "suspicious",
               model: str | None = None, device: str = "auto", seed: int = 0, epochs: int | None = None,
               settings: dict[str, Any] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Score `dataset` with the fused `method` (training its b1 base run first), then `decide_and_refit`."""
    run_id, seconds = first_run(store, dataset, method, model, device, seed, epochs, settings, progress or Progress())
    return {"method": method, "seconds_per_run": seconds, **decide_and_refit(store, run_id, steps, order)}


def decide_and_refit(store, run_id: int, steps: list[int], order: str = "suspicious") -> dict[str, Any]:
    """For each cumulative step, decide the next training pairs of fused run `run_id`'s (reordered) Review queue
    by ground truth and refit; per step, the AUROC on the training pairs not decided (meta-data excluded) under
    the first fit and after the refit, and the fit ceiling on those pairs (`core.benchmarks.headroom`: what any
    re-weighing of the run's signals could reach there)."""
    from core.benchmarks.headroom import fit_ceiling
    from core.detect.method import refit
    from core.evaluate import measured_pairs

    dataset_id = store.run(run_id).dataset_id
    first = store.scores_frame(run_id, extras=False).set_index("pair_id")["clean_prob"]
    decided: set[int] = set()
    out_steps, kept, rejected = [], 0, 0
    for step in steps:
        picks = review_picks(store, run_id, step - len(decided), order)
        counts = decide_with_truth(store, dataset_id, picks, run_id)
        kept, rejected = kept + counts["kept"], rejected + counts["rejected"]
        decided |= set(picks["pair_id"].astype(int))
        fused = refit(store, run_id)
        now = store.scores_frame(run_id, extras=False).set_index("pair_id")["clean_prob"]
        rest = measured_pairs(store, dataset_id)      # decided pairs are meta-data now: not measured
        out_steps.append({"decided": len(decided), "kept": kept, "rejected": rejected,
                          "before": _auroc_on(rest, first), "after": _auroc_on(rest, now),
                          "fit_ceiling": fit_ceiling(store, run_id, measured=rest),
                          "cv_auroc": fused["cv_auroc"], "refit_seconds": fused["refit_seconds"]})
    return {"steps": out_steps}


def kept_loops(folders: list[Path], steps: list[int], order: str) -> list[dict[str, Any]]:
    """`decide_and_refit` on the latest finished fused run of each noisy copy in the stores `bench quality --keep`
    left, each store copied first (the kept one is never changed): the loop on the product's fused run of b1, NPC
    and MSCN, for every cell of a sweep, without training anything."""
    from core.benchmarks import kept_stores
    from core.benchmarks.quality import kept_runs
    from core.detect.method import METHOD
    from core.store import Store
    rows = []
    for db in kept_stores(folders):
        with tempfile.TemporaryDirectory(prefix="concord-bench-loop-") as tmp:
            for part in (db, db.with_name(db.name + ".wal")):      # with its write-ahead log, if one was left
                if part.exists():
                    shutil.copy(part, Path(tmp) / part.name)
            with Store.open(Path(tmp) / db.name) as store:
                rows += [{"set": db.parent.name, "kind": k.kind, "ratio": k.ratio, "seed": k.seed, "method": k.method,
                          "seconds_per_run": None, **decide_and_refit(store, k.run.id, steps, order)}
                         for k in kept_runs(store) if k.method == METHOD]
    return rows


def step_gains(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (set, kind, ratio) and step: the refit's gain over the first fit (mean and minimum over seeds), how
    many seeds gained at least `LOOP_TARGET`, and the mean headroom (the fit ceiling minus the first fit's AUROC,
    both on the pairs not decided)."""
    flat = [{"set": r.get("set", ""), "kind": r["kind"], "ratio": r["ratio"], "seed": r["seed"],
             "decided": st["decided"], "gain": st["after"] - st["before"],
             "headroom": None if st.get("fit_ceiling") is None else st["fit_ceiling"] - st["before"]}
            for r in rows for st in r["steps"] if st["before"] is not None and st["after"] is not None]
    frame = pd.DataFrame(flat, columns=["set", "kind", "ratio", "seed", "decided", "gain", "headroom"])
    return (frame.assign(met=frame["gain"] >= LOOP_TARGET, headroom=frame["headroom"].astype(float))
            .groupby(["set", "kind", "ratio", "decided"], sort=False)
            .agg(seeds=("gain", "size"), gain_mean=("gain", "mean"), gain_min=("gain", "min"), met=("met", "sum"),
                 headroom=("headroom", "mean")).reset_index())


def fused_markdown(rows: list[dict[str, Any]], command: str, seconds: float) -> str:
    fmt = lambda v: "–" if v is None or pd.isna(v) else f"{v:.3f}"  # noqa: E731
    lines = [f"Command: `{command}` ({seconds / 60:.1f} min on {os.cpu_count()} CPU cores, {platform.machine()}). "
             "Decided in steps from the Review queue (reordered by each refit), kept or rejected by their ground "
             "truth; the fused classifier is refitted after each step, no network retrains. AUROC: the training "
             "pairs not decided so far (meta-data excluded), under the first fit and after the refit. Fit ceiling: "
             "the run's signals weighted by those pairs' ground truth (out of fold), what re-weighing them could "
             "reach.", "",
             "| set | noise | seed | decided (kept / rejected) | AUROC first fit → after refit | gain | fit ceiling "
             "| CV AUROC | refit s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for st in r["steps"]:
            gain = None if st["before"] is None or st["after"] is None else st["after"] - st["before"]
            lines.append(f"| {r.get('set', '')} | {r['kind']} {r['ratio']} | {r['seed']} | {st['decided']} "
                         f"({st['kept']} / {st['rejected']}) | {fmt(st['before'])} → {fmt(st['after'])} | "
                         f"{'–' if gain is None else f'{gain:+.3f}'} | {fmt(st.get('fit_ceiling'))} | "
                         f"{fmt(st['cv_auroc'])} | {st['refit_seconds']:.2f} |")
    gains = step_gains(rows)
    if (gains["seeds"] > 1).any():      # the summary over seeds first, then every seed's row
        lines[1:1] = ["", f"Per cell over seeds: the gain (mean / minimum), the seeds that gained at least "
                      f"+{LOOP_TARGET:.2f}, and the mean headroom (the fit ceiling minus the first fit's AUROC on "
                      "the pairs not decided).", "",
                      "| set | noise | decided | seeds | gain (mean / min) | seeds ≥ target | headroom |",
                      "|---|---|---|---|---|---|---|",
                      *[f"| {g['set']} | {g['kind']} {g['ratio']} | {g['decided']} | {g['seeds']} | "
                        f"{g['gain_mean']:+.3f} / {g['gain_min']:+.3f} | {g['met']} of {g['seeds']} | "
                        f"{fmt(g['headroom'])} |" for g in gains.to_dict("records")], "", "Every seed:"]
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over seeds per noise kind: agreement rate and AUROC, before and after."""
    out = []
    for (kind, ratio, method), group in pd.DataFrame(rows).groupby(["kind", "ratio", "method"], sort=False):
        mean = lambda when, key: pd.Series([g[key] for g in group[when]], dtype=float).mean()  # noqa: E731
        out.append({"kind": kind, "ratio": ratio, "method": method, "seeds": len(group),
                    **{f"{when}_{key}": mean(when, key) for when in ("before", "after") for key in ("rate", "auroc")}})
    return out


def markdown(rows: list[dict[str, Any]], command: str, seconds: float) -> str:
    fmt = lambda v: "–" if v is None or pd.isna(v) else f"{v:.3f}"  # noqa: E731
    agree = lambda a: f"{a['agree']}/{a['total']}"  # noqa: E731
    lines = [f"Command: `{command}` ({seconds / 60:.1f} min on {os.cpu_count()} CPU cores, {platform.machine()}). "
             "Decided: the first training pairs of the first run's Review queue in the command's order, kept or "
             "rejected by their ground truth. Agreement: decisions the run agrees with (keep ↔ not flagged). "
             "AUROC: the other training pairs (meta-data excluded).", "",
             "| noise | method | seed | decided (kept / rejected) | meta +/− after | agreement before → after "
             "| AUROC before → after | s/run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} {r['ratio']} | {r['method']} | {r['seed']} | {r['kept'] + r['rejected']} "
                     f"({r['kept']} / {r['rejected']}) | {r['meta_positives']} / {r['meta_negatives']} | "
                     f"{agree(r['before'])} → {agree(r['after'])} | {fmt(r['before']['auroc'])} → "
                     f"{fmt(r['after']['auroc'])} | {r['seconds_per_run']:.0f} |")
    if any(m["seeds"] > 1 for m in summary(rows)):
        lines += ["", "Means over seeds:", "", "| noise | method | seeds | agreement rate before → after "
                  "| AUROC before → after |", "|---|---|---|---|---|"]
        for m in summary(rows):
            lines.append(f"| {m['kind']} {m['ratio']} | {m['method']} | {m['seeds']} | {fmt(m['before_rate'])} → "
                         f"{fmt(m['after_rate'])} | {fmt(m['before_auroc'])} → {fmt(m['after_auroc'])} |")
    return "\n".join(lines)


def decide_steps(text: str, fused: bool, method: str) -> list[int]:
    """`--decide`'s cumulative steps: whole numbers of at least 1, rising; one alone for a method that retrains
    (not `fused`)."""
    steps = counts(text, "--decide")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConcordError(f"--decide takes rising cumulative steps (e.g. 100,500), got {text!r}")
    if not fused and len(steps) != 1:
        raise ConcordError(f"{method} retrains once: --decide takes one number for it")
    return steps


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.cli.train import parse_sets
    from core.methods import spec
    from core.noise import KINDS, inject_noise_copy

    if args.cells:
        refuse_training_options(args, args.parser, ["dataset", "noise", "kinds", "method", "seeds", "replace_seed",
                                                    "epochs", "model", "device", "sets", "k"], "--cells")
    fused = spec(args.method).scorer
    steps = decide_steps(args.decide, fused or bool(args.cells), args.method)   # kept cells: fused runs
    if args.cells:
        t_start = time.perf_counter()
        rows = kept_loops(args.cells, steps, args.order)
        command = (f"python -m core bench loop --cells {' '.join(map(str, args.cells))} --decide {args.decide} "
                   f"--order {args.order}")
        return report_fused(args, rows, f"loop: kept cells {args.decide} {args.order}", command,
                            time.perf_counter() - t_start, "kept cells")
    kinds = names(args.kinds, "--kinds", KINDS, "noise kinds")
    check_ranges(args, {"seeds": 1}, ["noise"])
    settings = parse_sets(args.sets)
    check_training(args, {args.method: settings})
    ctx.store.dataset(args.dataset)
    progress, bar = cli_progress()
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        with scratch_store(ctx.store, args.dataset, "loop") as store:
            for seed in range(args.seeds):
                for kind in kinds:
                    name = f"{kind}-{args.noise}-s{seed}"
                    inject_noise_copy(store, "clean", name, args.noise, kind, seed, k=args.k)
                    common = dict(order=args.order, model=args.model, device=args.device, seed=seed,
                                  epochs=args.epochs, settings=settings, progress=progress)
                    row = {"set": args.dataset, "kind": kind, "ratio": args.noise, "seed": seed} | (
                        fused_loop(store, name, args.method, steps, **common) if fused else
                        review_loop(store, name, args.method, steps[0], replace_seed=args.replace_seed, **common))
                    rows.append(row)
                    if not args.json:
                        bar.close()
                        print(json.dumps(row, default=float))
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    command = (f"python -m core bench loop --dataset {args.dataset} --noise {args.noise} --kinds {args.kinds} "
               f"--method {args.method} --decide {args.decide} --order {args.order} --seeds {args.seeds}"
               + (" --replace-seed" if args.replace_seed else "") + (f" --epochs {args.epochs}" if args.epochs else "")
               + repeated_options(args))
    key = (f"loop: {args.dataset} {args.kinds} {args.noise} {args.method} {args.decide} {args.order}"
           + (" replace-seed" if args.replace_seed else ""))
    if fused:
        return report_fused(args, rows, key, command, seconds, args.dataset)
    if not args.no_docs:
        write_section(key, "## Review → retrain loop (`bench loop`)\n\n" + markdown(rows, command, seconds))
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary(rows), "seconds": seconds, "dataset": args.dataset},
                         default=float))
    else:
        print(markdown(rows, command, seconds))
    return 0


def report_fused(args: argparse.Namespace, rows: list[dict[str, Any]], key: str, command: str, seconds: float,
                 dataset: str) -> int:
    """Print (and unless --no-docs, write under `key`) the fused loop's table of `rows`."""
    text = fused_markdown(rows, command, seconds)
    if not args.no_docs:
        write_section(key, "## Review → retrain loop (`bench loop`)\n\n" + text)
    if args.json:
        print(json.dumps({"rows": rows, "gains": step_gains(rows).to_dict("records"), "seconds": seconds,
                          "dataset": dataset}, default=float))
    else:
        print(text)
    return 0
