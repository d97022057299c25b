"""The frame every method plugs into: the epoch/batch loop, resumable checkpoints, and shared scoring.

A method subclasses `Method` and implements `setup` (build encoders and optimisers), `train_batch`, optional
hooks around epochs, `state`/`load_state` for what it adds to the checkpoint, and `clean_scores` (its
`clean_prob`, `weight` and extras). The base runs epochs in a seeded order, checkpoints at each epoch end,
at most every `checkpoint_every_s` mid-epoch and on cancel, resumes from the checkpoint exactly, and ends
by embedding every image and caption, scoring every pair and measuring retrieval on the clean `test` split.
"""
from __future__ import annotations

import math
import os
import random
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.artifacts import RunEmbeddings
from core.errors import Cancelled, ConcordError, weights_must_fit
from core.evaluate import recall_at_k
from core.methods.config import MethodConfig
from core.methods.data import TrainData
from core.methods.encoder import DualEncoder, Inputs
from core.methods.losses import clip_logits, per_sample_infonce
from core.progress import Progress


@dataclass
class MethodResult:
    """Per-pair outputs over all of `TrainData`'s pairs, the run's embeddings, and its metrics."""

    similarity: np.ndarray
    clean_prob: np.ndarray
    weight: np.ndarray
    extras: dict[str, np.ndarray]
    embeddings: RunEmbeddings
    metrics: dict[str, Any] = field(default_factory=dict)


