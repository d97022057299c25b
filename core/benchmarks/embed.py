"""`bench embed`: throughput of the caching pipeline against the raw work it wraps.

Captions: `core.features.encode_texts` against the model's forward pass alone. Images (concord-tiny trains its
image tower, so `embed` decodes and resizes images rather than encoding them): `core.features.image_pixels`
into an empty cache (a thread pool decoding ahead, chunked commits) against `load_pixels` called in a loop.

The raw figure is `LoadedModel.text_features` called back to back on the same batches (nothing else); the
pipeline figure is `core.features.encode_texts` into an empty temporary cache (hashing, length-sorted
batching, progress, chunked commits to disk, read-back). Both see the same captions and batch size, and
they alternate over `--repeats` rounds so that a busy machine slows both alike; the best round of each
counts. The captions are the dataset's own (default `demo`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from core.benchmarks import add_output_options, write_section


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common], help="caption-embedding throughput: pipeline vs raw forward",
                       description=__doc__)
    p.add_argument("--dataset", default="demo", help="dataset whose captions are embedded (default demo)")
    p.add_argument("--captions", type=int, default=2000, help="how many of its captions (default 2000)")
    p.add_argument("--model", default=None, help="model (default concord-tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds of each (default 2)")
    add_output_options(p)
    p.set_defaults(handler=run)


def raw_seconds(loaded, texts: list[str], batch_size: int) -> float:
    """Seconds for the model's forward pass alone over `texts`, in the pipeline's length-sorted batches."""
    ordered = sorted(texts, key=len)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ordered), batch_size):
            loaded.text_features(ordered[i:i + batch_size]).cpu()
    return time.perf_counter() - t0


def pipeline_seconds(texts: list[str], model: str, device: str, batch_size: int) -> float:
    """Seconds for `encode_texts` on `texts` into a fresh, empty cache."""
    from core.features import encode_texts
    with _fresh_cache():
        t0 = time.perf_counter()
        encode_texts(texts, model, device, batch_size)
        return time.perf_counter() - t0


@contextlib.contextmanager
def _fresh_cache() -> Iterator[None]:
    """CONCORD_CACHE pointed at an empty temporary folder for the duration."""
    before = os.environ.get("CONCORD_CACHE")
    with tempfile.TemporaryDirectory(prefix="concord-bench-embed-") as tmp:
        os.environ["CONCORD_CACHE"] = tmp
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("CONCORD_CACHE", None)
            else:
                os.environ["CONCORD_CACHE"] = before


def serial_decode_seconds(root: Path, rel_paths: list[str], size: int) -> float:
    """Seconds to decode and resize `rel_paths` one after another in this thread."""
    from core.features import load_pixels
    t0 = time.perf_counter()
    for rel in rel_paths:
        load_pixels(root / rel, size)
    return time.perf_counter() - t0


def pipeline_decode_seconds(store, dataset_id: int, size: int) -> float:
    """Seconds for `image_pixels` of the whole dataset into a fresh, empty cache."""
    from core.features import image_pixels
    with _fresh_cache():
        t0 = time.perf_counter()
        image_pixels(store, dataset_id, size)
        return time.perf_counter() - t0


def run(args: argparse.Namespace, ctx) -> int:
    from core.models import DEFAULT_MODEL, load_model

    model = args.model or DEFAULT_MODEL
    ds = ctx.store.dataset(args.dataset)
    texts = ctx.store.captions_frame(ds.id)["text"].drop_duplicates().head(args.captions).tolist()
    loaded = load_model(model, args.device)
    raw_seconds(loaded, texts[: args.batch_size], args.batch_size)            # warm-up (thread pools, allocator)
    images = ctx.store.images_frame(ds.id).drop_duplicates("hash")
    size = loaded.info.image_size
    raw, pipe, serial, decode = [], [], [], []
    for _ in range(args.repeats):
        raw.append(raw_seconds(loaded, texts, args.batch_size))
        pipe.append(pipeline_seconds(texts, model, args.device, args.batch_size))
        serial.append(serial_decode_seconds(Path(ds.root), images["path"].tolist(), size))
        decode.append(pipeline_decode_seconds(ctx.store, ds.id, size))
    out: dict[str, Any] = {
        "model": model, "device": str(loaded.device), "captions": len(texts), "batch_size": args.batch_size,
        "raw_captions_per_s": len(texts) / min(raw), "pipeline_captions_per_s": len(texts) / min(pipe),
    }
    out["ratio"] = out["pipeline_captions_per_s"] / out["raw_captions_per_s"]
    out |= {"images": len(images), "image_size": size, "serial_images_per_s": len(images) / min(serial),
            "pipeline_images_per_s": len(images) / min(decode)}
    command = (f"python -m core bench embed --dataset {args.dataset} --captions {args.captions}"
               + (f" --model {args.model}" if args.model else "") + f" --repeats {args.repeats}")
    body = (f"## Caption embedding (`bench embed`)\n\nCommand: `{command}` ({os.cpu_count()} CPU cores, "
            f"{platform.machine()}, device {out['device']}).\n\n"
            "| model | captions | raw forward captions/s | pipeline captions/s | pipeline / raw |\n"
            "|---|---|---|---|---|\n"
            f"| {model} | {len(texts):,} | {out['raw_captions_per_s']:.0f} | {out['pipeline_captions_per_s']:.0f} | "
            f"{out['ratio']:.0%} |\n\n"
            "| images | size | serial decode images/s | `embed` images/s (thread pool, cached) |\n|---|---|---|---|\n"
            f"| {len(images):,} | {size} px | {out['serial_images_per_s']:.0f} | {out['pipeline_images_per_s']:.0f} |")
    if not args.no_docs:
        write_section(f"embed: {model}", body)
    if args.json:
        print(json.dumps(out))
    else:
        print(body)
    return 0
