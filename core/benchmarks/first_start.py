"""`bench first-start [--epochs E ...]`: the app's first-start run, measured on the demo's ground truth.

Makes the first start's demo (its options: size, seed, hard noise) in a temporary database (never the
user's), runs the first start's method for each number of epochs asked, and reports for how many demo
pairs the Review page's top suggested caption (`core.review.suggestions`) mentions only objects the image
shows, by shape and colour (`core.demo.shares_objects`).
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
    p.add_argument("--epochs", type=int, nargs="+", default=[2],
                   help="epochs of the run, one run each (default: 2, the CPU first start's)")
    p.add_argument("--images", type=int, default=None, help="demo images (default: the first start's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="demo seeds, one demo each (default: the first start's; others are development seeds)")
    p.add_argument("--device", default="auto")
    add_output_options(p)
    p.set_defaults(handler=run)


def top_suggestion_share(store, run_id: int, items) -> dict[str, float]:
    """Over every pair of the run's dataset: the fraction whose top suggested caption on the Review page
    (`core.review.suggestions`) shares the image's objects (`shares_objects`), and how many were measured."""
    from core.demo import shares_objects
    from core.review import suggestions
    pairs = store.pairs_frame(store.run(run_id).dataset_id)
    claim_of = {t: c for it in items for t, c in zip(it.captions, it.claims)}
    scene_of = {f"images/{it.index:05d}.png": it.scene for it in items}
    good = total = 0
    for pair in pairs.itertuples():
        top = suggestions(store, run_id, int(pair.image_id), int(pair.caption_id), 1).captions["caption"]
        if top.empty:
            continue
        total += 1
        good += shares_objects(scene_of[pair.image_path], claim_of[top.iloc[0]])
    return {"pairs": total, "share": round(good / total, 4) if total else float("nan")}


def measure(store, seeds: list[int], epochs: list[int], images: int | None, device: str) -> list[dict]:
    """One demo per seed (the first start's options) in `store`, one first-start run per number of epochs on
    each, and the top-suggestion share of every run."""
    from core.demo import DemoConfig, generate
    from core.first_start import FirstStart
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.training import DEFAULT_METHOD, execute_run, start_run

    plan = FirstStart()
    method = plan.method or DEFAULT_METHOD
    rows = []
    for seed in seeds:
        options = GenerateOptions(**{**plan.demo.__dict__, "seed": seed,
                                     **({"images": images} if images is not None else {})})
        items = generate(DemoConfig(images=options.images, image_size=options.image_size, seed=seed))
        name = f"{plan.name}-{seed}"
        create_generated(store, name, options)
        for n in epochs:
            run_id = start_run(store, name, method, epochs=n, device=device)
            started = time.perf_counter()
            execute_run(store, run_id, Progress())
            seconds = time.perf_counter() - started
            rows.append({"seed": seed, "epochs": n, "method": method, "images": options.images,
                         "seconds": round(seconds, 1), **top_suggestion_share(store, run_id, items)})
            print(f"seed {seed}, {n} epochs: top suggestion shares the image's objects for "
                  f"{rows[-1]['share']:.1%} of {rows[-1]['pairs']:,} pairs ({seconds:.0f} s)", flush=True)
    return rows


def run(args: argparse.Namespace, ctx) -> int:
    from core.first_start import FirstStart
    from core.generated import delete_dataset
    from core.store import Store

    plan = FirstStart()
    with tempfile.TemporaryDirectory(prefix="concord-bench-first-start-") as tmp, \
            Store.open(Path(tmp) / "bench.duckdb") as store:
        try:
            rows = measure(store, args.seeds if args.seeds is not None else [plan.demo.seed], args.epochs,
                           args.images, args.device)
        finally:   # the demos' images live under CONCORD_HOME, keyed by this temporary database
            for name in store.dataset_names():
                delete_dataset(store, name)
    if args.json:
        print(json.dumps(rows, indent=2))
    if not args.no_docs:
        lines = [f"First start ({rows[0]['method']}, demo of {rows[0]['images']} images, {plan.demo.noise:.0%} "
                 f"{plan.demo.noise_kind} "
                 "noise): share of pairs whose top suggested caption shares the image's objects (shape and colour).",
                 f"Command: `python -m core bench first-start --epochs {' '.join(map(str, args.epochs))}"
                 + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds is not None else "")
                 + (f" --images {args.images}" if args.images is not None else "") + "`",
                 "", "| demo seed | epochs | share | pairs | run seconds |", "|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['epochs']} | {r['share']:.1%} | {r['pairs']:,} | {r['seconds']} |" for r in rows]
        write_section("first-start: measured", "\n".join(lines))
    return 0