class Checkpointer:
    """Saves and loads a run's checkpoint file atomically (a torch pickle of plain state)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = None if path is None else Path(path)

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)


@dataclass
class RunContext:
    """Everything a method needs besides its config."""

    data: TrainData
    inputs: Inputs
    make_encoder: Callable[[int], DualEncoder]   # a fresh encoder from a seed (co-training builds two)
    seed: int = 0
    progress: Progress = field(default_factory=Progress)
    checkpoint: Checkpointer = field(default_factory=lambda: Checkpointer(None))
    regime: str = "finetune"
    image_pretrained: bool = False   # the image tower starts from pretrained weights (NPC skips its warm-up)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def epoch_order(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """The seeded order of `index` for one epoch (the same on resume)."""
    return np.random.default_rng([seed, epoch]).permutation(index)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Method(ABC):
    """Base of every scoring method (see the module docstring)."""

    name: str = ""
    config_cls: type[MethodConfig] = MethodConfig

    def __init__(self, config: MethodConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.data = ctx.data
        self.inputs = ctx.inputs
        self.device = ctx.inputs.device
        self.step = 0
        self.epoch_log: list[dict[str, Any]] = []
        self.epoch_seconds: list[float] = []

    @classmethod
    def check_request(cls, config: MethodConfig, image_pretrained: bool) -> None:
        """Refuse settings this method cannot train with on a model whose image tower is (or is not) pretrained,
        before a run is created (what the config alone cannot tell; none by default)."""

    # ------------------------------------------------------------------ what a method implements
    @abstractmethod
    def setup(self) -> None:
        """Build encoders and optimisers (seeded from `ctx.seed`)."""

    @abstractmethod
    def train_batch(self, epoch: int, batch: np.ndarray) -> dict[str, float]:
        """One update on pair indices `batch`; returns metrics (at least `loss`)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything the method needs to resume: module and optimiser state dicts, arrays."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        ...

    @abstractmethod
    def clean_scores(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(clean_prob, weight, extras) for every pair, computed after training."""

    @property
    @abstractmethod
    def encoder(self) -> DualEncoder:
        """The trained encoder whose embeddings describe the run (similarity, neighbours, the map)."""

    def begin_epoch(self, epoch: int) -> None:
        """Hook before an epoch's first batch (e.g. clean selection, memory bank, purification)."""

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Hook after an epoch; returns extra summary figures."""
        return {}

    def epoch_pairs(self, epoch: int) -> np.ndarray:
        """The pair indices trained on in `epoch` (default: the training split)."""
        return self.data.train

    def retrieval_similarity(self, image_rows: np.ndarray, caption_rows: np.ndarray) -> np.ndarray:
        """(I, C) scores used to rank at evaluation (default: cosine under `encoder`)."""
        img, cap = self.embed_rows(self.encoder, image_rows, caption_rows)
        return img @ cap.T

    # ------------------------------------------------------------------ the loop
    def total_steps(self) -> int:
        per_epoch = math.ceil(len(self.data.train) / self.config.batch_size)
        return max(1, per_epoch * self.config.epochs)

    def set_lr(self, optimizer: torch.optim.Optimizer, peak: float | None = None) -> float:
        """Set the scheduled learning rate for the current step on `optimizer`; returns it."""
        lr = lr_at(self.step, self.total_steps(), self.config.lr if peak is None else peak, self.config.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _checkpoint(self, epoch: int, batch: int) -> None:
        self.ctx.checkpoint.save({
            "method": self.name, "config": asdict(self.config), "epoch": epoch, "batch": batch, "step": self.step,
            "epoch_log": self.epoch_log, "epoch_seconds": self.epoch_seconds, "rng": _rng_state(),
            "state": self.state(),
        })

    def run(self) -> MethodResult:
        """Train (resuming from the checkpoint when there is one), then score every pair."""
        torch.manual_seed(self.ctx.seed)
        random.seed(self.ctx.seed)
        self.setup()
        start_epoch, start_batch = 0, 0
        saved = self.ctx.checkpoint.load()
        if saved is not None:
            if saved.get("method") != self.name or saved.get("config") != asdict(self.config):
                raise ConcordError("the run's checkpoint was made with another method or config; cannot resume")
            with weights_must_fit("the run's checkpoint does not fit this version's model (its architecture "
                                  "changed since the run started); start a new run"):
                self.load_state(saved["state"])
            start_epoch, start_batch, self.step = saved["epoch"], saved["batch"], saved["step"]
            self.epoch_log, self.epoch_seconds = saved["epoch_log"], saved["epoch_seconds"]
            _set_rng_state(saved["rng"])
        progress = self.ctx.progress
        bs = self.config.batch_size
        for epoch in range(start_epoch, self.config.epochs):
            if start_batch == 0:
                self.begin_epoch(epoch)
            order = epoch_order(self.ctx.seed, epoch, self.epoch_pairs(epoch))
            n_batches = math.ceil(len(order) / bs)
            progress.start(f"epoch {epoch + 1}/{self.config.epochs}", n_batches, step=start_batch,
                           message=f"{self.name}: epoch {epoch + 1}/{self.config.epochs}")
            t0, last_save, losses = time.perf_counter(), time.monotonic(), []
            for b in range(start_batch, n_batches):
                try:
                    progress.check()
                except Cancelled:
                    self._checkpoint(epoch, b)
                    raise
                metrics = self.train_batch(epoch, order[b * bs:(b + 1) * bs])
                self.step += 1
                losses.append(metrics.get("loss", float("nan")))
                progress.advance(1, **metrics)
                if time.monotonic() - last_save > self.config.checkpoint_every_s and b + 1 < n_batches:
                    self._checkpoint(epoch, b + 1)
                    last_save = time.monotonic()
            start_batch = 0
            summary = {"epoch": epoch + 1, "loss": float(np.nanmean(losses)) if losses else None,
                       "pairs": int(len(order))} | self.end_epoch(epoch)
            self.epoch_seconds.append(time.perf_counter() - t0)
            self.epoch_log.append(summary)
            progress.epoch_done(**summary)
            self._checkpoint(epoch + 1, 0)
        return self.finish()

    def finish(self) -> MethodResult:
        """Embed everything, score every pair, measure retrieval on `test`."""
        self.ctx.progress.start("scoring", None, message=f"{self.name}: scoring every pair")
        image_emb, caption_emb = self.embed_rows(self.encoder, np.arange(len(self.data.image_ids)),
                                                 np.arange(len(self.data.caption_ids)))
        sim = np.einsum("nd,nd->n", image_emb[self.data.image_row], caption_emb[self.data.caption_row])
        clean_prob, weight, extras = self.clean_scores()
        metrics: dict[str, Any] = {"epochs": self.epoch_log,
                                   "seconds_per_epoch": (float(np.mean(self.epoch_seconds)) if self.epoch_seconds
                                                         else None)}
        retrieval = self.retrieval_on_test()
        if retrieval is not None:
            metrics["retrieval"] = retrieval
        emb = RunEmbeddings(self.data.image_ids, image_emb, self.data.caption_ids, caption_emb)
        return MethodResult(sim.astype(np.float64), clean_prob, weight, extras, emb, metrics)

    def retrieval_on_test(self) -> dict[str, float] | None:
        """Recall@K and rSum on the `test` split under the current model (None without a `test` split)."""
        test = self.data.split_index("test")
        if not len(test):
            return None
        img_rows, cap_img = np.unique(self.data.image_row[test], return_inverse=True)
        return recall_at_k(self.retrieval_similarity(img_rows, self.data.caption_row[test]), cap_img)

    # ------------------------------------------------------------------ shared helpers
    @torch.no_grad()
    def embed_rows(self, encoder: DualEncoder, image_rows: np.ndarray,
                   caption_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (numpy float32) of these image and caption rows, in eval mode."""
        was = encoder.training
        encoder.eval()
        bs = self.config.eval_batch_size
        img = [encoder.encode_image(self.inputs.image_batch(image_rows[i:i + bs])).cpu()
               for i in range(0, len(image_rows), bs)]
        cap = [encoder.encode_text(self.inputs.text_batch(caption_rows[i:i + bs])).cpu()
               for i in range(0, len(caption_rows), bs)]
        encoder.train(was)
        return torch.cat(img).numpy(), torch.cat(cap).numpy()

    def pair_logits(self, encoder: DualEncoder, pairs: np.ndarray) -> torch.Tensor:
        """B×B logits of the batch of pair indices `pairs` (with gradient when enabled)."""
        img = encoder.encode_image(self.inputs.image_batch(self.data.image_row[pairs]))
        txt = encoder.encode_text(self.inputs.text_batch(self.data.caption_row[pairs]))
        return clip_logits(img, txt, encoder.logit_scale)

    @torch.no_grad()
    def per_sample_losses(self, encoder: DualEncoder, index: np.ndarray, seed: int) -> np.ndarray:
        """Per-sample InfoNCE of the pairs `index`, each computed within a random batch of the training batch
        size (the loss NCR's and NPC's GMM splits fit), in eval mode. Returned in the order of `index`."""
        was = encoder.training
        encoder.eval()
        order = np.random.default_rng([seed, 7919]).permutation(len(index))
        out = np.empty(len(index), np.float64)
        bs = self.config.batch_size
        for i in range(0, len(order), bs):
            pos = order[i:i + bs]
            out[pos] = per_sample_infonce(self.pair_logits(encoder, index[pos])).double().cpu().numpy()
        encoder.train(was)
        return out
