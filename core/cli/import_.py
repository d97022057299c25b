"""`import PATH [--name NAME] …`: import a dataset file (CSV / JSONL / Parquet / MS-COCO / Karpathy JSON) or an
export folder."""
from __future__ import annotations

import argparse

from core.cli import cli_progress
from core.importers import FORMATS, ColumnNames, import_dataset


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import", parents=[common], help="import images and captions (all good rows or nothing)")
    p.add_argument("path", help="the data file, or a folder: a Concord export or a folder with one data file")
    p.add_argument("--name", help="dataset name (default: an export's dataset name, else the file's stem)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="file format (default: by extension/content)")
    p.add_argument("--images-root", help="folder image paths are relative to (default: the data file's folder, "
                   "or the one an export's manifest names)")
    p.add_argument("--split", help="split of rows whose file names none (default train; COCO: overrides the "
                   "guess from file names)")
    defaults = ColumnNames()
    for role in ("image", "caption", "split", "id"):
        p.add_argument(f"--{role}-column", default=getattr(defaults, role),
                       help=f"CSV/JSONL/Parquet column holding the {role} (default {getattr(defaults, role)!r})")
    p.add_argument("--replace", action="store_true", help="replace an existing dataset (keeps decisions on "
                   "pairs that still exist)")
    p.add_argument("--skip-bad", action="store_true", help="import the good rows and write a report of the bad ones")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    columns = ColumnNames(image=args.image_column, caption=args.caption_column, split=args.split_column,
                          id=args.id_column)
    progress, bar = cli_progress()
    try:
        report = import_dataset(ctx.store, args.path, args.name, fmt=args.format, images_root=args.images_root,
                                replace=args.replace, skip_bad=args.skip_bad, columns=columns, split=args.split,
                                progress=progress)
    finally:
        bar.close()
    if args.json:
        ctx.print_json(report.to_dict())
        return 0
    print("\n".join(report.summary_lines()))
    return 0
