"""`bench first-start [--epochs E ...]`: the app's first-start run, measured on the demo's ground truth.

Makes the first start's demo (its options: size, seed, hard noise) in a temporary database (never the
user's), runs the first start's method for each number of epochs asked, and reports for how many demo
pairs the Review page's top suggestion (the caption nearest to the image under the run, the pair's own
caption excluded) mentions only objects the image shows, by shape and colour (`core.demo.shares_objects`).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from core.benchmarks import add_output_options, write_section


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("first-start", parents=[common],
                       help="how plausible the first-start run's top fix suggestions are on the demo")
    p.add_argument("--epochs", type=int, nargs="+", default=[2, 4, 8], help="epochs of the run (one run each)")
    p.add_argument("--images", type=int, default=None, help="demo images (default: the first start's)")
    p.add_argument("--device", default="auto")
    add_output_options(p)
    p.set_defaults(handler=run)


def top_suggestion_share(store, run_id: int, items) -> dict[str, float]:
    """Over every pair of the run's dataset: the fraction whose top suggested caption shares the image's
    objects (`shares_objects`), and how many pairs were measured."""
    from core.demo import shares_objects
    from core.index import RunNeighbours
    run = store.run(run_id)
    pairs = store.pairs_frame(run.dataset_id)
    texts = store.captions_by_id(pairs["caption_id"].unique()).set_index("caption_id")["text"]
    claim_of = {t: c for it in items for t, c in zip(it.captions, it.claims)}
    scene_of = {f"images/{it.index:05d}.png": it.scene for it in items}
    nb = RunNeighbours.for_run(store, run_id)
    near: dict[int, list[int]] = {}
    good = total = 0
    for pair in pairs.itertuples():
        if pair.image_id not in near:
            near[pair.image_id] = nb.captions_for_image(int(pair.image_id), 2)["caption_id"].tolist()
        top = next((c for c in near[pair.image_id] if c != pair.caption_id), None)
        if top is None:
            continue
        total += 1
        good += shares_objects(scene_of[pair.image_path], claim_of[texts[top]])
    return {"pairs": total, "share": round(good / total, 4) if total else float("nan")}


def run(args: argparse.Namespace, ctx) -> int:
    from core.demo import DemoConfig, generate
    from core.first_start import FirstStart
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.store import Store
    from core.training import DEFAULT_METHOD, execute_run, start_run

    plan = FirstStart()
    options = plan.demo if args.images is None else GenerateOptions(**{**plan.demo.__dict__, "images": args.images})
    method = plan.method or DEFAULT_METHOD
    items = generate(DemoConfig(images=options.images, image_size=options.image_size, seed=options.seed))
    rows = []
    with tempfile.TemporaryDirectory(prefix="concord-bench-first-start-") as tmp, \
            Store.open(Path(tmp) / "bench.duckdb") as store:
        create_generated(store, plan.name, options)
        for epochs in args.epochs:
            run_id = start_run(store, plan.name, method, epochs=epochs, device=args.device)
            started = time.perf_counter()
            execute_run(store, run_id, Progress())
            seconds = time.perf_counter() - started
            rows.append({"epochs": epochs, "method": method, "seconds": round(seconds, 1),
                         **top_suggestion_share(store, run_id, items)})
            print(f"{epochs} epochs: top suggestion shares the image's objects for {rows[-1]['share']:.1%} of "
                  f"{rows[-1]['pairs']:,} pairs ({seconds:.0f} s)", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    if not args.no_docs:
        lines = [f"First start ({method}, demo of {options.images} images, {options.noise:.0%} {options.noise_kind} "
                 "noise): share of pairs whose top suggested caption shares the image's objects (shape and colour).",
                 "", "| epochs | share | pairs | seconds |", "|---|---|---|---|"]
        lines += [f"| {r['epochs']} | {r['share']:.1%} | {r['pairs']:,} | {r['seconds']} |" for r in rows]
        write_section("first-start", "\n".join(lines))
    return 0
