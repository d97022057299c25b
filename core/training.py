"""Runs: create one from a request, and execute (or resume) it against the store.

`start_run` validates a request (dataset, method, model, regime, settings) and records a queued run;
`execute_run` loads the cached inputs the run needs (computing what is missing), trains the method in the
calling thread with a resumable checkpoint, and writes the per-pair scores, the run's embeddings and its
metrics. The job runner calls `execute_run` on a background thread; the CLI waits for it.
"""
from __future__ import annotations

import traceback
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from core import artifacts
from core.errors import Cancelled, ConcordError
from core.evaluate import evaluate_run
from core.index import RunNeighbours
from core.meta_seed import DEFAULT_TRUSTED_SPLIT, ensure_seed, usable_split
from core.methods import make_config, method_class, spec
from core.methods.base import Checkpointer, Method, RunContext
from core.methods.data import MetaData, TrainData
from core.methods.encoder import DualEncoder, Inputs, ResidualHead
from core.models import DEFAULT_MODEL, LoadedModel, load_model, model_info, resolve_device
from core.progress import Progress

REGIMES = ("features", "finetune")
DEFAULT_METHOD = "b1"
META_SEED_SPLIT = DEFAULT_TRUSTED_SPLIT
META_SEED_FRACTION = 0.02


def default_regime(model: str) -> str:
    """`finetune` for a tower trained from scratch (concord-tiny) or on a GPU; `features` for a pretrained
    tower on the CPU."""
    if not model_info(model).image_pretrained:
        return "finetune"
    return "finetune" if torch.cuda.is_available() else "features"


def check_request(method: str, model: str, values: dict[str, Any], store=None, dataset_id: int | None = None):
    """The method's config from `values`, after refusing what it cannot train or score with, before a run exists:
    a model it cannot use (b0 needs a pretrained image tower), a setting out of range, what the method refuses
    on that model (NPC's warm-up, `Method.check_request`) and, given the dataset, a fused score's trusted split
    it lacks or cannot trust."""
    info = model_info(model)
    if spec(method).needs_pretrained and not info.image_pretrained:
        raise ConcordError(f"{method} scores with a pretrained model, and {model}'s image tower is not pretrained; "
                           "pick an open_clip model (e.g. open_clip:ViT-B-32:openai) or another method")
    config = make_config(method, values)
    trainer = method_class(method)
    if issubclass(trainer, Method):
        trainer.check_request(config, info.image_pretrained)
    if store is not None and hasattr(config, "trusted_split"):
        usable_split(store, dataset_id, config.trusted_split)
    return config


def start_run(store, dataset: str, method: str = DEFAULT_METHOD, *, model: str = DEFAULT_MODEL,
              regime: str | None = None, device: str = "auto", seed: int = 0, epochs: int | None = None,
              settings: dict[str, Any] | None = None, threshold: float = 0.5,
              meta_split: str = META_SEED_SPLIT, meta_fraction: float = META_SEED_FRACTION) -> int:
    """Validate a run request and record it as `queued`; returns the run id.

    Methods that read the meta-data get a seed of trusted positives drawn from `meta_split` (default `val`,
    `meta_fraction` of the training size) when the dataset has no seed yet: none for '' or when the dataset has no
    `val`; another split it lacks, or `train` / `test`, is refused (`core.meta_seed.usable_split`)."""
    ds = store.dataset(dataset)
    values = dict(settings or {})
    if epochs is not None:
        values["epochs"] = epochs
    config = check_request(method, model, values, store, ds.id)
    info = model_info(model)
    regime = regime or default_regime(model)
    if regime not in REGIMES:
        raise ConcordError(f"unknown regime {regime!r} (choose {' or '.join(REGIMES)})")
    if regime == "features" and not info.image_pretrained:
        raise ConcordError(f"the features regime trains heads on pretrained image features, and {model}'s image "
                           "tower is trained from scratch: use --regime finetune")
    resolve_device(device)
    if not 0.0 <= threshold <= 1.0:
        raise ConcordError(f"threshold must be within [0, 1], got {threshold}")
    if store.pairs_frame(ds.id, split="train").empty:
        raise ConcordError(f"dataset {dataset!r} has no pairs in the 'train' split to train on")
    if spec(method).uses_meta and usable_split(store, ds.id, meta_split):
        ensure_seed(store, ds.id, meta_split, meta_fraction, seed)
    return store.create_run(ds.id, method, model, regime=regime, device=device, seed=seed, config=asdict(config),
                            threshold=threshold)


