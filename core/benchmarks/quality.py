"""`bench quality`: detection and retrieval quality of each method across noise kinds, ratios and seeds.

From each dataset's clean originals (injected noise undone), each (set, kind, ratio, seed) gets a noisy copy in a
temporary database (never the user's); every method trains on it with that seed, in the order given (so `concord`,
given last, fuses the runs before it, and a faster b1 it trains itself with `--set concord.fast_b1_lr=0.01` is a row
of its own, `b1 lr=0.01`), and b1 on the clean data gives the ceiling. Figures: AUROC, AUPRC, F1 and the AUROC of
the method's weight alone (training pairs, meta-data excluded), rSum on the clean `test` split, seconds per epoch.
With `concord` and other methods, the gain of its AUROC over the best of the others on the same data is reported per
cell, with its minimum over seeds, and beside it the fused run's fit ceiling (`core.benchmarks.headroom`: its own
signals weighted by the training pairs' ground truth, a diagnostic of what re-weighing them could reach). The
summary (means over seeds) goes to stdout and to `docs/benchmarks.md`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core import paths
from core.benchmarks import (add_output_options, add_training_options, check_new_folder, check_ranges,
                             check_training, kept_stores, names, option_list, ratios, refuse_training_options,
                             repeated_options, scratch_store, write_section)

METRICS = ("auroc", "auprc", "f1", "weight_auroc", "rsum", "seconds_per_epoch", "fit_ceiling")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("quality", parents=[common], help="detection and retrieval quality of the methods",
                       description=__doc__)
    p.add_argument("--dataset", default="demo", help="comma-separated datasets whose clean originals are used "
                   "(default demo; e.g. demo,fashion-mnist,emoji after creating them with `demo --source`)")
    p.add_argument("--noise", default="0.4", help="comma-separated noise ratios (default 0.4)")
    p.add_argument("--kinds", default="ncr,hard", help="comma-separated noise kinds: ncr, decl, hard")
    p.add_argument("--methods", default="b1", help="comma-separated methods (b1, npc, npc-released, mscn, concord), "
                   "trained in this order")
    p.add_argument("--seeds", type=int, default=1, help="how many seeds, for noise and training (default 1)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="first seed (default 0): seeds run from it, so one sweep can be split across processes")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: each method's default)")
    add_training_options(p, "METHOD.KEY=VALUE", "a setting for one of --methods (or for b1 of the ceiling), e.g. "
                         "npc.tau=0.8 (repeatable)")
    p.add_argument("--meta-fraction", type=float, default=None,
                   help="seed meta-data drawn from `val`, as a fraction of the training size (default: a run's 2%%)")
    p.add_argument("--no-ceiling", action="store_true", help="skip b1 on clean data")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep each set's scratch database (runs, scores, a concord run's signals) in DIR/SET "
                   "(a new folder) instead of deleting it")
    p.add_argument("--collect", type=Path, nargs="+", default=None, metavar="DIR",
                   help="train nothing: one table of every finished run in the folders earlier `--keep DIR` runs "
                   "left, or in a folder of them (a sweep split across processes, gathered); the latest finished "
                   "run of each method and learning rate per noisy copy")
    p.add_argument("--fuse-again", action="store_true",
                   help="with --collect: first a new concord run (its defaults and any --set concord.KEY=VALUE) "
                   "on every kept noisy copy that has one, over the same base runs (no network trained, unless "
                   "--set concord.fast_b1_lr asks for a faster b1 a copy lacks), so a "
                   "change to the fused score is measured on the very runs it fuses; the kept stores gain the run")
    add_output_options(p)
    p.set_defaults(handler=run, parser=p)


def settings_by_method(sets: list[str], methods: list[str]) -> dict[str, dict[str, str]]:
    """Each of `methods` (those a command trains) -> its `--set METHOD.KEY=VALUE` settings, as KEY -> VALUE. A
    ConcordError for a setting without a method prefix or for a method not among `methods`: it would be ignored."""
    from core.cli.train import parse_sets
    from core.errors import ConcordError
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for key, value in parse_sets(sets).items():
        method, dot, name = key.partition(".")
        if not dot or not name:
            raise ConcordError(f"--set {key}={value}: name the method, METHOD.KEY=VALUE (e.g. npc.tau=0.8)")
        if method not in out:
            raise ConcordError(f"--set {key}={value}: {method} is not among the methods trained "
                               f"({', '.join(methods)}), so it would be ignored")
        out[method][name] = value
    return out


class Sweep(NamedTuple):
    """What `run` trains, read from its options and checked before any dataset is read or network trained."""

    datasets: list[str]
    ratios: list[float]
    kinds: list[str]
    methods: list[str]
    settings: dict[str, dict[str, str]]     # each method trained (b1 for the ceiling, too) -> its --set values


def sweep(args: argparse.Namespace) -> Sweep:
    """The sweep the options ask for; a one-line ConcordError naming the first option that is wrong."""
    from core.methods import METHODS
    from core.noise import KINDS
    datasets = option_list(args.dataset, "--dataset", str, "comma-separated dataset names")
    noise = ratios(args.noise, "--noise")
    kinds = names(args.kinds, "--kinds", KINDS, "noise kinds")
    methods = names(args.methods, "--methods", METHODS, "methods")
    check_ranges(args, {"seeds": 1, "first_seed": 0}, ["meta_fraction"])
    settings = settings_by_method(args.sets, list(dict.fromkeys(methods + ([] if args.no_ceiling else ["b1"]))))
    check_training(args, settings)
    for dataset in datasets:
        check_new_folder(None if args.keep is None else args.keep / dataset)
    return Sweep(datasets, noise, kinds, methods, settings)


TRAINING_DESTS = ["dataset", "noise", "kinds", "methods", "seeds", "first_seed", "epochs", "model", "device", "sets",
                  "meta_fraction", "no_ceiling", "keep", "k"]
"""The options that choose what is trained (refused with `--collect`)."""
FUSED = "concord"
CELL = ["set", "kind", "ratio"]


def fused_gains(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (set, kind, ratio, seed): the fused method's AUROC minus the best AUROC of the other methods on the
    same data (empty without both)."""
    frame = pd.DataFrame(rows)
    if frame.empty or FUSED not in set(frame["method"]) or not (frame["method"] != FUSED).any():
        return pd.DataFrame(columns=CELL + ["seed", "gain"])
    keys = CELL + ["seed"]
    fused = frame[frame["method"] == FUSED].set_index(keys)["auroc"]
    best = frame[(frame["method"] != FUSED) & (frame["kind"] != "clean")].groupby(keys)["auroc"].max()
    return (fused - best).dropna().rename("gain").reset_index()


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (set, kind, ratio, method), with the fused method's gain over
    the best other method (mean and minimum over seeds) on its rows."""
    frame = pd.DataFrame(rows).reindex(columns=CELL + ["method", "seed", *METRICS])
    frame[list(METRICS)] = frame[list(METRICS)].astype(float)
    keys = CELL + ["method"]
    agg = frame.groupby(keys, sort=False)[list(METRICS)].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    out = agg.reset_index().assign(seeds=frame.groupby(keys, sort=False).size().to_numpy())
    gains = fused_gains(rows)
    if gains.empty:
        return out.assign(gain_mean=np.nan, gain_min=np.nan)
    g = gains.groupby(CELL)["gain"].agg(gain_mean="mean", gain_min="min").reset_index().assign(method=FUSED)
    return out.merge(g, on=keys, how="left")


def markdown(summary: pd.DataFrame, command: str, seconds: float) -> str:
    fmt = lambda v, p: "–" if v is None or pd.isna(v) else f"{v:.{p}f}"  # noqa: E731
    lines = [f"Command: `{command}` ({seconds / 60:.1f} min on {os.cpu_count()} CPU cores, {platform.machine()}; "
             "means over seeds, ± one standard deviation).", "",
             "| set | noise | ratio | method | AUROC | AUPRC | F1 | AUROC of weight | rSum | s/epoch | seeds | "
             "fused gain (mean / min) | fit ceiling |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.to_dict("records"):
        pm = lambda m, p: (f"{fmt(r[m + '_mean'], p)} ± {fmt(r[m + '_std'], p)}"  # noqa: E731
                           if r["seeds"] > 1 and not pd.isna(r[m + "_mean"]) else fmt(r[m + "_mean"], p))
        gain = "" if pd.isna(r["gain_mean"]) else f"{r['gain_mean']:+.3f} / {r['gain_min']:+.3f}"
        ceiling = "" if pd.isna(r["fit_ceiling_mean"]) else pm("fit_ceiling", 3)
        lines.append(f"| {r['set']} | {r['kind']} | {r['ratio']} | {r['method']} | {pm('auroc', 3)} | "
                     f"{pm('auprc', 3)} | {pm('f1', 3)} | {pm('weight_auroc', 3)} | {pm('rsum', 1)} | "
                     f"{fmt(r['seconds_per_epoch_mean'], 1)} | {r['seeds']} | {gain} | {ceiling} |")
    return "\n".join(lines)


def cell_name(kind: str, ratio: float, seed: int) -> str:
    """The name of a cell's noisy copy in the scratch store (`cell_of` reads it back)."""
    return f"{kind}-{ratio}-s{seed}"


