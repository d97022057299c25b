"""MSCN: Meta Similarity Correction Network (Han et al., CVPR 2023; methods.md §3).

A small head `MSCN(v) = sigmoid(MLP(v))` over the pair representation `v = f̂ ⊙ ĝ` is the model's similarity:
its B×B output is the score matrix of the ranking loss and of retrieval. After a warm-up it is trained by a
bi-level step on the trusted meta-data (the store's one table: review decisions, imports, the seed):
a virtual SGD step of the encoders through `torch.func.functional_call` (`create_graph=True`), the meta BCE
of the virtually updated model, an Adam step on the head, then the real step on the encoders with the head
frozen. Every epoch after warm-up, a 2-component Beta mixture initialised from the meta scores splits the
training pairs, and the suspected ones sit out the next epoch. Optionally two networks purify for each other.

Outputs: `weight` = the MSCN score `p`, `clean_prob` = the Beta-mixture posterior, extras `{"mscn": p}`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from core.errors import ConcordError
from core.methods.b1 import make_adamw
from core.methods.base import Method
from core.methods.config import AT_LEAST_0, AT_LEAST_1, MethodConfig, Range, setting
from core.methods.encoder import DualEncoder
from core.methods.losses import per_sample_infonce
from core.mixtures import fit_beta_mixture

MAIN_LOSSES = ("hinge", "infonce")
VIRTUAL_PARAMS = ("last", "all")
HOW_TO_ADD_META = ("add trusted pairs: `python -m core meta NAME seed --split val` (a clean split), "
                   "`python -m core meta NAME import --split S` or `--csv FILE`, or Keep/Reject pairs in Review")


@dataclass(frozen=True)
class MSCNConfig(MethodConfig):
    """MSCN's settings. `main_loss` defaults to weighted InfoNCE: with a tower trained from scratch (concord-tiny,
    a 200-image demo at 40% hard noise) the paper's hardest-negative hinge saturated the head (p ≈ 0.98 for every
    pair, detection AUROC 0.52), InfoNCE kept it spread (AUROC 0.64). Other defaults follow the paper, except
    `meta_lr` (1e-3: 1e-4 left the head unmoved in a few hundred steps), `virtual_params` (cost) and
    `warmup_epochs` (2 of the 8 default epochs, against the paper's 5 of about 40: on the demo, over 3 seeds, it
    separates better than 1 at both noise kinds and ratios, and retrieves far better at 60% random swaps;
    docs/benchmarks.md) and `co_training`, on by default on every device, whereas methods.md §3.7 has it off on the
    CPU: with one network MSCN only levels b1 with near-miss noise, two that purify for each other separate and
    retrieve better, and an epoch still costs under the 4× a b1 epoch that issue #8 allows (docs/benchmarks.md)."""

    grad_clip: float = setting(2.0, "clip the gradient norm of each encoder update at this value (MSCN: 2.0)",
                               range=AT_LEAST_0)
    warmup_epochs: int = setting(2, "epochs of plain training (score 1 for every pair) before the meta steps",
                                 range=AT_LEAST_0)
    main_loss: str = setting("infonce", "the main loss over the MSCN score matrix: weighted InfoNCE, or the paper's "
                             "hinge with the hardest negative and margin alpha·s", choices=MAIN_LOSSES)
    alpha: float = setting(0.2, "hinge margin, scaled per anchor pair by its sharpened MSCN score", range=AT_LEAST_0)
    hidden: int = setting(64, "hidden units of the MSCN head (dim → hidden → 1)", range=AT_LEAST_1)
    square_diff: bool = setting(False, "also feed the head (f̂ − ĝ)² next to f̂ ⊙ ĝ")
    mask_shared: bool = setting(True, "in the hinge, never count a pair sharing the anchor's image or caption "
                                "as a negative (several captions per image)")
    meta_lr: float = setting(1e-3, "peak learning rate of the head's Adam in the meta step", range=AT_LEAST_0)
    virtual_params: str = setting("last", "encoder parameters the virtual step updates: each tower's last layer "
                                  "(cheap) or all of them (the paper; ~5× a b1 epoch with a CNN tower)",
                                  choices=VIRTUAL_PARAMS)
    meta_interval: int = setting(1, "a meta step every this many batches (the others take the real step only)",
                                 range=AT_LEAST_1)
    meta_batch_size: int = setting(128, "meta pairs per meta step, half positives and half negatives",
                                   range=Range(2))
    purify: bool = setting(True, "after warm-up, pairs the Beta mixture calls noisy sit out the next epoch")
    beta_max_iter: int = setting(10, "EM iterations of the purification Beta mixture", range=AT_LEAST_1)
    co_training: bool = setting(True, "train two networks that purify for each other and average their scores "
                                "(twice the cost)")

    def __post_init__(self) -> None:
        if self.epochs <= self.warmup_epochs:
            raise ConcordError(f"MSCN needs at least one epoch after its {self.warmup_epochs} warm-up epoch(s): "
                               f"set epochs above {self.warmup_epochs} or lower warmup_epochs")


