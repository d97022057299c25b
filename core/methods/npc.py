"""NPC, Negative Pre-aware Cross-modal matching (Zhang et al., AAAI 2024), as methods.md §2 specifies.

Before a batch updates the model A, a long-lived siamese copy A′ (refreshed with A's weights, with its own
persistent AdamW) takes one step on the batch; the change in the losses of each sample's trusted neighbours
(its I- and T-entries in a memory bank of clean pairs) gives the sample's negative impact `r` and weight `w`.
A then learns from `mean(w·l) + L_MB`. A tower trained from scratch first gets plain warm-up epochs (B1's
training, which NPC extends); the scores end with B1's loss split (GMM posterior) under the final model.

Forward passes are shared where the values are equal: A′ before its step is A, so the entries' `L0` come from
A (eval mode), and A′'s step reuses A's training forward of the batch (its gradient is taken first and the
graph kept). For towers without train/eval differences (no dropout, no batch norm: the `features` heads) one
forward of batch and entries with gradient also gives `L0`. `npc_released_behaviour=True` reproduces the
released code's arithmetic: one batch-mean weight and an `L_MB` without gradient.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ConcordError
from core.index import nearest_neighbours
from core.methods.base import MethodResult
from core.methods.b1 import B1, B1Config, make_adamw
from core.methods.config import ABOVE_0, AT_LEAST_0, AT_LEAST_1, Range, setting
from core.methods.data import TrainData
from core.methods.encoder import DualEncoder, ResidualHead
from core.methods.losses import clip_logits, per_sample_infonce
from core.mixtures import loss_split_clean_prob


# ---------------------------------------------------------------------------------------------- pure math
def npc_weight(r: torch.Tensor) -> torch.Tensor:
    """`w = tanh(r)` where `r < 1`, else exactly 1 (§2.4e)."""
    return torch.where(r < 1, torch.tanh(r), torch.ones_like(r))


def negative_impact(l0_i: torch.Tensor, l1_i: torch.Tensor, l0_t: torch.Tensor, l1_t: torch.Tensor,
                    eps: float) -> torch.Tensor:
    """`r = (L0_I / (L1_I + ε) + L0_T / (L1_T + ε)) / 2`: the entries' losses before over after A′'s step
    (below 1 when learning the batch raised the loss of the sample's trusted neighbours)."""
    return (l0_i / (l1_i + eps) + l0_t / (l1_t + eps)) / 2


def npc_objective(l: torch.Tensor, w: torch.Tensor, l_mb: torch.Tensor, released: bool = False) -> torch.Tensor:
    """A's loss from per-sample losses `l`, weights `w` (no gradient) and the memory-bank loss `l_mb` (scalar).
    Paper: `mean(w·l) + L_MB`; released code: `mean(w)·mean(l) + L_MB` with L_MB detached."""
    w = w.detach()
    if released:
        return w.mean() * l.mean() + l_mb.detach()
    return (w * l).mean() + l_mb


def memory_entries(image_emb: np.ndarray, caption_emb: np.ndarray, clean: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's I-entry (the clean row, other than itself, whose image is most similar by cosine) and
    T-entry (likewise by caption), as row indices; −1 where no other row is clean (faiss search)."""
    i_entry, _ = nearest_neighbours(image_emb, 1, exclude_self=True, candidates=np.asarray(clean, bool))
    t_entry, _ = nearest_neighbours(caption_emb, 1, exclude_self=True, candidates=np.asarray(clean, bool))
    return i_entry[:, 0], t_entry[:, 0]


_MODE_FREE = (DualEncoder, ResidualHead, nn.Linear, nn.GELU, nn.ReLU, nn.Identity, nn.Sequential, nn.LayerNorm)


def mode_invariant(module: nn.Module) -> bool:
    """True when `module` computes the same in train and eval mode (only layers known to, dropout with p=0)."""
    return all(type(m) in _MODE_FREE or (isinstance(m, nn.Dropout) and m.p == 0) for m in module.modules())


# ---------------------------------------------------------------------------------------------- the bank's pairs
@dataclass(frozen=True)
class BankPool:
    """The pairs the memory bank may hold: the training pairs (rows 0..n_train−1, in `TrainData.train` order)
    then the meta-data positives that are no training pair. `forced` is True (always clean: meta positives),
    False (never: meta negatives) or unset (the GMM decides), encoded as 1 / 0 / −1."""

    image_row: np.ndarray
    caption_row: np.ndarray
    n_train: int
    forced: np.ndarray

    @classmethod
    def from_data(cls, data: TrainData) -> "BankPool":
        train, meta = data.train, data.meta
        width = max(len(data.caption_ids), 1)
        key = lambda img, cap: np.asarray(img, np.int64) * width + np.asarray(cap, np.int64)  # noqa: E731
        train_key = key(data.image_row[train], data.caption_row[train])
        pos_key = np.unique(key(meta.image_row[meta.positives], meta.caption_row[meta.positives]))
        neg_key = key(meta.image_row[meta.negatives], meta.caption_row[meta.negatives])
        extra = pos_key[~np.isin(pos_key, train_key)]
        all_key = np.concatenate([train_key, extra])
        forced = np.where(np.isin(all_key, pos_key), 1, -1)
        forced[np.isin(all_key, neg_key)] = 0          # a negative is never clean, even when also labelled positive
        return cls(all_key // width, all_key % width, len(train), forced.astype(np.int8))

    def clean(self, train_clean: np.ndarray) -> np.ndarray:
        """The clean mask over the pool from the GMM's verdict on the training pairs, with the meta-data's."""
        verdict = np.concatenate([np.asarray(train_clean, bool), np.ones(len(self) - self.n_train, bool)])
        return np.where(self.forced >= 0, self.forced == 1, verdict)

    def __len__(self) -> int:
        return len(self.image_row)


# ---------------------------------------------------------------------------------------------- the method
@dataclass(frozen=True)
class NPCConfig(B1Config):
    """NPC's settings (methods.md §2); the shared ones (epochs, lr, batch size, …) as every method's."""

    gmm_max_iter: int = setting(100, "EM iterations of the clean-selection GMM (NPC: 100)", range=AT_LEAST_1)
    tau: float = setting(0.9, "a pair is clean for the memory bank when its low-loss posterior exceeds this",
                         range=Range(0, 1, low_open=True, high_open=True))
    warmup_epochs: int = setting(1, "plain contrastive epochs first when the image tower is trained from scratch "
                                    "(none for a pretrained tower); epochs must exceed it", range=AT_LEAST_0)
    rebuild_bank: bool = setting(False, "re-select the clean set and rebuild the memory bank every epoch "
                                        "(the paper builds it once)")
    eps: float = setting(1e-6, "ε in r = (L0_I/(L1_I+ε) + L0_T/(L1_T+ε)) / 2", range=ABOVE_0)
    npc_released_behaviour: bool = setting(False, "the released code's arithmetic: batch-mean weight, memory-bank "
                                                  "loss without gradient (for comparison)")


class NPC(B1):
    name = "npc"
    config_cls = NPCConfig

    @classmethod
    def check_request(cls, config: NPCConfig, image_pretrained: bool) -> None:
        warmup = 0 if image_pretrained else config.warmup_epochs
        if config.epochs <= warmup:
            raise ConcordError(f"NPC trains {warmup} warm-up epoch(s) first (the image tower is trained from "
                               f"scratch): epochs must be at least {warmup + 1}, got {config.epochs}")

    def setup(self) -> None:
        cfg = self.config
        self.check_request(cfg, self.ctx.image_pretrained)
        self.warmup = 0 if self.ctx.image_pretrained else cfg.warmup_epochs
        super().setup()
        self.siamese = copy.deepcopy(self.model)
        self.siamese_opt = make_adamw(self.siamese.parameters(), cfg)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._siamese_params = [p for p in self.siamese.parameters() if p.requires_grad]
        self._refresh = list(zip(self.siamese.state_dict().values(), self.model.state_dict().values()))
        self._shared = mode_invariant(self.model)
        self.pool = BankPool.from_data(self.data)
        self.pool_row = np.full(len(self.data), -1, np.int64)
        self.pool_row[self.data.train] = np.arange(self.pool.n_train)
        self.clean = np.zeros(len(self.pool), bool)
        self.i_entry = np.full(len(self.pool), -1, np.int64)
        self.t_entry = np.full(len(self.pool), -1, np.int64)
        self.w = np.ones(len(self.data))
        self.r = np.full(len(self.data), np.nan)

    # ------------------------------------------------------------------ clean set and memory bank
    def begin_epoch(self, epoch: int) -> None:
        if epoch == self.warmup or (epoch > self.warmup and self.config.rebuild_bank):
            self.build_bank(epoch)

    def build_bank(self, epoch: int) -> None:
        """Clean selection (per-sample loss, min-max, GMM, posterior > tau, meta-data forced) and each pair's
        I-/T-entries under the current model."""
        losses = self.per_sample_losses(self.model, self.data.train, self.ctx.seed + epoch)
        posterior = loss_split_clean_prob(losses, max_iter=self.config.gmm_max_iter, seed=self.ctx.seed)
        self.clean = self.pool.clean(posterior > self.config.tau)
        img_rows, img_inv = np.unique(self.pool.image_row, return_inverse=True)
        cap_rows, cap_inv = np.unique(self.pool.caption_row, return_inverse=True)
        img, cap = self.embed_rows(self.model, img_rows, cap_rows)
        self.i_entry, self.t_entry = memory_entries(img[img_inv], cap[cap_inv], self.clean)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        if epoch < self.warmup:
            return {"warmup": True}
        train = self.data.train
        return {"clean_in_bank": int(self.clean.sum()), "mean_w": float(self.w[train].mean()),
                "share_w_below_1": float((self.w[train] < 1).mean())}

    # ------------------------------------------------------------------ one batch
    def _plan(self, i_uni: np.ndarray, t_uni: np.ndarray, batch: np.ndarray | None = None) -> tuple:
        """The distinct image and caption rows of the I-entries' batch, the T-entries' batch (and the training
        batch), each encoded once per forward, with where each batch's items sit among them."""
        sets = [i_uni, t_uni]
        img = [self.pool.image_row[i_uni], self.pool.image_row[t_uni]]
        cap = [self.pool.caption_row[i_uni], self.pool.caption_row[t_uni]]
        if batch is not None:
            sets.append(batch)
            img.append(self.data.image_row[batch])
            cap.append(self.data.caption_row[batch])
        img_rows, img_at = np.unique(np.concatenate(img), return_inverse=True)
        cap_rows, cap_at = np.unique(np.concatenate(cap), return_inverse=True)
        bounds = np.cumsum([0] + [len(x) for x in sets])
        dev = self.device
        return (img_rows, torch.as_tensor(img_at.ravel(), device=dev), cap_rows,
                torch.as_tensor(cap_at.ravel(), device=dev), bounds)

    def _entry_losses(self, encoder: DualEncoder, plan: tuple) -> tuple[torch.Tensor, ...]:
        """Per-item losses of each batch of `plan` (I-entries, T-entries, [training batch]), each its own B×B
        batch, from one forward of the distinct images and captions."""
        img_rows, img_at, cap_rows, cap_at, bounds = plan
        img = encoder.encode_image(self.inputs.image_batch(img_rows))[img_at]
        txt = encoder.encode_text(self.inputs.text_batch(cap_rows))[cap_at]
        return tuple(per_sample_infonce(clip_logits(img[a:b], txt[a:b], encoder.logit_scale))
                     for a, b in zip(bounds[:-1], bounds[1:]))

    def _siamese_step(self, grads: tuple[torch.Tensor | None, ...]) -> None:
        """A′ ← A (weights and buffers), then one step of A′'s own AdamW with `grads` (A′'s gradient at A)."""
        with torch.no_grad():
            for s, a in self._refresh:
                s.copy_(a)
        for p, g in zip(self._siamese_params, grads):
            p.grad = g
        self.siamese_opt.step()

    def train_batch(self, epoch: int, batch: np.ndarray) -> dict[str, float]:
        if epoch < self.warmup:
            return super().train_batch(epoch, batch)
        cfg = self.config
        rows = self.pool_row[batch]
        has = (self.i_entry[rows] >= 0) & (self.t_entry[rows] >= 0)
        if not has.any():       # no trusted neighbours (an empty bank): nothing to pre-aware, a plain update
            self.w[batch], self.r[batch] = 1.0, np.nan
            return super().train_batch(epoch, batch)
        lr = self.set_lr(self.opt)
        self.set_lr(self.siamese_opt)
        i_uni, i_inv = np.unique(self.i_entry[rows][has], return_inverse=True)
        t_uni, t_inv = np.unique(self.t_entry[rows][has], return_inverse=True)
        model = self.model
        entries = self._plan(i_uni, t_uni)
        if self._shared:        # train == eval: one forward gives l, L_MB and (detached) L0
            model.train()
            mb_i, mb_t, l = self._entry_losses(model, self._plan(i_uni, t_uni, batch))
            l0_i, l0_t = mb_i.detach(), mb_t.detach()
        else:                   # L0 with A in eval mode (= A′ before its step), then A's training forward
            model.eval()
            with torch.no_grad():
                l0_i, l0_t = self._entry_losses(model, entries)
            model.train()
            l = per_sample_infonce(self.pair_logits(model, batch))
        grads = torch.autograd.grad(l.mean(), self._params, retain_graph=True, allow_unused=True)
        self._siamese_step(grads)
        self.siamese.eval()
        with torch.no_grad():
            l1_i, l1_t = self._entry_losses(self.siamese, entries)
        i_inv, t_inv = torch.as_tensor(i_inv, device=l.device), torch.as_tensor(t_inv, device=l.device)
        r = torch.ones(len(batch), device=l.device)
        has_t = torch.as_tensor(has, device=l.device)
        r[has_t] = negative_impact(l0_i[i_inv], l1_i[i_inv], l0_t[t_inv], l1_t[t_inv], cfg.eps)
        w = npc_weight(r)
        if cfg.npc_released_behaviour:
            mb_i, mb_t = l0_i, l0_t    # released: L_MB is a constant; its value is A's (= L0) entry loss
        elif not self._shared:
            mb_i, mb_t = self._entry_losses(model, entries)
        per_entry = (mb_i[i_inv] + mb_t[t_inv]) / 2
        l_mb = per_entry.mean() if len(per_entry) else l.new_zeros(())
        loss = npc_objective(l, w, l_mb, cfg.npc_released_behaviour)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.w[batch] = w.detach().cpu().numpy()
        self.r[batch] = np.where(has, r.detach().cpu().numpy(), np.nan)
        return {"loss": float(loss.detach()), "l_mb": float(l_mb.detach()), "mean_w": float(w.mean()), "lr": lr}

    # ------------------------------------------------------------------ state and outputs
    def state(self) -> dict[str, Any]:
        return super().state() | {
            "siamese": self.siamese.state_dict(), "siamese_opt": self.siamese_opt.state_dict(),
            "clean": self.clean.copy(), "i_entry": self.i_entry.copy(), "t_entry": self.t_entry.copy(),
            "w": self.w.copy(), "r": self.r.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.siamese.load_state_dict(state["siamese"])
        self.siamese_opt.load_state_dict(state["siamese_opt"])
        self.clean, self.i_entry, self.t_entry = state["clean"], state["i_entry"], state["t_entry"]
        self.w, self.r = state["w"], state["r"]

    def finish(self) -> MethodResult:
        """B1's outputs, plus the mean seconds of the NPC epochs alone (the warm-up epochs cost a B1 epoch)."""
        result = super().finish()
        npc_epochs = self.epoch_seconds[self.warmup:]
        result.metrics["seconds_per_npc_epoch"] = float(np.mean(npc_epochs)) if npc_epochs else None
        return result

    def clean_scores(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """clean_prob: B1's loss split (NPC's GMM settings) under the final model; weight: each pair's last w."""
        clean, _, _ = super().clean_scores()
        return clean, self.w.copy(), {"r": self.r.copy()}
