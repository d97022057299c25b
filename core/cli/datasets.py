"""`datasets [--json]`: list datasets with their counts."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("datasets", parents=[common], help="list datasets with their counts")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    rows = ctx.store.list_datasets()
    if args.json:
        ctx.print_json(rows)
        return 0
    if not rows:
        print("no datasets yet: try `python -m core demo` or `python -m core import PATH --name NAME`")
        return 0
    print(f"{'name':<24} {'images':>8} {'captions':>9} {'pairs':>8} {'noisy':>7} {'reviewed':>9}  splits")
    for r in rows:
        splits = ", ".join(f"{k}={v}" for k, v in r["splits"].items())
        print(f"{r['name']:<24} {r['images']:>8} {r['captions']:>9} {r['pairs']:>8} {r['noisy']:>7} "
              f"{r['reviewed']:>9}  {splits}")
    return 0
