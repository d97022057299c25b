"""A small synthetic training problem for engine tests: features-regime inputs with known noisy pairs.

Images and captions are noisy views of shared latent concepts; a fraction of training pairs get the caption
of another concept. Methods train on it in seconds on the CPU.
"""
from __future__ import annotations

import numpy as np
import torch

from core.methods.base import Checkpointer, RunContext
from core.methods.data import MetaData, TrainData
from core.methods.encoder import DualEncoder, Inputs, ResidualHead
from core.progress import Progress


def synthetic_problem(n_images: int = 120, caps_per_image: int = 2, noise: float = 0.4, dim: int = 16,
                      seed: int = 0, n_meta: int = 20) -> tuple[TrainData, Inputs]:
    """Images in splits train (70%), val (15%), test (15%); noise only in train; meta positives from val."""
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(n_images, dim))
    img_feats = concepts + 0.6 * rng.normal(size=concepts.shape)
    n_caps = n_images * caps_per_image
    cap_concept = np.repeat(np.arange(n_images), caps_per_image)
    cap_feats = concepts[cap_concept] + 0.6 * rng.normal(size=(n_caps, dim))
    split_of_image = np.array(["train"] * int(0.7 * n_images) + ["val"] * int(0.15 * n_images)
                              + ["test"] * (n_images - int(0.7 * n_images) - int(0.15 * n_images)))
    image_row = cap_concept.copy()
    caption_row = np.arange(n_caps)
    split = split_of_image[image_row]
    is_noisy = np.zeros(n_caps)
    train = np.flatnonzero(split == "train")
    chosen = rng.choice(train, int(noise * len(train)), replace=False)
    shifted = np.roll(chosen, 1)
    for k, src in zip(chosen, shifted):
        if cap_concept[src] != image_row[k]:
            caption_row[k] = src
            is_noisy[k] = 1.0
    val = np.flatnonzero(split == "val")[:n_meta]
    meta = MetaData(image_row[val], caption_row[val], np.ones(len(val), np.int64), val.astype(np.int64))
    data = TrainData(pair_ids=np.arange(n_caps) + 1, image_row=image_row, caption_row=caption_row, split=split,
                     is_noisy=is_noisy, image_ids=np.arange(n_images) + 100, caption_ids=np.arange(n_caps) + 1000,
                     meta=meta)
    inputs = Inputs(torch.tensor(img_feats, dtype=torch.float32), torch.tensor(cap_feats, dtype=torch.float32))
    return data, inputs


def context(data: TrainData, inputs: Inputs, seed: int = 0, checkpoint: str | None = None,
            progress: Progress | None = None, dim: int = 16) -> RunContext:
    def make_encoder(s: int) -> DualEncoder:
        torch.manual_seed(s)
        return DualEncoder(ResidualHead(inputs.images.shape[1], dim, 32), ResidualHead(inputs.texts.shape[1], dim, 32))
    return RunContext(data=data, inputs=inputs, make_encoder=make_encoder, seed=seed,
                      progress=progress or Progress(), checkpoint=Checkpointer(checkpoint), regime="features")


def cancelled_then_resumed(make, checkpoint, stage: str = "epoch 2", step: int = 1, on_cancel=lambda: None):
    """Run `make()` uninterrupted; then run `make(checkpoint=…, progress=…)` cancelled at `step` of `stage`, call
    `on_cancel()` (checks on what the cancel left) and resume with `make(checkpoint=…)`. Returns (uninterrupted
    result, resumed result)."""
    from core.errors import Cancelled

    whole = make().run()

    def cancel(p: Progress) -> None:
        if p.stage.startswith(stage) and p.step >= step:
            p.cancel()
    try:
        make(checkpoint=checkpoint, progress=Progress(listener=cancel)).run()
    except Cancelled:
        pass
    else:
        raise AssertionError(f"the run was not cancelled at step {step} of {stage}")
    on_cancel()
    return whole, make(checkpoint=checkpoint).run()
