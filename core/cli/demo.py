"""`demo [--name demo] [--images N] [--captions N] [--noise R] [--noise-kind K] [--source S] …`: generate a
dataset."""
from __future__ import annotations

import argparse
import time

from core.cli import cli_progress
from core.generated import CAPTIONS, SOURCES, GenerateOptions, create_generated
from core.noise import DEFAULT_K, KINDS


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    defaults = GenerateOptions()
    p = sub.add_parser("demo", parents=[common], help="generate the demo (or an offline real set) as a dataset")
    p.add_argument("--name", help="dataset name (default: the source's name)")
    p.add_argument("--source", default=defaults.source, choices=SOURCES,
                   help="procedural scenes (demo) or an offline real set from a Debian package")
    p.add_argument("--images", type=int, default=defaults.images, help=f"number of images (default {defaults.images})")
    p.add_argument("--image-size", type=int, default=defaults.image_size, help="side of the square images in pixels")
    p.add_argument("--captions", type=int, default=defaults.captions,
                   help=f"captions per image, 1..{CAPTIONS}: the first of each image's {CAPTIONS} (default "
                        f"{defaults.captions}; 1: no image has siblings)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="the same seed gives byte-identical files")
    p.add_argument("--noise", type=float, default=defaults.noise, help="noise ratio injected into the train split")
    p.add_argument("--noise-kind", default=defaults.noise_kind, choices=KINDS, help="kind of noise (methods.md §4)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="hard noise: draw from the k most similar captions")
    p.add_argument("--replace", action="store_true", help="replace an existing dataset of that name")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    options = GenerateOptions(source=args.source, images=args.images, image_size=args.image_size,
                              captions=args.captions, seed=args.seed, noise=args.noise, noise_kind=args.noise_kind,
                              k=args.k)
    name = args.name or args.source
    progress, bar = cli_progress()
    started = time.perf_counter()
    try:
        result = create_generated(ctx.store, name, options, replace=args.replace, progress=progress)
    finally:
        bar.close()
    result["seconds"] = round(time.perf_counter() - started, 2)
    if args.json:
        ctx.print_json(result)
        return 0
    print(f"created {name!r} ({args.source}) in {result['seconds']:.1f} s: {result['images']:,} images, "
          f"{result['captions']:,} captions, {result['pairs']:,} pairs; images in {result['root']}")
    for split, c in result["splits"].items():
        print(f"  {split}: {c['images']:,} images, {c['pairs']:,} pairs")
    if result["noisy"]:
        print(f"  {result['noisy']:,} train pairs carry injected {args.noise_kind} noise")
    return 0
