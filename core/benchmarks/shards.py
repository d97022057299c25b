"""`bench shards`: pairs per second of `shards score` with `--engine local` and `--engine ray` on the same shards,
Ray's start-up apart; and (`--attach-pairs N`) the cost of attaching an N-pair scored set and opening it.

Scoring: a demo of `--pairs` pairs (5 captions per image, 64 px, at most 1000 images: beyond 5000 pairs the
demo's pairs repeat) generated in a temporary folder and cut into
`--shards` Parquet shards of image paths and captions, scored with concord-tiny weights saved from its seed
(`file:concord-tiny:…`, so no run is trained first: a run's weights cost the same to apply). Each engine writes
into its own empty folder; the local engine's seconds include loading the model once, the Ray engine's include
its actors loading it, and Ray's own start-up (`ray.init` of a local cluster, or joining `RAY_ADDRESS`) is
reported apart. Attaching: N synthetic scored rows (no embeddings, no image files; the consensus-term columns
the scorer writes, random) written as the scorer writes them, attached into an empty database, then the Review
queue, Explore's frame with the terms read in place from the shards, and one pair's terms (Review's line) read.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.benchmarks import add_output_options, write_section


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("shards", parents=[common], help="sharded scoring throughput: local vs ray; attaching",
                       description=__doc__)
    p.add_argument("--pairs", type=int, default=20_000, help="pairs to score (default 20000; 0: skip scoring)")
    p.add_argument("--shards", type=int, default=8, help="shards they are cut into (default 8)")
    p.add_argument("--engines", default="local,ray", help="comma-separated engines (default local,ray)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="ray: embedding actors (default 1)")
    p.add_argument("--num-cpus", type=int, default=None, help="ray: CPUs of the local cluster (default: all)")
    p.add_argument("--attach-pairs", type=int, default=0, help="also time attaching N synthetic scored pairs")
    add_output_options(p)
    p.set_defaults(handler=run)


def _make_shards(folder: Path, pairs: int, shards: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from core.generated import GenerateOptions, create_generated
    from core.store import Store
    with Store.open(folder / "source.duckdb") as store:
        create_generated(store, "demo", GenerateOptions(images=min(1000, -(-pairs // 5)), noise=0.3, seed=0))
        ds = store.dataset("demo")
        frame = store.pairs_frame(ds.id)
    n = len(frame)
    frame = frame.iloc[np.arange(pairs) % n].reset_index(drop=True)      # the demo repeated, if need be
    frame["key"] = [f"{k}#{i // n}" for i, k in enumerate(frame["key"])]
    out = folder / "in"
    out.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        rows = frame.iloc[part]
        pq.write_table(pa.table({"image": [str(Path(ds.root) / p) for p in rows["image_path"]],
                                 "caption": list(rows["caption"]), "key": list(rows["key"])}),
                       out / f"shard-{i:03d}.parquet")
    return [str(out)]


def _score(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from core.models.tiny import build
    from core.shards.config import ShardScoreConfig
    from core.shards.pipeline import ray_session, score_shards
    from core.shards.scorer import zero_shot_spec
    t0 = time.perf_counter()
    inputs = _make_shards(folder, args.pairs, args.shards)
    generate_s = time.perf_counter() - t0
    weights = folder / "tiny.pt"
    torch.save(build(0)[0].state_dict(), weights)
    spec = zero_shot_spec(f"file:concord-tiny:{weights}")
    rows = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        config = ShardScoreConfig(engine=engine, batch_size=args.batch_size, workers=args.workers)
        if engine == "ray":
            with ray_session(num_cpus=args.num_cpus, object_store_memory=500 * 1024 ** 2, config=config) as startup:
                report = score_shards(inputs, folder / f"out-{engine}", spec, config)
        else:
            startup, report = 0.0, score_shards(inputs, folder / f"out-{engine}", spec, config)
        rows.append({"engine": engine, "pairs": report.pairs, "shards": len(report.written),
                     "seconds": report.seconds, "pairs_per_s": round(report.pairs / report.seconds, 1),
                     "startup_s": round(startup, 2), "generate_s": round(generate_s, 2)})
    return rows


def _terms(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Random stand-ins for the consensus terms the scorer writes (`consensus_terms`): two captions per image, so
    every pair has one sibling and its rank is 0 or 1."""
    out = {name: rng.normal(0.05, 0.1, n) for name in ("caption_margin", "image_margin")}
    out |= {name: rng.normal(0.3, 0.1, n) for name in ("image_neighbours", "caption_neighbours", "caption_images",
                                                        "siblings")}
    out["sibling_rank"] = rng.integers(0, 2, n).astype(np.float64)
    out["sibling_margin"] = rng.normal(0.05, 0.1, n)
    out["similarity_margin"] = rng.normal(0.0, 0.1, n)
    return out


