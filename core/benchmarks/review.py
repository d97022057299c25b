"""`bench review`: how long the Review page takes from a keypress to the next pair, part by part.

One step is what the page does for a keypress: store the decision (with its meta-data effect), read what
the page reads (finished runs, review sets, splits), rebuild the queue head and progress, find the next
pair's suggestions (faiss under the run's embeddings) and make its images (the large view and the
suggested images' thumbnails, first view: not cached yet). Measured on the demo (5 captions per image) and
on a synthetic store of small PNGs, each with a stand-in finished run (random scores, random clustered
embeddings), in a temporary home and cache (never the user's). Streamlit's own
rendering and the browser round trip are not included.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from core.benchmarks import write_section

PARTS = ("decision", "page_reads", "queue", "suggestions", "images", "total")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("review", parents=[common], help="Review page latency: keypress to the next pair",
                       description=__doc__)
    p.add_argument("--demo-images", type=int, default=1000, help="demo images, 5 pairs each (default 1000; 0: skip)")
    p.add_argument("--synthetic", type=int, default=100_000, help="pairs of the synthetic store (default 100000; 0: skip)")
    p.add_argument("--captions-per-image", type=int, default=5, help="synthetic pairs per image (default 5)")
    p.add_argument("--steps", type=int, default=50, help="keypresses timed per store (default 50)")
    p.add_argument("--dim", type=int, default=256, help="embedding size of the stand-in run (default 256)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


@contextmanager
def _temporary_home(folder: Path) -> Iterator[None]:
    """CONCORD_HOME, CONCORD_DB and CONCORD_CACHE under `folder` while the block runs."""
    keys = ("CONCORD_HOME", "CONCORD_DB", "CONCORD_CACHE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({"CONCORD_HOME": str(folder / "home"), "CONCORD_DB": str(folder / "home" / "bench.duckdb"),
                       "CONCORD_CACHE": str(folder / "cache")})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stand_in_run(store, dataset_id: int, dim: int, seed: int = 0) -> int:
    """A finished run over every pair with random scores (clean probabilities mostly high, as after training)
    and random clustered unit embeddings for every image and caption."""
    from core import artifacts
    rng = np.random.default_rng(seed)
    pairs = store.pairs_frame(dataset_id)[["pair_id", "image_id", "caption_id"]]
    n = len(pairs)
    run_id = store.create_run(dataset_id, "b1", "concord-tiny", seed=seed, threshold=0.5)
    store.write_scores(run_id, pairs["pair_id"].to_numpy(), rng.uniform(-0.2, 0.6, n), rng.beta(5, 2, n),
                       rng.uniform(0, 1, n))
    store.update_run(run_id, state="finished")
    # clustered like a trained model's: images around topic centres, each caption near its image
    images, image_row = np.unique(pairs["image_id"].to_numpy(), return_inverse=True)
    captions, first = np.unique(pairs["caption_id"].to_numpy(), return_index=True)
    centres = rng.normal(size=(max(1, len(images) // 50), dim))
    image_emb = centres[rng.integers(0, len(centres), len(images))] + 0.5 * rng.normal(size=(len(images), dim))
    caption_emb = image_emb[image_row[first]] + 0.5 * rng.normal(size=(len(captions), dim))
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    artifacts.save_embeddings(store.run(run_id), artifacts.RunEmbeddings(images, unit(image_emb), captions, unit(caption_emb)))
    return run_id


def synthetic_dataset(store, folder: Path, pairs: int, per_image: int) -> int:
    """`pairs` pairs over distinct 16×16 PNGs, `per_image` captions each; returns the dataset id."""
    from PIL import Image

    from core.hashing import file_hash
    images = -(-pairs // per_image)
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(images):
        path = folder / "img" / f"{i}.png"
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(path)
        digest, size = file_hash(path), path.stat().st_size
        for c in range(min(per_image, pairs - i * per_image)):
            rows.append((f"img/{i}.png", digest, 16, 16, size, f"photo {i}.{c}: a thing of kind {(i * 7 + c) % 997}",
                         "test" if i % 10 == 0 else "train", f"{i}-{c}"))
    records = pd.DataFrame(rows, columns=["image_path", "image_hash", "width", "height", "nbytes", "caption",
                                          "split", "key"])
    return store.write_dataset("synthetic", folder, "csv", records)["dataset_id"]


def measure(store, dataset_id: int, run_id: int, steps: int) -> dict:
    """Time `steps` keypresses (three keeps, then a reject) on the most-suspicious queue: ms per part."""
    from core.index import RunNeighbours
    from core.review import QueueSpec, act, build_queue, suggestions
    from core.thumbnails import large_image, thumbnail

    ds = store.dataset_by_id(dataset_id)
    run = store.run(run_id)
    t0 = time.perf_counter()
    RunNeighbours.for_run(store, run_id)
    index_s = time.perf_counter() - t0
    spec, opened = QueueSpec(), store.last_decision_id(dataset_id)
    queue = build_queue(store, dataset_id, run, spec, reviewer="bench", opened_at=opened)
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    for i in range(steps):
        marks = [time.perf_counter()]
        act(store, dataset_id, run_id, "bench", "reject" if i % 4 == 3 else "keep", queue.head)
        marks.append(time.perf_counter())
        store.runs(dataset_id, state="finished")
        store.review_sets(dataset_id)
        store.split_names(dataset_id)
        marks.append(time.perf_counter())
        queue = build_queue(store, dataset_id, run, spec, reviewer="bench", opened_at=opened)
        marks.append(time.perf_counter())
        pair = queue.head.iloc[0]
        sugg = suggestions(store, run_id, int(pair["image_id"]), int(pair["caption_id"]), 5)
        marks.append(time.perf_counter())
        large_image(ds.root, pair["image_path"], pair["image_hash"], 384)
        for s in sugg.images.itertuples():
            thumbnail(ds.root, s.image_path, s.image_hash, 96)
        marks.append(time.perf_counter())
        for part, a, b in zip(PARTS, marks, marks[1:]):
            times[part].append(b - a)
        times["total"].append(marks[-1] - marks[0])
    pct = {p: [round(float(np.percentile(v, q)) * 1000, 1) for q in (50, 95)] for p, v in times.items()}
    return {"pairs": int(store.dataset_summary(dataset_id)["pairs"]), "steps": steps,
            "index_build_s": round(index_s, 2), "ms_p50_p95": pct}


def markdown(results: dict[str, dict], command: str) -> str:
    lines = [f"Command: `{command}` ({os.cpu_count()} CPU cores, {platform.machine()}; milliseconds, p50 / p95 over "
             "the timed keypresses; the faiss index is built once per run and cached).", "",
             "| store | pairs | index build (once) | decision | page reads | queue | suggestions | images | "
             "keypress → next pair |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cell = lambda p: f"{r['ms_p50_p95'][p][0]:.0f} / {r['ms_p50_p95'][p][1]:.0f}"  # noqa: E731
        lines.append(f"| {name} | {r['pairs']:,} | {r['index_build_s']:.1f} s | {cell('decision')} | "
                     f"{cell('page_reads')} | {cell('queue')} | {cell('suggestions')} | {cell('images')} | "
                     f"**{cell('total')}** |")
    return "\n".join(lines)


def run(args: argparse.Namespace, ctx) -> int:
    from core.generated import GenerateOptions, create_generated
    from core.store import Store

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="concord-bench-review-") as tmp, _temporary_home(Path(tmp)):
        with Store.open() as store:
            if args.demo_images:
                ds_id = create_generated(store, "demo", GenerateOptions(images=args.demo_images))["dataset_id"]
                results["demo"] = measure(store, ds_id, stand_in_run(store, ds_id, args.dim), args.steps)
                if not args.json:
                    print(json.dumps({"demo": results["demo"]}))
            if args.synthetic:
                ds_id = synthetic_dataset(store, Path(tmp) / "synthetic", args.synthetic, args.captions_per_image)
                results["synthetic"] = measure(store, ds_id, stand_in_run(store, ds_id, args.dim), args.steps)
    command = (f"python -m core bench review --demo-images {args.demo_images} --synthetic {args.synthetic} "
               f"--steps {args.steps}")
    if not args.no_docs:
        write_section("review", "## Review page latency (`bench review`)\n\n" + markdown(results, command))
    if args.json:
        print(json.dumps(results))
    else:
        print(markdown(results, command))
    return 0
