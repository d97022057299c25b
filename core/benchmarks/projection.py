"""`bench projection --points 5000,20000,50000`: what the Explore page costs at N pairs.

Per N, on synthetic data (clustered unit vectors as fused embeddings, pairs with 60-character captions and
scores, 10 % flagged) in a temporary database (never the user's): the PCA and UMAP projections (UMAP seeded,
one thread, after a warm-up that pays numba's compilation), reading the run's pairs (`run_frame`), and the
map: figure build (every point) and its JSON (what Streamlit sends to the browser). Figures go to stdout and to
`docs/benchmarks.md`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.benchmarks import add_output_options, check_ranges, counts, write_section

WARMUP_POINTS = 4500  # above 4096 points UMAP switches to approximate neighbours (more numba to compile)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("projection", parents=[common], help="PCA/UMAP time and the Explore map's cost at N pairs",
                       description=__doc__)
    p.add_argument("--points", default="5000,20000,50000",
                   help="comma-separated pair counts (default 5000,20000,50000)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    p.add_argument("--no-umap", action="store_true", help="skip UMAP (the slow part)")
    add_output_options(p)
    p.set_defaults(handler=run)


def synthetic_vectors(n: int, dim: int, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """`n` unit vectors around `clusters` random directions (what fused embeddings of topics look like)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.6, (n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _records(n: int) -> pd.DataFrame:
    """`n` pairs as `write_dataset` takes them (image files need not exist: nothing here reads them)."""
    ids = np.arange(n)
    return pd.DataFrame({"image_path": [f"img/{i}.png" for i in ids], "image_hash": [f"{i:064x}" for i in ids],
                         "width": 64, "height": 64, "nbytes": 1000,
                         "caption": [f"a photo of thing {i % 997} on a table near the window, number {i}" for i in ids],
                         "split": np.where(ids % 10 == 0, "test", "train"), "key": ids.astype(str),
                         "is_noisy": ids % 5 == 0})


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def measure(n: int, dim: int, umap: bool, folder: Path) -> dict[str, Any]:
    """The figures for `n` pairs (a fresh database under `folder`)."""
    from core.explore import MapSettings, map_figure, map_points, run_frame
    from core.progress import Progress
    from core.projection import ProjectionSettings, pca_projection, umap_projection
    from core.store import Store

    vectors = synthetic_vectors(n, dim)
    row: dict[str, Any] = {"points": n}
    coords, row["pca_s"] = _timed(pca_projection, vectors)
    if umap:
        coords, row["umap_s"] = _timed(umap_projection, vectors, ProjectionSettings(), Progress())
    rng = np.random.default_rng(1)
    with Store.open(folder / f"bench-{n}.duckdb") as store:
        store.write_dataset("bench", folder, "csv", _records(n))
        ds = store.dataset("bench")
        run_id = store.create_run(ds.id, "b1", "bench")
        pair_ids = store.pairs_frame(ds.id)["pair_id"].to_numpy()
        clean_prob = np.where(rng.uniform(size=n) < 0.1, rng.uniform(0, 0.5, n), rng.uniform(0.5, 1, n))
        store.write_scores(run_id, pair_ids, rng.uniform(-0.2, 0.9, n), clean_prob, clean_prob)
        frame, row["run_frame_s"] = _timed(run_frame, store, ds.id, run_id)
        settings = MapSettings()
        t0 = time.perf_counter()
        xy = pd.DataFrame({"pair_id": pair_ids, "x": coords[:, 0], "y": coords[:, 1]})
        fig = map_figure(map_points(store, ds.id, frame, xy, settings), settings)
        row["figure_s"] = time.perf_counter() - t0
    text, row["json_s"] = _timed(fig.to_json)
    row["drawn"] = len(frame)
    row["json_mb"] = len(text) / 1e6
    return row


def markdown(rows: list[dict[str, Any]], command: str, warmup: float | None) -> str:
    fmt = lambda v, p=2: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"Command: `{command}` ({os.cpu_count()} CPU cores, {platform.machine()}; synthetic clustered "
             "embeddings; UMAP seeded, one thread" + (f", after a {warmup:.0f} s warm-up compiling numba" if warmup
                                                     else "") + ").", "",
             "| pairs | PCA s | UMAP s | read pairs s | drawn | figure build s | figure JSON s | JSON MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['points']:,} | {fmt(r['pca_s'])} | {fmt(r.get('umap_s'), 1)} | {fmt(r['run_frame_s'])} | "
                     f"{r['drawn']:,} | {fmt(r['figure_s'])} | {fmt(r['json_s'])} | {fmt(r['json_mb'], 1)} |")
    return "\n".join(lines)


def run(args: argparse.Namespace, ctx) -> int:
    from core.progress import Progress
    from core.projection import ProjectionSettings, umap_projection

    sizes = counts(args.points, "--points")
    check_ranges(args, {"dim": 1})
    warmup = None
    if not args.no_umap:
        _, warmup = _timed(umap_projection, synthetic_vectors(WARMUP_POINTS, args.dim), ProjectionSettings(),
                           Progress())
    rows = []
    with tempfile.TemporaryDirectory(prefix="concord-bench-projection-") as tmp:
        for n in sizes:
            rows.append(measure(n, args.dim, not args.no_umap, Path(tmp)))
            if not args.json:
                print(json.dumps(rows[-1], default=float), flush=True)
    command = f"python -m core bench projection --points {args.points} --dim {args.dim}" + \
        (" --no-umap" if args.no_umap else "")
    text = markdown(rows, command, warmup)
    if not args.no_docs:
        write_section("projection", "## Explore map (`bench projection`)\n\n" + text)
    if args.json:
        print(json.dumps({"rows": rows, "umap_warmup_s": warmup}, default=float))
    else:
        print(text)
    return 0
