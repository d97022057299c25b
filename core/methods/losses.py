"""Contrastive losses over a batch's B×B logit matrix: pure tensor functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_infonce(logits: torch.Tensor) -> torch.Tensor:
    """(B,) per-pair symmetric InfoNCE: `(CE_i2t,k + CE_t2i,k) / 2` for the B×B logits (rows images,
    columns captions, pair k on the diagonal)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    i2t = F.cross_entropy(logits, target, reduction="none")
    t2i = F.cross_entropy(logits.t(), target, reduction="none")
    return (i2t + t2i) / 2


def clip_logits(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """`scale · cos` for L2-normalised embeddings; the scale is exp of the learnable log-temperature, capped at 100."""
    return logit_scale.exp().clamp(max=100.0) * image_emb @ text_emb.t()