def cell_of(name: str) -> tuple[str, float, int] | None:
    """(kind, ratio, seed) of a noisy copy's name (`cell_name`); None for any other name."""
    kind, _, rest = name.partition("-")
    ratio, _, seed = rest.rpartition("-s")
    try:
        return kind, float(ratio), int(seed)
    except ValueError:
        return None


def result_row(store, dataset: str, kind: str, ratio: float, method: str, seed: int, run_id: int
               ) -> dict[str, Any]:
    """One row of the table: the cell, the method and its figures (`METRICS`: `evaluate_run`'s, and a fused
    run's fit ceiling)."""
    from core.benchmarks.headroom import fit_ceiling
    from core.evaluate import evaluate_run
    result = evaluate_run(store, run_id) | {"fit_ceiling": fit_ceiling(store, run_id)}
    return {"set": dataset, "kind": kind, "ratio": ratio, "method": method, "seed": seed} | {
        m: result.get(m) for m in METRICS}


class KeptRun(NamedTuple):
    """The latest finished run of one method (`method_label`) on one cell's copy in a kept store."""

    dataset: str        # the copy's name in the store (`cell_name`, or `clean`)
    kind: str
    ratio: float
    seed: int
    method: str
    run: Any


def kept_runs(store, clean: bool = False) -> list[KeptRun]:
    """The latest finished run of each (noisy copy, `method_label`) in `store`, in the order each first finished;
    with `clean`, also the runs on the clean data (the ceiling, as kind `clean` at ratio 0)."""
    from core.runs import latest_of_each, method_label
    latest = latest_of_each(store.runs(state="finished"),
                            lambda r: (store.dataset_by_id(r.dataset_id).name, method_label(r)))
    kept = []
    for (name, method), run in latest.items():
        cell = ("clean", 0.0, run.seed or 0) if clean and name == "clean" else cell_of(name)
        if cell is not None:
            kept.append(KeptRun(name, *cell, method, run))
    return kept


