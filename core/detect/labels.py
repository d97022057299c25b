"""What the fused classifier learns from: the trusted meta-data, and negatives constructed from its positives.

The meta-data holds the seed positives (a clean split), Keep decisions (positives), Reject decisions (hard
negatives) and Fix decisions (the new pair positive, the old one negative), so every decision reaches the
classifier through it. Before anyone has rejected anything there are no negatives, so, as MSCN draws random
meta negatives, each positive's image is also paired with captions of other images that are none of its own:
a random one, or (`near_miss_share` of them) one of the `near_k` captions most similar to the positive's own,
as the hard noise of methods.md §4 is made, because real mismatches are often near misses. A constructed
mismatch stands for its caption moved to the positive's image: the image it was taken from is recorded
(`moved_from`), so the signals leave it out of the caption's other images as a real swap does (else every
constructed mismatch of a caption no other image shares would carry a `caption_images` term that no real pair
of such a set has, and the classifier would learn that instead).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.detect.consensus import Pool
from core.index import VectorIndex


@dataclass(frozen=True)
class Constructed:
    """Constructed negatives as rows into the signal inputs' image and caption ids."""

    image_row: np.ndarray
    caption_row: np.ndarray
    near_miss: np.ndarray      # bool: drawn from the near misses, else at random
    source: np.ndarray         # the positive (index into the positives given) each negative was made from
    moved_from: np.ndarray     # the pool image the caption is taken from (its first), as a real swap takes it

    def __len__(self) -> int:
        return len(self.image_row)


def _pool_captions(pool: Pool) -> np.ndarray:
    return np.flatnonzero(np.diff(pool.images_of.indptr) > 0)


def caption_index(pool: Pool, caption_emb: np.ndarray) -> VectorIndex:
    """The pool's captions indexed in `caption_emb`'s space (normalised rows): where near misses are searched."""
    candidates = _pool_captions(pool)
    return VectorIndex.build(caption_emb[candidates], candidates)


def construct_negatives(pos_image: np.ndarray, pos_caption: np.ndarray, pool: Pool, text_emb: np.ndarray,
                        per_positive: float = 1.0, near_miss_share: float = 0.5, near_k: int = 10,
                        seed: int = 0, index: VectorIndex | None = None) -> Constructed:
    """Negatives for the positives (image row, caption row): `per_positive` of them per positive on average.

    Args:
        pos_image, pos_caption: the positives, rows into the signal inputs.
        pool: the pool pairs, whose captions are the candidates (never a caption of the positive's own image).
        text_emb: normalised caption features, rows as the pool's captions (near misses are nearest here).
        per_positive: negatives per positive (the positives are drawn with replacement beyond 1).
        near_miss_share: the share of negatives that are near misses rather than random captions.
        near_k: a near miss is drawn from this many nearest candidates.
        seed: the draw's seed.
        index: the pool captions' index in `text_emb`'s space, when the caller has built it (else built here).
    """
    rng = np.random.default_rng([seed, 4099])
    n = int(round(per_positive * len(pos_image)))
    if n == 0 or len(pos_image) == 0:
        z = np.zeros(0, np.int64)
        return Constructed(z, z, np.zeros(0, bool), z, z)
    pick = rng.permutation(len(pos_image))[:n] if n <= len(pos_image) else rng.integers(0, len(pos_image), n)
    image, caption = np.asarray(pos_image)[pick], np.asarray(pos_caption)[pick]
    near = rng.random(n) < near_miss_share
    caps_of = pool.captions_of
    candidates = _pool_captions(pool)
    own_max = int(np.diff(caps_of.indptr).max(initial=0))
    found = np.full((n, 0), -1, np.int64)
    if near.any():                          # only the near misses need the nearest captions
        if index is None:
            index = caption_index(pool, text_emb)
        searched, _ = index.search(text_emb[caption[near]], min(len(index), near_k + own_max + 1))
        found = np.full((n, searched.shape[1]), -1, np.int64)
        found[near] = searched
    out = np.full(n, -1, np.int64)
    for q in range(n):
        own = set(caps_of.indices[caps_of.indptr[image[q]]:caps_of.indptr[image[q] + 1]].tolist()) | {int(caption[q])}
        if near[q]:
            choices = [int(c) for c in found[q] if c >= 0 and int(c) not in own][:near_k]
            if choices:
                out[q] = choices[rng.integers(len(choices))]
                continue
            near[q] = False
        for _ in range(64):
            c = int(candidates[rng.integers(len(candidates))])
            if c not in own:
                out[q] = c
                break
    ok = out >= 0
    taken_from = pool.images_of.indices[pool.images_of.indptr[out[ok]]].astype(np.int64)
    return Constructed(image[ok], out[ok], near[ok], pick[ok], taken_from)