def _attach(folder: Path, n: int) -> dict[str, Any]:
    """Write n synthetic scored rows as the scorer does (8 shards), attach them, open Review and Explore, and
    read one pair's terms as Review's line does."""
    from core.explore import add_extra, extra_columns, run_frame
    from core.review import QueueSpec, build_queue
    from core.shards.attach import attach
    from core.shards.config import ShardScoreConfig
    from core.shards.pipeline import manifest
    from core.shards.reader import Shard
    from core.shards.scorer import Mixture, ScorerSpec
    from core.shards.writer import ShardWriter
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    spec = ScorerSpec("concord-tiny", mixture=Mixture((0.1, 0.3), (0.01, 0.01), (0.3, 0.7)), source="synthetic")
    writer = ShardWriter(folder / "scored", manifest(spec, ShardScoreConfig(embeddings=False)))
    for i, part in enumerate(np.array_split(np.arange(n), 8)):
        sim = rng.normal(0.25, 0.1, len(part))
        clean = spec.mixture.clean_prob(sim)
        writer.write(Shard(f"/synthetic/{i}.parquet", f"part-{i}", len(part), int(part[0])), {
            "key": np.array([f"k{j}" for j in part], object), "shard": np.full(len(part), f"/synthetic/{i}", object),
            "row": part - part[0], "ordinal": part, "caption": np.array([f"caption {j}" for j in part], object),
            "caption_hash": np.array([f"c{j:039d}" for j in part], object),
            "image_path": np.array([f"/synthetic/img/{j // 2}.png" for j in part], object),
            "image_hash": np.array([f"i{j // 2:039d}" for j in part], object),
            "similarity": sim, "clean_prob": clean, "weight": clean} | _terms(rng, len(part)))
    generate_s = time.perf_counter() - t0
    from core.store import Store
    with Store.open(folder / "attach.duckdb") as store:
        t1 = time.perf_counter()
        result = attach(store, folder / "scored", "web")
        attach_s = time.perf_counter() - t1
        run = store.run(result["run_id"])
        opens = []
        for _ in range(2):
            t2 = time.perf_counter()
            build_queue(store, result["dataset_id"], run, QueueSpec(), reviewer="bench", limit=1)
            opens.append(time.perf_counter() - t2)
        t3 = time.perf_counter()
        frame = run_frame(store, result["dataset_id"], run.id)
        for name in extra_columns(frame):      # every term, as the map reads one when coloured by it
            add_extra(store, run.id, frame, name)
        explore_s = time.perf_counter() - t3
        pair_s = []
        for pair_id in frame["pair_id"].iloc[np.linspace(0, len(frame) - 1, 5).astype(int)]:
            t4 = time.perf_counter()
            terms = store.pair_extras(run.id, int(pair_id))
            pair_s.append(time.perf_counter() - t4)
        (folder / "scored").rename(folder / "moved")          # the shards moved away: the copied columns only
        t5 = time.perf_counter()
        bare = run_frame(store, result["dataset_id"], run.id)
        bare_s = time.perf_counter() - t5
        (folder / "moved").rename(folder / "scored")
    db_mb = (folder / "attach.duckdb").stat().st_size / 2 ** 20
    parquet_mb = sum(p.stat().st_size for p in (folder / "scored").glob("*.parquet")) / 2 ** 20
    return {"pairs": result["pairs"], "generate_s": round(generate_s, 2), "attach_s": round(attach_s, 2),
            "review_open_s": round(opens[0], 3), "review_reopen_s": round(opens[1], 3),
            "explore_frame_s": round(explore_s, 3), "explore_rows": len(frame),
            "explore_terms": len(extra_columns(frame)), "explore_frame_moved_s": round(bare_s, 3),
            "explore_terms_moved": len(extra_columns(bare)), "pair_terms_first_s": round(pair_s[0], 4),
            "pair_terms_median_s": round(float(np.median(pair_s)), 4), "pair_terms": len(terms),
            "db_mb": round(db_mb, 1), "parquet_mb": round(parquet_mb, 1)}


def markdown(figures: dict[str, Any]) -> str:
    lines = [f"### bench shards ({os.cpu_count()} CPUs)", ""]
    if figures.get("scoring"):
        lines += ["| engine | pairs | shards | seconds | pairs/s | Ray start-up s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['engine']} | {r['pairs']:,} | {r['shards']} | {r['seconds']:.1f} | {r['pairs_per_s']:,.0f} | "
                  f"{r['startup_s']:.1f} |" for r in figures["scoring"]]
    a = figures.get("attach")
    if a:
        lines += ["", f"Attaching {a['pairs']:,} scored pairs: {a['attach_s']:.1f} s "
                      f"(writing them {a['generate_s']:.1f} s); "
                      f"Review queue opened in {a['review_open_s']:.2f} s (again {a['review_reopen_s']:.2f} s), "
                      f"Explore's frame with {a['explore_terms']} terms read in place in {a['explore_frame_s']:.2f} s "
                      f"({a['explore_frame_moved_s']:.2f} s without them, the shards moved away), one pair's terms in "
                      f"{a['pair_terms_median_s'] * 1000:.0f} ms (first {a['pair_terms_first_s'] * 1000:.0f} ms); "
                      f"database {a['db_mb']:.0f} MB, shards {a['parquet_mb']:.0f} MB."]
    return "\n".join(lines)


def run(args: argparse.Namespace, ctx) -> int:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="concord-bench-shards-") as tmp:
        if args.pairs > 0:
            figures["scoring"] = _score(Path(tmp), args)
        if args.attach_pairs > 0:
            figures["attach"] = _attach(Path(tmp), args.attach_pairs)
    if not args.no_docs:
        write_section("shards", markdown(figures))
    print(json.dumps(figures) if args.json else markdown(figures))
    return 0
