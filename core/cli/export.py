"""`export NAME --out DIR`: write the cleaned dataset (rejects dropped, fixes applied, scores attached)."""
from __future__ import annotations

import argparse

from core.cli import cli_progress
from core.export import FORMATS, IMAGE_MODES, ExportOptions, export_dataset


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common], help="export the cleaned dataset",
                       description="Write the cleaned dataset atomically into a new folder: rejected pairs "
                                   "dropped, fixed pairs with their new caption, per-pair clean_prob and weight, "
                                   "the decision log and a manifest.")
    p.add_argument("name", help="dataset name")
    p.add_argument("--out", required=True, help="destination folder (must be absent or empty)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: the format the dataset came in; csv for generated ones)")
    p.add_argument("--run", type=int, default=None, help="run whose scores to attach (default: the latest finished)")
    p.add_argument("--drop-flagged-unreviewed", action="store_true",
                   help="also drop pairs the run flags (clean_prob < threshold) that nobody decided")
    p.add_argument("--images", choices=IMAGE_MODES, default="copy",
                   help="copy the kept images beside the data file (DIR imports back with no flags), or only "
                        "record paths relative to the original root (named in the manifest)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty destination folder")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    options = ExportOptions(format=args.format, run_id=args.run, drop_flagged_unreviewed=args.drop_flagged_unreviewed,
                            images=args.images, overwrite=args.overwrite)
    progress, bar = cli_progress()
    try:
        manifest = export_dataset(ctx.store, args.name, args.out, options, progress)
    finally:
        bar.close()
    if args.json:
        ctx.print_json(manifest)
        return 0
    c = manifest["counts"]
    run = manifest["run"]
    print(f"exported {args.name!r} as {manifest['format']} to {args.out}: {c['in']} pairs in, {c['dropped']} dropped "
          f"({c['dropped_rejected']} rejected, {c['dropped_flagged_unreviewed']} flagged unreviewed), "
          f"{c['fixed']} fixed, {c['out']} out; scores from {'run ' + str(run['id']) if run else 'no run'}")
    return 0