def collected_rows(folders: list[Path]) -> list[dict[str, Any]]:
    """The rows `run` would have made, read back from the stores `--keep` left: each folder holds one
    `SET/bench.duckdb` per set; the latest finished run of each method on a noisy copy (and on `clean`, the
    ceiling) is a row."""
    from core.store import Store
    rows = []
    for db in kept_stores(folders):
        with Store.open(db) as store:
            rows += [result_row(store, db.parent.name, k.kind, k.ratio, k.method, k.seed, k.run.id)
                     for k in kept_runs(store, clean=True)]
    return rows


def fuse_again(folders: list[Path], settings: dict[str, str], progress) -> int:
    """A new fused run (`settings` over its defaults) on every kept noisy copy that has one, over the same base
    runs (the latest of each other method and learning rate; a network is trained only where `settings` set
    `fast_b1_lr` and the copy lacks a b1 at that rate); returns how many ran."""
    from core.store import Store
    from core.training import execute_run, start_run
    count = 0
    for db in kept_stores(folders):
        with Store.open(db) as store:
            for k in kept_runs(store):
                if k.method == FUSED:
                    fused = start_run(store, k.dataset, FUSED, model=k.run.model, device=k.run.device or "auto",
                                      seed=k.run.seed or 0, settings=settings)
                    execute_run(store, fused, progress)
                    count += 1
    return count


