"""`evaluate RUN_ID [--json]`: detection (now) and retrieval (recorded) figures of a run."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="detection and retrieval figures of a run")
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from core.evaluate import evaluate_run
    result = evaluate_run(ctx.store, args.run_id)
    if args.json:
        ctx.print_json(result)
        return 0
    for key, value in result.items():
        print(f"{key:<20} {'n/a' if value is None else value}")
    return 0