def _rows(known_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in `known_ids` of `wanted` ids (all present)."""
    order = np.argsort(known_ids, kind="stable")
    pos = order[np.searchsorted(known_ids[order], wanted)]
    assert np.array_equal(known_ids[pos], wanted), "an input is missing from the feature cache"
    return pos


def build_data(pairs: pd.DataFrame, meta: pd.DataFrame, image_ids: np.ndarray, caption_ids: np.ndarray) -> TrainData:
    """TrainData from the store's frames and the id order of the cached inputs."""
    image_row = _rows(image_ids, pairs["image_id"].to_numpy(np.int64))
    caption_row = _rows(caption_ids, pairs["caption_id"].to_numpy(np.int64))
    index_of_pair = {int(p): i for i, p in enumerate(pairs["pair_id"])}
    meta_pairs = meta["pair_id"].to_numpy()
    data_meta = MetaData(
        image_row=_rows(image_ids, meta["image_id"].to_numpy(np.int64)),
        caption_row=_rows(caption_ids, meta["caption_id"].to_numpy(np.int64)),
        label=meta["label"].to_numpy(np.int64),
        pair_index=np.array([index_of_pair.get(int(p), -1) if pd.notna(p) else -1 for p in meta_pairs], np.int64))
    noisy = pairs["is_noisy"].map(lambda v: np.nan if pd.isna(v) else float(bool(v))).to_numpy(np.float64)
    return TrainData(pair_ids=pairs["pair_id"].to_numpy(np.int64), image_row=image_row, caption_row=caption_row,
                     split=pairs["split"].to_numpy(str), is_noisy=noisy, image_ids=np.asarray(image_ids, np.int64),
                     caption_ids=np.asarray(caption_ids, np.int64), meta=data_meta)


def encoder_factory(loaded: LoadedModel, regime: str, image_dim: int, text_dim: int, device: torch.device):
    """`seed -> DualEncoder` for the regime: `finetune` trains the image tower itself (and a text head on the
    cached text features); `features` trains residual heads on both cached feature sets."""
    embed = loaded.info.embed_dim

    def make(seed: int) -> DualEncoder:
        torch.manual_seed(seed)
        if regime == "finetune":
            fresh = load_model(loaded.info.name, str(device), seed=seed)
            image_tower = fresh.model.visual
            text_tower = fresh.cached_text_head() or ResidualHead(text_dim, embed)
        else:
            image_tower = ResidualHead(image_dim, embed)
            text_tower = ResidualHead(text_dim, embed)
        return DualEncoder(image_tower, text_tower).to(device)

    return make


def prepare(store, run, progress: Progress) -> RunContext:
    """Load (computing what is missing) the run's cached inputs and wrap them for the method."""
    from core.features import image_features, image_pixels, text_features
    device = resolve_device(run.device or "auto")
    loaded = load_model(run.model, str(device), seed=run.seed or 0)
    texts = text_features(store, run.dataset_id, run.model, str(device), progress=progress)
    if run.regime == "finetune":
        images = image_pixels(store, run.dataset_id, loaded.info.image_size, progress=progress)
    else:
        images = image_features(store, run.dataset_id, run.model, str(device), progress=progress)
    data = build_data(store.pairs_frame(run.dataset_id), store.meta_frame(run.dataset_id), images.ids, texts.ids)
    inputs = Inputs(torch.from_numpy(np.ascontiguousarray(images.values)).to(device),
                    torch.from_numpy(np.ascontiguousarray(texts.values, dtype=np.float32)).to(device),
                    mean=tuple(loaded.mean), std=tuple(loaded.std))
    make = encoder_factory(loaded, run.regime, images.values.shape[-1], texts.values.shape[-1], device)
    return RunContext(data=data, inputs=inputs, make_encoder=make, seed=run.seed or 0, progress=progress,
                      checkpoint=Checkpointer(artifacts.checkpoint_path(run)), regime=run.regime,
                      image_pretrained=loaded.info.image_pretrained)


def execute_run(store, run_id: int, progress: Progress) -> None:
    """Run or resume run `run_id` in this thread: finished (scores, embeddings, neighbour index, metrics
    written), cancelled (checkpoint kept; resumable) or failed (error stored, then raised)."""
    run = store.run(run_id)
    if run.state == "finished":
        raise ConcordError(f"run {run_id} has already finished")
    store.update_run(run_id, state="running", error=None)
    try:
        config = make_config(run.method, run.config)
        # scores from the dataset's finished runs; any base run it trains is a run of its own
        if spec(run.method).scorer:
            result = method_class(run.method)(config, store, run, progress).run()
            pair_ids = store.pairs_frame(run.dataset_id)["pair_id"].to_numpy(np.int64)
        else:
            ctx = prepare(store, run, progress)
            result = method_class(run.method)(config, ctx).run()
            pair_ids = ctx.data.pair_ids
        progress.check()
        store.write_scores(run_id, pair_ids, result.similarity, result.clean_prob, result.weight, result.extras)
        artifacts.save_embeddings(store.run(run_id), result.embeddings)
        RunNeighbours.build_for_run(store, run_id, progress)   # Review's suggestions, ready when the run is
        store.update_run(run_id, metrics=result.metrics)
        detection = {k: v for k, v in evaluate_run(store, run_id).items()
                     if k in ("truth", "auroc", "auprc", "precision", "recall", "f1", "flagged")}
        store.update_run(run_id, state="finished", metrics=result.metrics | {"detection": detection},
                         progress=progress.snapshot())
    except Cancelled:
        store.update_run(run_id, state="cancelled", progress=progress.snapshot())
        raise
    except BaseException as exc:
        store.update_run(run_id, state="failed", progress=progress.snapshot(),
                         error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        raise
