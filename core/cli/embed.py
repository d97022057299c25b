"""`embed NAME [--model M]`: compute and cache what a model needs for a dataset (resumable, cancellable)."""
from __future__ import annotations

import argparse

from core.cli import cli_progress


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common], help="cache caption features, decoded images and image features",
                       description="Compute what MODEL needs for dataset NAME and cache it in CONCORD_CACHE, keyed "
                                   "by model and content: caption features, the images decoded at the model's input "
                                   "size, and image features for pretrained image towers. Only what is not cached "
                                   "is computed; an interrupted run resumes where it stopped.")
    p.add_argument("name", help="dataset name")
    p.add_argument("--model", default=None,
                   help="concord-tiny (default), open_clip:ARCH:TAG (e.g. open_clip:ViT-B-32:openai) or "
                        "file:ARCH:PATH (a local open_clip state dict)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="rows per forward pass (default 256)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(handler=run)


def _counts(c: dict | None) -> str:
    return "-" if c is None else f"{c['computed']:,} computed, {c['cached']:,} cached"


def run(args: argparse.Namespace, ctx) -> int:
    from core.features import embed
    from core.models import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    progress, bar = cli_progress()
    try:
        result = embed(ctx.store, args.name, model, args.device, args.batch_size, progress)
    finally:
        bar.close()
    if args.json:
        ctx.print_json(result)
        return 0
    print(f"embedded {args.name!r} with {model} in {result['seconds']:.1f} s: captions {_counts(result['captions'])}; "
          f"images at {result['pixel_size']}px {_counts(result['pixels'])}; "
          f"image features {_counts(result['image_features'])}")
    return 0
