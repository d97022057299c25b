"""B0: the pretrained model's cosine score, no training (what LAION/DataComp filter with; methods.md §1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.methods.base import Method
from core.methods.config import AT_LEAST_1, MethodConfig, setting
from core.methods.encoder import DualEncoder
from core.mixtures import fit_gmm


@dataclass(frozen=True)
class B0Config(MethodConfig):
    """No training: `epochs` is ignored. clean_prob is the high-mean component's posterior of a GMM on the
    pretrained cosine scores of the training pairs."""

    epochs: int = setting(0, "B0 does not train (always 0)")
    gmm_max_iter: int = setting(100, "EM iterations of the score GMM", range=AT_LEAST_1)


class B0(Method):
    name = "b0"
    config_cls = B0Config

    def setup(self) -> None:
        self.model = self.ctx.make_encoder(self.ctx.seed)

    @property
    def encoder(self) -> DualEncoder:
        return self.model

    def train_batch(self, epoch: int, batch: np.ndarray) -> dict[str, float]:
        raise AssertionError("B0 does not train")

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def clean_scores(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        img, cap = self.embed_rows(self.model, self.data.image_row, self.data.caption_row)
        sim = np.einsum("nd,nd->n", img, cap).astype(np.float64)
        train = self.data.split == "train"
        fit = fit_gmm(sim[train], max_iter=self.config.gmm_max_iter, seed=self.ctx.seed)
        clean = fit.posterior(sim)[:, 1]
        return clean, clean.copy(), {}
