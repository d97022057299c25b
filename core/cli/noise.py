"""`noise NAME --ratio R [--kind ncr|decl|hard] [--seed S] --as NEW`: a copy of a dataset with known noise."""
from __future__ import annotations

import argparse

from core.cli import cli_progress
from core.noise import DEFAULT_K, KINDS, inject_noise_copy


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("noise", parents=[common], help="copy a dataset with noise injected into its train split")
    p.add_argument("name", help="the source dataset (its injected noise, if any, is undone first)")
    p.add_argument("--ratio", type=float, required=True, help="fraction of train pairs (decl: images) made wrong")
    p.add_argument("--kind", default="ncr", choices=KINDS, help="kind of noise (methods.md §4; default ncr)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same noise")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="hard noise: draw from the k most similar captions")
    p.add_argument("--as", dest="new_name", required=True, metavar="NEW", help="name of the noisy copy")
    p.add_argument("--replace", action="store_true", help="replace an existing dataset called NEW")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    progress, bar = cli_progress()
    try:
        result = inject_noise_copy(ctx.store, args.name, args.new_name, args.ratio, args.kind, args.seed, k=args.k,
                                   replace=args.replace, progress=progress)
    finally:
        bar.close()
    if args.json:
        ctx.print_json(result)
        return 0
    print(f"created {args.new_name!r} from {args.name!r}: {result['noisy']:,} of {result['train_pairs']:,} train "
          f"pairs carry {args.kind} noise ({result['pairs']:,} pairs in all; images shared with {args.name!r})")
    return 0
