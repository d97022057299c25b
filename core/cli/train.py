"""`train NAME --method M …`: score every pair of a dataset with a method (or resume a run)."""
from __future__ import annotations

import argparse

from core.cli import ProgressBar
from core.errors import Cancelled, ConcordError
from core.methods import METHODS
from core.models import DEFAULT_MODEL
from core.training import DEFAULT_METHOD, META_SEED_FRACTION, META_SEED_SPLIT, REGIMES, start_run


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings → dict (values parsed later by the method's config)."""
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConcordError(f"--set takes key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a method and score every pair",
                       description="Train a scoring method on the dataset's training split and write per-pair "
                                   "similarity, clean_prob, weight and flagged. Ctrl-C cancels at the next batch and "
                                   "keeps a checkpoint: `train --resume RUN_ID` continues it.")
    p.add_argument("name", nargs="?", help="dataset name (not needed with --resume)")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD)
    p.add_argument("--model", default=DEFAULT_MODEL, help="concord-tiny | open_clip:ARCH:TAG | file:PATH")
    p.add_argument("--regime", choices=REGIMES, default=None,
                   help="finetune (train the image tower) or features (heads on cached pretrained features); "
                        "default: finetune for concord-tiny or on a GPU, else features")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.5, help="flag pairs whose clean_prob is below this")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting (repeatable); `python -m core train --list-settings METHOD` lists them")
    p.add_argument("--meta-split", default=META_SEED_SPLIT, help="clean split the meta-data seed is drawn from")
    p.add_argument("--meta-fraction", type=float, default=META_SEED_FRACTION,
                   help="seed size as a fraction of the training split")
    p.add_argument("--resume", type=int, default=None, metavar="RUN_ID", help="resume a cancelled/interrupted run")
    p.add_argument("--list-settings", action="store_true", help="list the method's settings and exit")
    p.add_argument("--json", action="store_true", help="print the run's evaluation as JSON on the last line")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from core.methods import settings
    if args.list_settings:
        for s in settings(args.method):
            print(f"{s.name:<28} {s.type.__name__:<6} default {s.default!r:<10} {s.help}")
        return 0
    from core.evaluate import evaluate_run
    from core.jobs import JobManager, mark_interrupted
    from core.runs import check_resumable
    store = ctx.store
    if args.resume is not None:
        mark_interrupted(store)
        run_id = args.resume
        check_resumable(store.run(run_id))
    else:
        if not args.name:
            raise ConcordError("name the dataset to train on (or pass --resume RUN_ID)")
        run_id = start_run(store, args.name, args.method, model=args.model, regime=args.regime, device=args.device,
                           seed=args.seed, epochs=args.epochs, settings=parse_sets(args.sets),
                           threshold=args.threshold, meta_split=args.meta_split, meta_fraction=args.meta_fraction)
    bar = ProgressBar()
    manager = JobManager()
    job = manager.submit_run(store, run_id)
    try:
        while True:
            try:
                job = manager.wait(job.id, timeout=0.5)
                break
            except TimeoutError:
                bar(job.progress)
    except KeyboardInterrupt:
        manager.cancel(job.id)
        job = manager.wait(job.id)
    finally:
        bar.close()
        manager.shutdown()
    if job.state == "cancelled":
        raise ConcordError(f"run {run_id} cancelled; resume it with `python -m core train --resume {run_id}`")
    if job.state == "failed":
        raise ConcordError(f"run {run_id} failed: {job.error}")
    result = evaluate_run(store, run_id)
    if args.json:
        ctx.print_json(result)
    else:
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"run {run_id} finished: {args.method if args.resume is None else store.run(run_id).method}, "
              f"AUROC {fmt(result['auroc'])}, F1 {fmt(result['f1'])}, rSum {fmt(result['rsum'])}, "
              f"{result['flagged']} flagged")
    return 0
