"""`train NAME --method M …`: score every pair of a dataset with a method (or resume a run)."""
from __future__ import annotations

import argparse

from core.cli import ProgressBar
from core.errors import ConcordError
from core.methods import METHODS

DEFAULTS_FROM_START_RUN = ("method", "model", "regime", "meta_split", "meta_fraction")
"""Options left unset on the command line take `core.training.start_run`'s defaults (imported with the
engine when a run starts, so building the parser stays light)."""


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings → dict (values parsed later by the method's config)."""
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConcordError(f"--set takes key=value, got {item!r}")
        if key.strip() in out:
            raise ConcordError(f"--set {key.strip()} is given twice ({out[key.strip()]!r} and {value.strip()!r}); "
                               "give it once")
        out[key.strip()] = value.strip()
    return out


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a method and score every pair",
                       description="Train a scoring method on the dataset's training split and write per-pair "
                                   "similarity, clean_prob, weight and flagged. Ctrl-C cancels at the next batch and "
                                   "keeps a checkpoint: `train --resume RUN_ID` continues it.")
    p.add_argument("name", nargs="?", help="dataset name (not needed with --resume)")
    p.add_argument("--method", choices=list(METHODS), default=None, help="scoring method (default: b1)")
    p.add_argument("--model", default=None, help="concord-tiny (default) | open_clip:ARCH:TAG | file:PATH")
    p.add_argument("--regime", default=None,
                   help="finetune (train the image tower) or features (heads on cached pretrained features); "
                        "default: finetune for concord-tiny or on a GPU, else features")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.5, help="flag pairs whose clean_prob is below this")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting (repeatable); `python -m core train --list-settings --method M` lists them")
    p.add_argument("--meta-split", default=None, help="clean split the meta-data seed is drawn from (default: val); '' for no seed")
    p.add_argument("--meta-fraction", type=float, default=None,
                   help="seed size as a fraction of the training split (default: 0.02)")
    p.add_argument("--resume", type=int, default=None, metavar="RUN_ID", help="resume a cancelled/interrupted run")
    p.add_argument("--list-settings", action="store_true", help="list the method's settings and exit")
    p.add_argument("--json", action="store_true", help="print the run's evaluation as JSON on the last line")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from core.methods import settings
    from core.training import DEFAULT_METHOD, start_run
    if args.list_settings:
        if args.name:       # `--list-settings npc` read npc as the dataset and listed b1's settings
            raise ConcordError(f"--list-settings takes the method as --method, not {args.name!r}: "
                               f"`python -m core train --list-settings --method {args.name}`")
        for s in settings(args.method or DEFAULT_METHOD):
            print(f"{s.name:<28} {s.type.__name__:<6} default {s.default!r:<10} {s.help}")
        return 0
    from core.evaluate import evaluate_run
    from core.jobs import JobManager, mark_interrupted
    from core.runs import check_resumable
    store = ctx.store
    if args.resume is not None:
        mark_interrupted(store)
        run_id = args.resume
        run = store.run(run_id)
        if args.name and store.dataset_by_id(run.dataset_id).name != args.name:
            raise ConcordError(f"run {run_id} belongs to dataset {store.dataset_by_id(run.dataset_id).name!r}, not "
                               f"{args.name!r}; `train --resume {run_id}` needs no dataset name")
        check_resumable(run)
    else:
        if not args.name:
            raise ConcordError("name the dataset to train on (or pass --resume RUN_ID)")
        given = {k: getattr(args, k) for k in DEFAULTS_FROM_START_RUN if getattr(args, k) is not None}
        run_id = start_run(store, args.name, device=args.device, seed=args.seed, epochs=args.epochs,
                           settings=parse_sets(args.sets), threshold=args.threshold, **given)
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
        try:
            job = manager.wait(job.id)
        except KeyboardInterrupt:       # a second Ctrl-C while the run stops: say how to go on all the same
            pass
    finally:
        bar.close()
        manager.shutdown()
    if job.state in ("cancelled", "running", "queued"):
        raise ConcordError(f"run {run_id} cancelled; resume it with `python -m core train --resume {run_id}`")
    if job.state == "failed":
        raise ConcordError(f"run {run_id} failed: {job.error}")
    result = evaluate_run(store, run_id)
    if args.json:
        ctx.print_json(result)
    else:
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"run {run_id} finished: {store.run(run_id).method}, "
              f"AUROC {fmt(result['auroc'])}, F1 {fmt(result['f1'])}, rSum {fmt(result['rsum'])}, "
              f"{result['flagged']} flagged")
    return 0