# ---------------------------------------------------------------------------------------------- the math
def sharpen(p: torch.Tensor) -> torch.Tensor:
    """`p² / (p² + (1 − p)²)`: pushes scores away from 0.5 (MSCN's correction of the margin)."""
    return p ** 2 / (p ** 2 + (1 - p) ** 2)


def hinge_hardest(scores: torch.Tensor, margin: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
    """Per-anchor hinge with the hardest negative over a B×B score matrix (rows images, columns captions,
    pair k on the diagonal), image→text plus text→image.

    The margin is indexed by the anchor pair k in both directions: row k's term uses `margin[k]` and so does
    column k's (the released code broadcasts it along the other axis in the image→text term). `shared` marks
    off-diagonal cells that are not negatives (same image or caption as the anchor); they are ignored."""
    b = scores.shape[0]
    ignore = torch.eye(b, dtype=torch.bool, device=scores.device)
    if shared is not None:
        ignore = ignore | shared
    positive = scores.diagonal()
    i2t = (margin[:, None] + scores - positive[:, None]).clamp(min=0).masked_fill(ignore, 0)
    t2i = (margin[None, :] + scores - positive[None, :]).clamp(min=0).masked_fill(ignore, 0)
    return i2t.max(dim=1).values + t2i.max(dim=0).values


def weighted_infonce(scores: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Per-pair symmetric InfoNCE with the score matrix times the learnable scale (capped at 100, as
    `clip_logits`) as logits, times `weights`."""
    return weights * per_sample_infonce(logit_scale.exp().clamp(max=100.0) * scores)


class MSCNHead(nn.Module):
    """`MLP(dim → hidden → 1)` with ReLU and sigmoid over `v = f̂ ⊙ ĝ` (optionally concatenated with
    `(f̂ − ĝ)²`): the probability that image f̂ and caption ĝ match."""

    def __init__(self, dim: int, hidden: int = 64, square_diff: bool = False) -> None:
        super().__init__()
        self.dim, self.square_diff = dim, square_diff
        self.fc1 = nn.Linear(2 * dim if square_diff else dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.start_from_cosine()

    def start_from_cosine(self, gain: float = 10.0) -> None:
        """Make the fresh head a monotone function of the cosine `Σ v`, so that it is a similarity model from the
        first batch: hidden unit h is `relu(5 Σv + b_h)` (plus a tenth of the random init), knots `−b_h/5` spread
        over cos ∈ [−1, 0.5] so the units differ, the output their sum scaled to slope ≤ `gain` and 0.5 at cos 0.
        A randomly initialised head scores every pair alike, and the hinge then collapses it to a constant
        (measured on concord-tiny: the meta loss stayed at log 2 and purification removed nothing or everything)."""
        hidden = self.fc1.out_features
        with torch.no_grad():
            self.fc1.weight.mul_(0.1)
            self.fc1.weight[:, :self.dim] += 5.0
            self.fc1.bias.copy_(torch.linspace(5.0, -2.5, hidden))
            self.fc2.weight.fill_(gain / (5 * hidden))
            self.fc2.bias.fill_(-float(self.fc2.weight[0] @ self.fc1.bias.clamp(min=0)))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(n,) scores of the aligned pairs (f[k], g[k])."""
        v = f * g
        if self.square_diff:
            v = torch.cat([v, (f - g) ** 2], dim=-1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(v)))).squeeze(-1)

    def matrix(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(I, C) scores of every image f[i] with every caption g[j], without building the I×C×dim tensor:
        the first layer of `f ⊙ g` is the bilinear form `Σ_d f_d W_hd g_d`, and
        `(f − g)² = f² + g² − 2 f g`."""
        w = self.fc1.weight
        pre = _bilinear(f, w[:, :self.dim], g)
        if self.square_diff:
            wq = w[:, self.dim:]
            pre = pre + ((f * f) @ wq.t())[:, None, :] + ((g * g) @ wq.t())[None, :, :] - 2 * _bilinear(f, wq, g)
        return torch.sigmoid(self.fc2(F.relu(pre + self.fc1.bias))).squeeze(-1)


def _bilinear(f: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(I, C, H) `Σ_d f[i, d] w[h, d] g[j, d]`, as one matrix product."""
    i, h = f.shape[0], w.shape[0]
    return ((f[:, None, :] * w[None]).reshape(i * h, -1) @ g.t()).reshape(i, h, -1).permute(0, 2, 1)


def random_negatives(image_rows: np.ndarray, caption_rows: np.ndarray, own: np.ndarray, n_captions: int,
                     n: int, rng: np.random.Generator, tries: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs of a random image of `image_rows` with a random caption of `caption_rows` that is not one of
    its own (`own`: keys `image_row · n_captions + caption_row` of every known matched pair)."""
    images = rng.choice(image_rows, n)
    captions = rng.choice(caption_rows, n)
    for _ in range(tries):
        bad = np.flatnonzero(np.isin(images * n_captions + captions, own))
        if not len(bad):
            return images, captions
        images[bad] = rng.choice(image_rows, len(bad))
        captions[bad] = rng.choice(caption_rows, len(bad))
    raise ConcordError("cannot draw random negatives for MSCN: every caption of the meta-data positives belongs to "
                       "their images; add positives of other images (" + HOW_TO_ADD_META + ")")


def purification_posterior(scores: np.ndarray, train_scores: np.ndarray, meta_pos: np.ndarray,
                           meta_neg: np.ndarray, max_iter: int = 10) -> np.ndarray:
    """Clean posterior of `scores` under a 2-component Beta mixture initialised from the meta negatives' and
    positives' scores, with EM on `train_scores` (`core.mixtures` clamps all to [1e-3, 1 − 1e-3])."""
    return fit_beta_mixture(train_scores, meta_neg, meta_pos, max_iter=max_iter).clean_posterior(scores)


def virtual_parameters(encoder: DualEncoder, which: str = "last") -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs the virtual step updates: every trainable encoder parameter (`all`), or the
    trainable parameters of each tower's last layer, its output projection (`last`), so that the second-order
    terms stay out of the backbone."""
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    if which == "all":
        return trainable
    chosen: list[tuple[str, nn.Parameter]] = []
    for tower in ("image_tower", "text_tower"):
        layers = [(name, m) for name, m in getattr(encoder, tower).named_modules()
                  if any(p.requires_grad for p in m.parameters(recurse=False))]
        if layers:
            name, layer = layers[-1]
            prefix = ".".join(filter(None, (tower, name)))
            chosen += [(f"{prefix}.{n}", p) for n, p in layer.named_parameters(recurse=False) if p.requires_grad]
    return chosen


# ---------------------------------------------------------------------------------------------- the method
class _PairEncoder(nn.Module):
    """A DualEncoder's two encodings as one `forward`, so `functional_call` can run it with virtual weights θ'."""

    def __init__(self, encoder: DualEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.encode_image(images), self.encoder.encode_text(texts)


@dataclass
class _Net:
    """One network: encoders θ, head φ, their optimisers, and the pairs its own last purification kept."""

    encoder: DualEncoder
    head: MSCNHead
    opt: torch.optim.Optimizer
    head_opt: torch.optim.Optimizer
    keep: np.ndarray

    def state(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "head": self.head.state_dict(), "opt": self.opt.state_dict(),
                "head_opt": self.head_opt.state_dict(), "keep": self.keep.copy()}

    def load(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self.head_opt.load_state_dict(state["head_opt"])
        self.keep = state["keep"].copy()


class MSCN(Method):
    name = "mscn"
    config_cls = MSCNConfig
    config: MSCNConfig

    def setup(self) -> None:
        meta = self.data.meta
        if len(meta) == 0:
            raise ConcordError("MSCN learns from trusted meta-data, and this dataset has none: " + HOW_TO_ADD_META)
        if not len(meta.positives):
            raise ConcordError(f"MSCN needs trusted matched pairs, and the meta-data holds only {len(meta)} "
                               "mismatched ones: " + HOW_TO_ADD_META)
        known_negative = meta.pair_index[(meta.label == 0) & (meta.pair_index >= 0)]
        self.trainable = np.setdiff1d(self.data.train, known_negative)
        self.fit_on = np.setdiff1d(self.data.train, meta.pair_index)   # training scores the mixture is fitted on
        n_cap = len(self.data.caption_ids)
        self.own = np.unique(np.concatenate([self.data.image_row * n_cap + self.data.caption_row,
                                             meta.image_row[meta.positives] * n_cap
                                             + meta.caption_row[meta.positives]]))
        self.nets = [self._build(self.ctx.seed + i) for i in range(2 if self.config.co_training else 1)]
        self.negatives = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.meta_losses: list[float] = []

    def _build(self, seed: int) -> _Net:
        encoder = self.ctx.make_encoder(seed)
        with torch.no_grad():
            dim = encoder.encode_text(self.inputs.text_batch(self.data.caption_row[:1])).shape[-1]
        torch.manual_seed(seed)
        head = MSCNHead(dim, self.config.hidden, self.config.square_diff).to(self.device)
        return _Net(encoder, head, make_adamw(encoder.parameters(), self.config),
                    torch.optim.Adam(head.parameters(), lr=self.config.meta_lr), np.ones(len(self.data), bool))

    @property
    def encoder(self) -> DualEncoder:
        return self.nets[0].encoder

    # ------------------------------------------------------------------ meta-data
    def begin_epoch(self, epoch: int) -> None:
        """Redraw the random negatives that balance the meta-data 1:1 for this epoch."""
        meta = self.data.meta
        pos = meta.positives
        n = max(0, len(pos) - len(meta.negatives))
        rng = np.random.default_rng([self.ctx.seed, epoch, 104729])
        self.negatives = random_negatives(np.unique(meta.image_row[pos]), np.unique(meta.caption_row[pos]), self.own,
                                          len(self.data.caption_ids), n, rng)

    def meta_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image rows, caption rows, labels) of this epoch's meta-data: positives, hard and random negatives."""
        meta = self.data.meta
        return (np.concatenate([meta.image_row, self.negatives[0]]),
                np.concatenate([meta.caption_row, self.negatives[1]]),
                np.concatenate([meta.label, np.zeros(len(self.negatives[0]), np.int64)]))

    def meta_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A balanced meta batch: half positives, half negatives (without replacement when there are enough)."""
        images, captions, labels = self.meta_set()
        half = self.config.meta_batch_size // 2
        picks = [rng.choice(idx, half, replace=len(idx) < half) for idx in (np.flatnonzero(labels == 1),
                                                                            np.flatnonzero(labels == 0)) if len(idx)]
        pick = np.concatenate(picks)
        return images[pick], captions[pick], labels[pick]

    # ------------------------------------------------------------------ training
    def epoch_pairs(self, epoch: int) -> np.ndarray:
        """The training pairs minus known mismatches; with one network, minus the pairs it purified last epoch
        (with two, each network drops its partner's purified pairs from its batches)."""
        if len(self.nets) == 1:
            return self.trainable[self.nets[0].keep[self.trainable]]
        return self.trainable

    def _encode(self, net: _Net, pairs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (net.encoder.encode_image(self.inputs.image_batch(self.data.image_row[pairs])),
                net.encoder.encode_text(self.inputs.text_batch(self.data.caption_row[pairs])))

    def main_loss(self, net: _Net, f: torch.Tensor, g: torch.Tensor, pairs: np.ndarray,
                  weights: torch.Tensor) -> torch.Tensor:
        """L_main over the batch's MSCN score matrix, summed over anchors (as the released code)."""
        scores = net.head.matrix(f, g)
        if self.config.main_loss == "infonce":
            return weighted_infonce(scores, weights, net.encoder.logit_scale).sum()
        shared = None
        if self.config.mask_shared:
            img, cap = (torch.as_tensor(rows[pairs], device=scores.device)
                        for rows in (self.data.image_row, self.data.caption_row))
            shared = (img[:, None] == img[None, :]) | (cap[:, None] == cap[None, :])
        return hinge_hardest(scores, self.config.alpha * weights, shared).sum()

    def train_batch(self, epoch: int, batch: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, net in enumerate(self.nets):
            pairs = batch if len(self.nets) == 1 else batch[self.nets[1 - i].keep[batch]]
            if len(pairs) < 2:
                continue
            net.encoder.train()
            net.head.train()
            if epoch < self.config.warmup_epochs:
                metrics = self.warmup_step(net, pairs)
            else:
                metrics, f, g = {}, None, None
                if self.step % self.config.meta_interval == 0:
                    metrics, f, g = self.meta_step(net, pairs, i)
                metrics |= self.real_step(net, pairs, f, g)
            for k, v in metrics.items():
                out[k] = out.get(k, 0.0) + v / len(self.nets)
        return out

    def warmup_step(self, net: _Net, pairs: np.ndarray) -> dict[str, float]:
        """Encoders and head trained together as a similarity model: the main loss with s = 1, main lr."""
        lr = self.set_lr(net.opt)
        self.set_lr(net.head_opt)
        f, g = self._encode(net, pairs)
        loss = self.main_loss(net, f, g, pairs, torch.ones(len(pairs), device=f.device))
        net.opt.zero_grad(set_to_none=True)
        net.head_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.encoder.parameters(), self.config.grad_clip)
        net.opt.step()
        net.head_opt.step()
        return {"loss": float(loss.detach()), "lr": lr}

    def _weights(self, net: _Net, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Sharpened, detached MSCN scores of the batch's own pairs."""
        with torch.no_grad():
            return sharpen(net.head(f, g))

    def virtual_meta_loss(self, net: _Net, pairs: np.ndarray, meta: tuple[np.ndarray, np.ndarray, np.ndarray],
                          eta: float, detach_virtual: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps a–d before the optimiser: the virtual SGD step θ' = θ − η ∇θ L_main(θ, φ) with its graph
        kept (so θ' depends on φ), then the meta BCE of the pairs `meta` (image rows, caption rows, labels) at θ'.
        `detach_virtual` cuts θ' from φ (only the direct gradient remains: the first-order ablation).
        Returns (meta loss, f, g): the batch's features at θ, which the meta step leaves unchanged."""
        names, params = zip(*virtual_parameters(net.encoder, self.config.virtual_params))
        f, g = self._encode(net, pairs)
        loss = self.main_loss(net, f, g, pairs, self._weights(net, f, g))
        grads = torch.autograd.grad(loss, params, create_graph=not detach_virtual, retain_graph=True,
                                    allow_unused=True)
        virtual = {f"encoder.{n}": p if d is None else p - eta * d for n, p, d in zip(names, params, grads)}
        virtual |= {f"encoder.{n}": b.clone() for n, b in net.encoder.named_buffers()}   # keep BN stats untouched
        images, captions, labels = meta
        mf, mg = functional_call(_PairEncoder(net.encoder), virtual,
                                 (self.inputs.image_batch(images), self.inputs.text_batch(captions)))
        target = torch.as_tensor(labels, dtype=torch.float32, device=mf.device)
        return F.binary_cross_entropy(net.head(mf, mg), target), f, g

    def meta_step(self, net: _Net, pairs: np.ndarray,
                  index: int) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Steps a–d: the meta loss at the virtual weights (η = the encoders' current lr), Adam step on φ."""
        eta = self.set_lr(net.opt)
        self.set_lr(net.head_opt, peak=self.config.meta_lr)
        meta = self.meta_batch(np.random.default_rng([self.ctx.seed, self.step, index, 31]))
        meta_loss, f, g = self.virtual_meta_loss(net, pairs, meta, eta)
        net.head_opt.zero_grad(set_to_none=True)
        meta_loss.backward(inputs=list(net.head.parameters()), retain_graph=True)
        net.head_opt.step()
        self.meta_losses.append(float(meta_loss.detach()))
        return {"meta_loss": float(meta_loss.detach())}, f, g

    def real_step(self, net: _Net, pairs: np.ndarray, f: torch.Tensor | None = None,
                  g: torch.Tensor | None = None) -> dict[str, float]:
        """Step e: recompute the sharpened scores with the (updated) head, then an encoder step with φ frozen."""
        lr = self.set_lr(net.opt)
        if f is None:
            f, g = self._encode(net, pairs)
        params = [p for p in net.encoder.parameters() if p.requires_grad]
        loss = self.main_loss(net, f, g, pairs, self._weights(net, f, g))
        net.opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        net.opt.step()
        return {"loss": float(loss.detach()), "lr": lr}

    # ------------------------------------------------------------------ purification
    @torch.no_grad()
    def pair_scores(self, net: _Net, image_rows: np.ndarray, caption_rows: np.ndarray) -> np.ndarray:
        """MSCN scores (eval mode) of the aligned pairs (image_rows[k], caption_rows[k])."""
        images, img_at = np.unique(image_rows, return_inverse=True)
        captions, cap_at = np.unique(caption_rows, return_inverse=True)
        img, cap = self.embed_rows(net.encoder, images, captions)
        was = net.head.training
        net.head.eval()
        bs = self.config.eval_batch_size
        out = np.concatenate([net.head(torch.from_numpy(img[img_at[i:i + bs]]).to(self.device),
                                       torch.from_numpy(cap[cap_at[i:i + bs]]).to(self.device)).double().cpu().numpy()
                              for i in range(0, len(image_rows), bs)]) if len(image_rows) else np.zeros(0)
        net.head.train(was)
        return out

    def pair_and_meta_scores(self, net: _Net) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p for every pair, p for this epoch's meta pairs, their 1/0 labels) under one network, in one pass."""
        images, captions, labels = self.meta_set()
        p = self.pair_scores(net, np.concatenate([self.data.image_row, images]),
                             np.concatenate([self.data.caption_row, captions]))
        return p[:len(self.data)], p[len(self.data):], labels

    def score_net(self, net: _Net) -> tuple[np.ndarray, np.ndarray]:
        """(p for every pair, Beta-mixture clean posterior for every pair) under one network."""
        pairs, meta, labels = self.pair_and_meta_scores(net)
        return pairs, purification_posterior(pairs, pairs[self.fit_on], meta[labels == 1], meta[labels == 0],
                                             self.config.beta_max_iter)

    def purifies_after(self, epoch: int) -> bool:
        """Whether `epoch` ends with a purification: every epoch after warm-up except the last."""
        return self.config.purify and self.config.warmup_epochs <= epoch < self.config.epochs - 1

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Purify at the end of every epoch after warm-up (the pairs then sit out the next epoch only); log the meta
        loss and `purified`, how many pairs a network's purification set aside (with two, their mean). The warm-up
        head does not purify: it has not yet seen the meta-data, and on the demo at 60% random noise it scored meta
        positives and negatives alike (0.085 against 0.081), so its split set 80% of the pairs aside for the first
        meta epoch (docs/benchmarks.md, "MSCN's first purification")."""
        out: dict[str, Any] = {}
        if self.meta_losses:
            out["meta_loss"] = float(np.mean(self.meta_losses))
            self.meta_losses = []
        if self.purifies_after(epoch):
            meta_pos = self.data.meta.pair_index[(self.data.meta.label == 1) & (self.data.meta.pair_index >= 0)]
            keeps = []
            for net in self.nets:
                keep = self.score_net(net)[1] > 0.5
                if not keep[self.trainable].any():   # a degenerate split (every score alike) removes nothing
                    keep[:] = True
                keep[meta_pos] = True
                keeps.append(keep)
            for net, keep in zip(self.nets, keeps):
                net.keep = keep
            out["purified"] = int(round(np.mean([(~k[self.trainable]).sum() for k in keeps])))
        return out

    # ------------------------------------------------------------------ checkpoint and outputs
    def state(self) -> dict[str, Any]:
        return {"nets": [net.state() for net in self.nets], "negatives": self.negatives,
                "meta_losses": list(self.meta_losses)}

    def load_state(self, state: dict[str, Any]) -> None:
        for net, saved in zip(self.nets, state["nets"]):
            net.load(saved)
        self.negatives = state["negatives"]
        self.meta_losses = list(state["meta_losses"])

    def clean_scores(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        scored = [self.score_net(net) for net in self.nets]
        p = np.mean([s[0] for s in scored], axis=0)
        clean = np.mean([s[1] for s in scored], axis=0)
        return clean, p.copy(), {"mscn": p}

    @torch.no_grad()
    def retrieval_similarity(self, image_rows: np.ndarray, caption_rows: np.ndarray) -> np.ndarray:
        """(I, C) MSCN scores (averaged over the networks), in image chunks that keep I·C·hidden bounded."""
        total = np.zeros((len(image_rows), len(caption_rows)))
        chunk = max(1, 2 ** 24 // (self.config.hidden * max(1, len(caption_rows))))
        for net in self.nets:
            img, cap = self.embed_rows(net.encoder, image_rows, caption_rows)
            was = net.head.training
            net.head.eval()
            cap_t = torch.from_numpy(cap).to(self.device)
            for i in range(0, len(img), chunk):
                total[i:i + chunk] += net.head.matrix(torch.from_numpy(img[i:i + chunk]).to(self.device),
                                                      cap_t).double().cpu().numpy()
            net.head.train(was)
        return total / len(self.nets)