def report(args: argparse.Namespace, rows: list[dict[str, Any]], key: str, command: str, seconds: float,
           model: str) -> int:
    """Print (and unless --no-docs, write under `key`) the table of `rows`."""
    summary = summarise(rows)
    if not args.no_docs:
        write_section(key, "## Quality (`bench quality`)\n\n" + markdown(summary, command, seconds))
    sets = ",".join(dict.fromkeys(r["set"] for r in rows))
    out = {"rows": rows, "summary": summary.replace({np.nan: None}).to_dict("records"),
           "gains": fused_gains(rows).to_dict("records"), "seconds": seconds,
           "dataset": sets, "model": model, "cache": str(paths.cache_dir())}
    if args.json:
        print(json.dumps(out, default=float))
    else:
        print(markdown(summary, command, seconds))
    return 0


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.errors import ConcordError
    from core.methods import make_config
    from core.models import DEFAULT_MODEL
    from core.noise import inject_noise_copy
    from core.runs import method_label
    from core.training import execute_run, start_run
    model = args.model or DEFAULT_MODEL
    if args.fuse_again and not args.collect:
        raise ConcordError("--fuse-again goes with --collect DIR: it fuses the runs a sweep kept")
    if args.collect:
        refuse_training_options(args, args.parser, [d for d in TRAINING_DESTS if not (args.fuse_again and d == "sets")],
                                "--collect")
        settings = settings_by_method(args.sets, [FUSED])[FUSED]
        make_config(FUSED, settings)
        t0 = time.perf_counter()
        command = "python -m core bench quality --collect " + " ".join(map(str, args.collect))
        if args.fuse_again:
            progress, bar = cli_progress()
            try:
                fuse_again(args.collect, settings, progress)
            finally:
                bar.close()
            command += " --fuse-again" + "".join(f" --set {s}" for s in args.sets)
        rows = sorted(collected_rows(args.collect), key=lambda r: (r["set"], r["kind"], r["ratio"], r["seed"]))
        return report(args, rows, "quality: collected", command, time.perf_counter() - t0, model)
    plan = sweep(args)
    for dataset in plan.datasets:       # every set named exists, before the first one trains
        ctx.store.dataset(dataset)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    progress, bar = cli_progress()

    def train(store, dataset: str, name: str, kind: str, ratio: float, method: str, seed: int) -> None:
        seeding = {} if args.meta_fraction is None else {"meta_fraction": args.meta_fraction}
        run_id = start_run(store, name, method, model=model, device=args.device, seed=seed, epochs=args.epochs,
                           settings=plan.settings[method], **seeding)
        t0 = time.perf_counter()
        execute_run(store, run_id, progress)
        seconds = time.perf_counter() - t0
        made = [b for b in (store.run(run_id).metrics or {}).get("base_runs", []) if b > run_id]   # a fused run's own
        for row in [result_row(store, dataset, kind, ratio, method, seed, run_id) | {"run_seconds": seconds}] + [
                result_row(store, dataset, kind, ratio, method_label(store.run(b)), seed, b) | {"run_seconds": None}
                for b in made]:
            rows.append(row)
            if not args.json:
                bar.close()
                print(json.dumps(row))

    try:
        for dataset in plan.datasets:
            keep = None if args.keep is None else args.keep / dataset
            with scratch_store(ctx.store, dataset, "quality", keep) as store:
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    if not args.no_ceiling:
                        train(store, dataset, "clean", "clean", 0.0, "b1", seed)
                    for kind in plan.kinds:
                        for ratio in plan.ratios:
                            name = cell_name(kind, ratio, seed)
                            inject_noise_copy(store, "clean", name, ratio, kind, seed, k=args.k)
                            for method in plan.methods:
                                train(store, dataset, name, kind, ratio, method, seed)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    command = ("python -m core bench quality --dataset " + args.dataset + f" --noise {args.noise} --kinds {args.kinds}"
               f" --methods {args.methods} --seeds {args.seeds}"
               + (f" --first-seed {args.first_seed}" if args.first_seed else "")
               + (f" --epochs {args.epochs}" if args.epochs else "")
               + (f" --meta-fraction {args.meta_fraction}" if args.meta_fraction is not None else "")
               + repeated_options(args))
    return report(args, rows, f"quality: {args.dataset} {args.kinds} {args.noise} {args.methods}", command, seconds,
                  model)
