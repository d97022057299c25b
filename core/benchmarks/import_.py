"""`bench import --pairs N`: generate N pairs (a CSV and small PNGs in a temp folder) and time their import
into a temporary database (never the user's)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from core.benchmarks import check_ranges


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import", parents=[common], help="time importing N pairs from CSV with small images")
    p.add_argument("--pairs", type=int, default=100_000, help="number of pairs (default 100000)")
    p.add_argument("--captions-per-image", type=int, default=1, help="pairs sharing each image (default 1)")
    p.add_argument("--workers", type=int, default=2, help="image-checking processes (default 2)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=run)


def generate_pairs(folder: Path, pairs: int, per_image: int) -> Path:
    """`pairs` rows of `folder`/pairs.csv over ceil(pairs / per_image) distinct 16×16 PNGs under `folder`/img
    (distinct content, so distinct hashes); returns the CSV's path."""
    images = -(-pairs // per_image)
    (folder / "img").mkdir()
    for i in range(images):
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(folder / "img" / f"{i}.png")
    data = folder / "pairs.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption", "split"])
        for n in range(pairs):
            w.writerow([f"img/{n // per_image}.png", f"caption {n}: a photo of thing {n % 997} — café",
                        "test" if n % 10 == 0 else "train"])
    return data


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.importers import import_dataset
    from core.store import Store

    check_ranges(args, {"pairs": 1, "captions_per_image": 1})
    with tempfile.TemporaryDirectory(prefix="concord-bench-import-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        data = generate_pairs(folder, args.pairs, args.captions_per_image)
        generated = time.perf_counter() - t0
        progress, bar = cli_progress()
        with Store.open(folder / "bench.duckdb") as store:
            t1 = time.perf_counter()
            report = import_dataset(store, data, "bench", progress=progress, workers=args.workers)
            seconds = time.perf_counter() - t1
        bar.close()
    figures = {"pairs": report.pairs, "images": report.images, "workers": args.workers,
               "cpu_count": os.cpu_count(), "generate_s": round(generated, 2), "import_s": round(seconds, 2),
               "pairs_per_s": round(report.pairs / seconds, 1)}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"imported {figures['pairs']:,} pairs ({figures['images']:,} images) in {seconds:.1f} s "
              f"({figures['pairs_per_s']:,.0f} pairs/s, {args.workers} workers); generating took {generated:.1f} s")
    return 0
