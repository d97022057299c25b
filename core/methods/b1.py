"""B1: plain symmetric InfoNCE on every training pair, then NCR's per-sample loss split (methods.md §1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.methods.base import Method
from core.methods.config import AT_LEAST_1, MethodConfig, setting
from core.methods.encoder import DualEncoder
from core.methods.losses import per_sample_infonce
from core.mixtures import loss_split_clean_prob


@dataclass(frozen=True)
class B1Config(MethodConfig):
    """Plain contrastive training; the clean probability comes from a 2-component GMM on per-sample losses."""

    gmm_max_iter: int = setting(10, "EM iterations of the loss-split GMM (NCR: 10)", range=AT_LEAST_1)


def make_adamw(params, config: MethodConfig, betas: tuple[float, float] = (0.9, 0.98),
               eps: float = 1e-6) -> torch.optim.AdamW:
    """AdamW with CLIP's betas and eps (the papers' setting); the learning rate is set per step."""
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=config.lr, betas=betas, eps=eps,
                             weight_decay=config.weight_decay)


class B1(Method):
    name = "b1"
    config_cls = B1Config

    def setup(self) -> None:
        self.model = self.ctx.make_encoder(self.ctx.seed)
        self.opt = make_adamw(self.model.parameters(), self.config)

    @property
    def encoder(self) -> DualEncoder:
        return self.model

    def train_batch(self, epoch: int, batch: np.ndarray) -> dict[str, float]:
        self.model.train()
        lr = self.set_lr(self.opt)
        loss = per_sample_infonce(self.pair_logits(self.model, batch)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.opt.step()
        return {"loss": float(loss.detach()), "lr": lr}

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def clean_scores(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        everything = np.arange(len(self.data))
        losses = self.per_sample_losses(self.model, everything, self.ctx.seed)
        train = self.data.split == "train"
        clean = loss_split_clean_prob(losses, fit_on=train, max_iter=self.config.gmm_max_iter, seed=self.ctx.seed)
        return clean, clean.copy(), {"loss": losses}
