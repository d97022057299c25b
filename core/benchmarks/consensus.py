"""`bench consensus`: what the fused score costs at scale — the consensus signals, a whole `concord` run, and the
refit after a batch of decisions.

On a synthetic store of `--pairs` pairs (`--captions-per-image` each, as `bench review` makes them; a tenth of the
images in a clean `val` split) with a stand-in finished run (clustered random embeddings), in a temporary folder:
the signals of every pair in that run's space (`space_signals`: faiss searches, siblings, neighbours, margins), the
text-space sibling terms over 384-d stand-in caption features (the run's caption embeddings through a random
projection: clustered as a text tower's are, where random vectors would leave an IVF index nothing to prune), the
pixel space (`core.detect.pixels`: the images
decoded at 64 px into the pixel cache, then read back, reduced and projected as a run does once a training run
has cached them; its neighbour terms beside the same caption features, and the run's look-alike terms over those
neighbours, `look_alike_signals`), the `val` images' context matched to the train
split's in that space (`core.detect.context`), a whole `concord` run over the stand-in with the `val` pairs
trusted (all of the above but the text signals: encoding 100k captions is the embedding step's cost, `bench
embed`), and `--decisions` decisions followed by a refit (classifier fit, prediction and the store's update of
every pair's clean_prob). Figures are seconds, measured once each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from core.benchmarks import add_output_options, write_section


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("consensus", parents=[common], help="cost of the consensus signals and the fused score's refit",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=100_000, help="pairs of the synthetic store (default 100000)")
    p.add_argument("--captions-per-image", type=int, default=5, help="captions per image (default 5)")
    p.add_argument("--dim", type=int, default=256, help="embedding size of the stand-in run (default 256)")
    p.add_argument("--decisions", type=int, default=100, help="decisions before the refit (default 100)")
    add_output_options(p)
    p.set_defaults(handler=run)


def fused_run(store, dataset: str, base: int) -> int:
    """A `concord` run (not started) over finished run `base` of `dataset`, without text signals, trusting the
    dataset's `val` split where it has one (so it fits their matched context too), else 2 % of its train pairs (at
    least 50) seeded into the meta-data as trusted positives; returns its id."""
    from core.detect.signals import pair_view
    from core.training import start_run

    ds = store.dataset(dataset).id
    frame = pair_view(store.pairs_frame(ds))
    has_val = bool((frame["split"] == "val").any())
    if not has_val:
        train = frame[frame["split"] == "train"]
        seed = train.sample(min(len(train), max(50, len(train) // 50)), random_state=0)
        store.add_meta(ds, list(zip(seed["image_id"], seed["caption_id"], [1] * len(seed))), "manual")
    return start_run(store, dataset, "concord", meta_split="",
                     settings={"base_runs": str(base), "text_signals": False, "trusted_split": "val" if has_val else "",
                               "refit_every": 0})


def measure(pairs: int, per_image: int, dim: int, decisions: int, folder: Path) -> dict[str, float]:
    from core.benchmarks.review import _temporary_home, stand_in_run, synthetic_dataset
    from core.detect.consensus import CaptionSets, Space, look_alike_signals, text_signals
    from core.detect.pixels import dataset_pixel_features
    from core.detect.context import draw_swaps, matched_context
    from core.detect.method import refit
    from core.detect.signals import (Query, index_spaces, load_inputs, pair_view, pool_of, searched_pool,
                                     signal_matrix)
    from core.index import normalise
    from core.progress import Progress
    from core.store import Store
    from core.training import execute_run

    out: dict[str, float] = {}
    with _temporary_home(folder), Store.open() as store:
        ds = synthetic_dataset(store, folder / "synthetic", pairs, per_image, val=True)
        base = stand_in_run(store, ds, dim)
        frame = pair_view(store.pairs_frame(ds))
        inputs = load_inputs(store, ds, [store.run(base)], frame, None)
        pool = pool_of(frame, inputs)
        q_img = inputs.image_rows(frame["image_id"].to_numpy())
        q_cap = inputs.caption_rows(frame["caption_id"].to_numpy())
        searched = searched_pool(frame, inputs)          # as a concord run searches: the train split's pairs
        t0 = time.perf_counter()
        indexed = index_spaces(inputs, pool, searched)
        signal_matrix(inputs, pool, [Query(q_img, q_cap)], k=10, tau=5.0, indexed=indexed)
        out["signals_one_space_s"] = time.perf_counter() - t0
        (space_name, (_, run_captions)), = inputs.spaces.items()
        text = normalise(run_captions @ np.random.default_rng(0).normal(size=(run_captions.shape[1], 384)))
        t0 = time.perf_counter()
        text_signals(text, pool, q_img, q_cap, CaptionSets.build(text, searched))
        out["text_siblings_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dataset_pixel_features(store, ds, inputs.image_ids)
        out["pixels_decoded_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pixels = dataset_pixel_features(store, ds, inputs.image_ids)
        out["pixel_features_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pixel_space = Space.build(pixels, text, pool, joint=False, searched=searched)
        neighbours = pixel_space.neighbours(q_img, q_cap)
        pixel_space.signals(q_img, q_cap, neighbours=neighbours)
        out["pixel_signals_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        look_alike_signals(indexed[space_name], neighbours, q_img, q_cap)
        out["look_alikes_one_space_s"] = time.perf_counter() - t0
        train = (frame["split"] == "train").to_numpy()
        trusted = np.unique(q_img[(frame["split"] == "val").to_numpy()])     # a tenth of the images
        t0 = time.perf_counter()
        matched_context(draw_swaps(pool, trusted, run_captions), run_captions, q_img[train], q_cap[train])
        out["context_one_space_s"] = time.perf_counter() - t0

        fused = fused_run(store, "synthetic", base)
        t0 = time.perf_counter()
        execute_run(store, fused, Progress())
        out["concord_run_s"] = time.perf_counter() - t0
        out["context_spaces"] = float(len(store.run(fused).metrics["context"]))
        picked = frame.loc[train, "pair_id"].head(decisions).tolist()
        store.decide(ds, picked[::2], "reject", "bench")
        store.decide(ds, picked[1::2], "keep", "bench")
        t0 = time.perf_counter()
        refit(store, fused)
        out["refit_s"] = time.perf_counter() - t0
        out["labelled"] = float(sum(store.run(fused).metrics["fused"]["labelled"][k]
                                    for k in ("positives", "negatives", "constructed")))
    return out


def markdown(f: dict[str, float], command: str, pairs: int) -> str:
    return "\n".join([
        f"Command: `{command}` ({os.cpu_count()} CPU cores, {platform.machine()}; {pairs:,} pairs, seconds, "
        "once each).",
        "", "| step | seconds |", "|---|---|",
        f"| consensus signals of every pair (sibling margin included), one run's space | "
        f"{f['signals_one_space_s']:.1f} |",
        f"| sibling terms and sibling margin in a 384-d text space | {f['text_siblings_s']:.1f} |",
        f"| the pixel space's features, images decoded at 64 px first (once; a training run caches them) | "
        f"{f['pixels_decoded_s']:.1f} |",
        f"| the pixel space's features from the pixel cache (16×16 block means, 64 principal components) | "
        f"{f['pixel_features_s']:.1f} |",
        f"| neighbour terms in the pixel space (beside the 384-d text space) | {f['pixel_signals_s']:.1f} |",
        f"| look-alike terms of one run's space over the pixel space's neighbours | "
        f"{f['look_alikes_one_space_s']:.1f} |",
        f"| the swaps of the `val` images' captions (a tenth), and their context matched, in one space (a fused "
        f"run does it in each) | {f['context_one_space_s']:.1f} |",
        f"| a whole `concord` run over one base run (signals, constructed negatives, the trusted pairs' matched "
        f"context in {int(f['context_spaces'])} space(s), fit, scores written) | {f['concord_run_s']:.1f} |",
        f"| refit after the decisions ({int(f['labelled']):,} labelled rows; fit, predict, store update) | "
        f"{f['refit_s']:.2f} |"])


def run(args: argparse.Namespace, ctx) -> int:
    with tempfile.TemporaryDirectory(prefix="concord-bench-consensus-") as tmp:
        figures = measure(args.pairs, args.captions_per_image, args.dim, args.decisions, Path(tmp))
    command = (f"python -m core bench consensus --pairs {args.pairs} --captions-per-image {args.captions_per_image} "
               f"--dim {args.dim} --decisions {args.decisions}")
    text = markdown(figures, command, args.pairs)
    if not args.no_docs:
        write_section(f"consensus: {args.pairs}", "## Fused score at scale (`bench consensus`)\n\n" + text)
    print(json.dumps(figures) if args.json else text)
    return 0
