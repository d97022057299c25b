"""`delete NAME --yes`: delete a dataset with its decisions, meta-data and runs (refused without --yes)."""
from __future__ import annotations

import argparse

from core.errors import ConcordError
from core.generated import delete_dataset, deletion_summary, describe_deletion


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("delete", parents=[common], help="delete a dataset and everything decided about it")
    p.add_argument("name", help="the dataset")
    p.add_argument("--yes", action="store_true", help="confirm: its decisions and meta-data go too")
    p.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    if not args.yes:
        summary = deletion_summary(ctx.store, args.name)
        raise ConcordError(f"not deleted: {describe_deletion(summary)}; pass --yes to delete")
    summary = delete_dataset(ctx.store, args.name)
    if args.json:
        ctx.print_json(summary)
        return 0
    print(f"deleted {args.name!r}: {summary['pairs']:,} pairs, {summary['decisions']:,} decisions, "
          f"{summary['meta_entries']:,} meta-data entries, {summary['runs']:,} runs"
          + (f", images in {summary['folder']}" if summary["folder"] else ""))
    return 0
