"""The meta-data seed (methods.md §3.3): trusted positives drawn from a split the user names as clean, added
once per dataset before the first run of a method that reads the meta-data.

Training seeds through this module and `core.metadata` (the rest of curating) builds on it, so neither of
those imports the other at start-up; it needs only the store.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import ConcordError, NotFound
from core.store import Store

TRAIN_SPLIT = "train"
"""The split the methods train on and score: the noisy one, never a source of trusted entries."""
HELD_OUT_SPLIT = "test"
"""The split held out to measure the methods: scored, never a source of trusted entries, neighbours or siblings."""
DEFAULT_TRUSTED_SPLIT = "val"
"""The split trusted by default; a dataset without it simply has no trusted split (any other name it lacks is
refused as a typo)."""


def split_sizes(store: Store, dataset_id: int) -> dict[str, int]:
    """Pairs per split of the dataset."""
    return store.dataset_summary(dataset_id)["splits"]


def trusted_split(store: Store, dataset_id: int, split: str) -> dict[str, int]:
    """The dataset's split sizes, after refusing a split that cannot hold trusted pairs."""
    splits = split_sizes(store, dataset_id)
    if split == TRAIN_SPLIT:
        raise ConcordError(f"the {TRAIN_SPLIT!r} split is the noisy one being cleaned, so it cannot be trusted; "
                           "name a clean split (splits: " + ", ".join(splits) + ")")
    if split == HELD_OUT_SPLIT:
        raise ConcordError(f"the {HELD_OUT_SPLIT!r} split is held out to measure the methods, so it is never "
                           "trusted; name another clean split (splits: " + ", ".join(splits) + ")")
    if split not in splits:
        raise NotFound(f"no split {split!r} in this dataset (splits: {', '.join(splits) or 'none'})")
    return splits


def usable_split(store: Store, dataset_id: int, split: str) -> bool:
    """Whether `split` gives trusted pairs: not for '' nor for the default split where the dataset has none; any
    other name must be a split the dataset has that can be trusted (refused otherwise, `trusted_split`: a typo
    never passes silently)."""
    split = split.strip()
    if not split or (split == DEFAULT_TRUSTED_SPLIT and split not in split_sizes(store, dataset_id)):
        return False
    trusted_split(store, dataset_id, split)
    return True


def unclaimed_pairs(store: Store, dataset_id: int, split: str) -> pd.DataFrame:
    """The split's pairs that have no active meta-data entry (a person's label is never overwritten)."""
    pairs = store.pairs_frame(dataset_id, split=split)[["pair_id", "image_id", "caption_id", "is_noisy"]]
    noisy = int(pairs["is_noisy"].fillna(False).astype(bool).sum())
    if noisy:
        raise ConcordError(f"split {split!r} holds {noisy} pairs with injected noise, so it is not clean")
    meta = store.meta_frame(dataset_id)
    taken = set(zip(meta["image_id"].astype(int), meta["caption_id"].astype(int)))
    keep = [(int(i), int(c)) not in taken for i, c in zip(pairs["image_id"], pairs["caption_id"])]
    return pairs[keep]


def seed_size(train_pairs: int, fraction: float) -> int:
    """How many seed positives `fraction` of the training split makes (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise ConcordError(f"the seed fraction must be within (0, 1], got {fraction}")
    return max(1, round(fraction * train_pairs))


def seed_from_split(store: Store, dataset_id: int, split: str = DEFAULT_TRUSTED_SPLIT, fraction: float = 0.02, seed: int = 0) -> int:
    """Add `fraction` × (training pairs) random pairs of the clean `split` as positives (source `seed`).

    Pairs already in the meta-data keep their entry. Returns how many entries were added (fewer than
    asked when the split is smaller)."""
    splits = trusted_split(store, dataset_id, split)
    train = splits.get(TRAIN_SPLIT, 0)
    if train == 0:
        raise ConcordError(f"the dataset has no {TRAIN_SPLIT!r} split to size the seed from")
    want = seed_size(train, fraction)
    pool = unclaimed_pairs(store, dataset_id, split)
    rng = np.random.default_rng(seed)
    chosen = pool.iloc[np.sort(rng.choice(len(pool), size=min(want, len(pool)), replace=False))]
    return len(store.add_meta(dataset_id, list(zip(chosen["image_id"], chosen["caption_id"], [1] * len(chosen))),
                              "seed"))


def ensure_seed(store: Store, dataset_id: int, split: str = DEFAULT_TRUSTED_SPLIT, fraction: float = 0.02, seed: int = 0) -> int:
    """Seed the meta-data before a run that reads it, once per dataset; returns how many entries it added.

    Seeds only when the dataset never had a seed entry (so seed entries a person removed stay removed).
    Without the named split it does nothing when the dataset already has positives from elsewhere."""
    if store.meta_entry_count(dataset_id, source="seed", include_removed=True):
        return 0
    if split not in split_sizes(store, dataset_id) and (store.meta_frame(dataset_id)["label"] == 1).any():
        return 0
    return seed_from_split(store, dataset_id, split, fraction, seed)
