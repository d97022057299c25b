"""What a method trains on: the pairs as row indices into cached inputs, and the meta-data entries.

Built once per run from the store (see `core.training`); pure arrays, so methods and their tests never
touch the database.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class MetaData:
    """The trusted entries (the store's one meta-data table) as rows into the image / caption inputs."""

    image_row: np.ndarray
    caption_row: np.ndarray
    label: np.ndarray            # 1 matched (M⁺), 0 mismatched (M⁻, hard negatives from reviews)
    pair_index: np.ndarray       # index into TrainData's pairs, −1 when the entry is not a dataset pair

    @classmethod
    def empty(cls) -> "MetaData":
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z)

    @property
    def positives(self) -> np.ndarray:
        return np.flatnonzero(self.label == 1)

    @property
    def negatives(self) -> np.ndarray:
        return np.flatnonzero(self.label == 0)

    def __len__(self) -> int:
        return len(self.label)


@dataclass(frozen=True)
class TrainData:
    """Every pair of the dataset, as rows into the image inputs (`image_ids`) and caption inputs (`caption_ids`)."""

    pair_ids: np.ndarray         # store pair id per pair
    image_row: np.ndarray        # row of the pair's image in the image inputs
    caption_row: np.ndarray      # row of the pair's caption in the caption inputs
    split: np.ndarray            # split name per pair
    is_noisy: np.ndarray         # float: 1 noisy, 0 clean, NaN unknown (ground truth, for measuring only)
    image_ids: np.ndarray        # store image id per image row
    caption_ids: np.ndarray      # store caption id per caption row (all captions, typed fixes included)
    meta: MetaData = field(default_factory=MetaData.empty)

    def __len__(self) -> int:
        return len(self.pair_ids)

    @property
    def train(self) -> np.ndarray:
        """Indices of the training-split pairs (what methods train on)."""
        return np.flatnonzero(self.split == "train")

    def split_index(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split == name)
