"""`runs NAME [--json]`: a dataset's runs with their state and headline figures."""
from __future__ import annotations

import argparse

from core.runs import run_row


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="list a dataset's runs")
    p.add_argument("name", help="dataset name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from core.jobs import mark_interrupted
    store = ctx.store
    ds = store.dataset(args.name)
    mark_interrupted(store)
    rows = [run_row(r) for r in store.runs(ds.id)]
    if args.json:
        ctx.print_json(rows)
        return 0
    if not rows:
        print(f"no runs on {args.name!r} yet: `python -m core train {args.name} --method b1`")
        return 0
    fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    print(f"{'id':>4} {'method':<13} {'state':<11} {'epochs':>6} {'lr':>7} {'AUROC':>6} {'F1':>6} {'rSum':>6} "
          f"{'s/epoch':>8}")
    for r in rows:
        lr = "-" if r["lr"] is None else f"{r['lr']:g}"
        epochs = "-" if r["epochs"] is None else str(r["epochs"])     # a scorer (concord) trains none
        print(f"{r['run_id']:>4} {r['method']:<13} {r['state']:<11} {epochs:>6} {lr:>7} {fmt(r['auroc']):>6} "
              f"{fmt(r['f1']):>6} {fmt(r['rsum'], 1):>6} {fmt(r['seconds_per_epoch'], 1):>8}")
    return 0
