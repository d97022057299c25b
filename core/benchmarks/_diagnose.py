"""What the `*-diagnose` benchmarks share: one method trained on a noisy copy of a dataset's clean originals, in a
temporary database (never the user's), with figures recorded after every epoch against the injected truth."""
from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any, Callable

import numpy as np

from core.benchmarks import (add_output_options, add_training_options, check_ranges, check_training,
                             repeated_options, scratch_store, write_section)

EpochFigures = Callable[[Any, int], dict[str, Any]]


def auroc(noisy: np.ndarray, score: np.ndarray) -> float | None:
    """AUROC of `score` as a detector of `noisy` (high score = noisy); None when only one class is present."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(noisy, score)) if 0 < noisy.sum() < len(noisy) else None


def register_diagnose(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, help: str,
                      description: str, set_help: str, handler: Callable) -> argparse.ArgumentParser:
    """The options every diagnose benchmark takes: which noisy copy, which seed, how many epochs, training and
    output options."""
    p = sub.add_parser(name, parents=[common], help=help, description=description)
    p.add_argument("--dataset", default="demo", help="dataset whose clean originals are used (default demo)")
    p.add_argument("--noise", type=float, default=0.4, help="noise ratio (default 0.4)")
    p.add_argument("--kind", default="hard", help="noise kind: ncr, decl, hard (default hard)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the run")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the method's default)")
    add_training_options(p, set_help=set_help)
    add_output_options(p)
    p.set_defaults(handler=handler)
    return p


def observed_run(args: argparse.Namespace, ctx, method: str, figures: EpochFigures) -> tuple[Any, Any]:
    """Train `method` on a noisy copy as a run would, appending the method's own end-of-epoch summary merged with
    `figures(method, epoch)` to `method.figures` after every epoch. Returns (method, its result)."""
    from core.cli import cli_progress
    from core.cli.train import parse_sets
    from core.methods import make_config, method_class
    from core.models import DEFAULT_MODEL
    from core.noise import inject_noise_copy
    from core.training import prepare, start_run

    class Observed(method_class(method)):
        def setup(self) -> None:
            super().setup()
            self.figures: list[dict[str, Any]] = []

        def end_epoch(self, epoch: int) -> dict[str, Any]:
            summary = super().end_epoch(epoch)
            self.figures.append(summary | figures(self, epoch))
            return summary

    check_ranges(args, {"seed": 0}, ["noise"])
    check_training(args, {method: parse_sets(args.sets)})
    settings = parse_sets(args.sets) | ({"epochs": args.epochs} if args.epochs else {})
    progress, bar = cli_progress()
    try:
        with scratch_store(ctx.store, args.dataset, method + "-diagnose") as store:
            inject_noise_copy(store, "clean", "noisy", args.noise, args.kind, args.seed, k=args.k)
            run_id = start_run(store, "noisy", method, model=args.model or DEFAULT_MODEL, device=args.device,
                               seed=args.seed, settings=settings)
            observed = Observed(make_config(method, store.run(run_id).config),
                                prepare(store, store.run(run_id), progress))
            result = observed.run()
    finally:
        bar.close()
    return observed, result


def final_figures(method, result) -> dict[str, Any]:
    """The run's AUROC of `clean_prob` and of `weight` on the training pairs, and its rSum on `test`."""
    train = method.data.train
    noisy = method.data.is_noisy[train] == 1
    return {"auroc": auroc(noisy, 1 - result.clean_prob[train]), "weight_auroc": auroc(noisy, 1 - result.weight[train]),
            "rsum": result.metrics.get("retrieval", {}).get("rsum")}


def command_line(name: str, args: argparse.Namespace) -> str:
    """The command that reproduces this diagnosis (for docs/benchmarks.md)."""
    return (f"python -m core bench {name} --dataset {args.dataset} --noise {args.noise} --kind {args.kind} "
            f"--seed {args.seed}" + (f" --epochs {args.epochs}" if args.epochs else "")
            + repeated_options(args))


def report(name: str, args: argparse.Namespace, method, result, warmup_epochs: int,
           markdown: Callable[[dict[str, Any], str], str]) -> int:
    """Print the diagnosis of a finished observed run (JSON with `--json`, else `markdown(out, command)`) and,
    unless `--no-docs`, write its markdown to docs/benchmarks.md."""
    out = {"noise": f"{args.kind} {args.noise}", "seed": args.seed, "epochs": method.config.epochs,
           "warmup_epochs": warmup_epochs, "epochs_figures": method.figures, "final": final_figures(method, result)}
    text = markdown(out, command_line(name, args))
    if not args.no_docs:
        write_section(f"{name}: {args.dataset} {args.kind} {args.noise} {' '.join(args.sets)}".strip(), text)
    print(json.dumps(out, default=float) if args.json else text)
    return 0


def header(name: str, label: str, out: dict[str, Any], command: str) -> list[str]:
    """The opening lines of a diagnosis in markdown: title, command, epochs and machine."""
    return [f"## {label} diagnosis (`bench {name}`, {out['noise']})", "",
            f"Command: `{command}` ({out['epochs']} epochs, {out['warmup_epochs']} of them warm-up; "
            f"{os.cpu_count()} CPU cores, {platform.machine()}).", ""]


def fmt(value: float | None, places: int = 3) -> str:
    """A figure for a markdown table: `places` decimals, or an en dash when there is none."""
    return "–" if value is None else f"{value:.{places}f}"
