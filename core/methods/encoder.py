"""The trainable dual encoder of a run, and the cached inputs it reads by row.

`DualEncoder` holds only what trains (image tower or head, text head, temperature), so a method can copy it
cheaply (NPC's siamese copy). `Inputs` holds the cached tensors (decoded pixels or backbone features, and
caption features) on the device, gathered per batch of rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ResidualHead(nn.Module):
    """`x ↦ P(x) + MLP(x)`: a projection plus a residual MLP whose last layer starts at zero, so a head on
    pretrained features starts from the backbone's own similarity (P = identity when dims agree)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.proj = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.mlp(x)


class DualEncoder(nn.Module):
    """Image side and text side mapping their inputs to L2-normalised embeddings, plus the temperature."""

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(x).float(), dim=-1)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_tower(x).float(), dim=-1)


@dataclass
class Inputs:
    """Cached inputs on the device: `images` is uint8 pixels (M, S, S, 3) or float features (M, D);
    `texts` float caption features (C, D). Pixels are normalised with `mean`/`std` when gathered."""

    images: torch.Tensor
    texts: torch.Tensor
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.pixels:
            dev = self.images.device
            self._mean = torch.tensor(self.mean, device=dev).view(1, 3, 1, 1)
            self._std = torch.tensor(self.std, device=dev).view(1, 3, 1, 1)

    @property
    def pixels(self) -> bool:
        return self.images.dtype == torch.uint8

    @property
    def device(self) -> torch.device:
        return self.images.device

    def image_batch(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(rows, device=self.device, dtype=torch.long)
        x = self.images.index_select(0, idx)
        if self.pixels:
            x = (x.permute(0, 3, 1, 2).float().div_(255.0) - self._mean) / self._std
        return x

    def text_batch(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.texts.index_select(0, torch.as_tensor(rows, device=self.device, dtype=torch.long))
