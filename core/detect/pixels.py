"""The pixel space: every image as its raw pixels, reduced, beside the text tower's caption features.

No network trains it, so it cannot fit the noise a run trains on: where a run's image tower has learnt mismatched
captions (heavy noise, few epochs), images that look alike in raw pixels still tell which captions belong together.
Only the same-modality consensus terms exist in it (`core.detect.consensus.NEIGHBOUR_SIGNALS`): the caption
against the captions of the images that look most like the pair's, the image against the images of the caption's
nearest captions, and the image against the caption's other images.

An image's features: its pixels averaged over a `GRID` × `GRID` grid of blocks (colour kept), centred, projected
on their first `DIMS` principal components (fitted on at most `PCA_SAMPLE` images outside the held-out split,
seeded), each scaled to unit
variance (whitened: the overall brightness and background, which carry most of the variance, count no more than
the components that tell shapes apart), L2-normalised. Whitening was chosen on the demo's development cells (fused
AUROC −0.0005 on their mean against −0.0029 unwhitened; a 8 × 8 or 32 × 32 grid or 16 components: −0.0027 to
−0.0030), where these terms help least.
"""
from __future__ import annotations

import numpy as np

from core.index import normalise
from core.progress import Progress

PIXEL_SIZE = 64
"""The resolution the pixels are read at: the offline model's input size, which its training caches already."""
GRID = 16
"""Blocks per side the pixels are averaged over: coarse layout and colour, not texture or noise."""
DIMS = 64
"""Principal components kept."""
WHITEN_ROWS_PER_DIM = 4
"""Whitened, at most one component per this many fitted images: the whitened n − 1 components of n images place
them at the corners of a regular simplex (every two images equally far apart, whatever their pixels), and close to
that the smallest components, noise, count as much as the rest. Binds on sets of under 257 images (outside the
held-out split); none of the benchmark sets."""
PCA_SAMPLE = 20_000
"""At most this many images fit the components (every image is projected)."""


def block_means(pixels: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(n, grid * grid * channels) float32 in [0, 1]: each image's mean over a grid × grid of equal blocks (the
    side cropped to a multiple of `grid`, centred)."""
    n, h, w, c = pixels.shape
    bh, bw = h // grid, w // grid
    if bh == 0 or bw == 0:
        raise ValueError(f"images of {h}×{w} pixels are smaller than a {grid}×{grid} grid")
    top, left = (h - bh * grid) // 2, (w - bw * grid) // 2
    crop = pixels[:, top:top + bh * grid, left:left + bw * grid]
    out = np.empty((n, grid * grid * c), np.float32)
    for start in range(0, n, 4096):              # bounded memory at any size
        part = crop[start:start + 4096].astype(np.float32).reshape(-1, grid, bh, grid, bw, c)
        out[start:start + 4096] = part.mean(axis=(2, 4)).reshape(len(part), -1) / 255.0
    return out


def principal_components(x: np.ndarray, dims: int = DIMS, sample: int = PCA_SAMPLE, seed: int = 0,
                         whiten: bool = True, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """`x` centred and projected on its first `dims` principal components (fewer where `x` has fewer rows or
    columns, or the rest carry no variance), fitted on at most `sample` of the rows `fit_rows` (default: every
    row) drawn with `seed`, with `whiten` each divided by its standard deviation over those rows (and at most one
    component per `WHITEN_ROWS_PER_DIM` fitted rows); (n, dims) float32."""
    rows = np.arange(len(x)) if fit_rows is None else np.asarray(fit_rows, np.int64)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    fit = np.asarray(x[rows], np.float64)
    mean = fit.mean(axis=0)
    _, singular, vt = np.linalg.svd(fit - mean, full_matrices=False)
    keep = min(dims, int((singular > 1e-9 * max(singular.max(initial=0.0), 1e-300)).sum()))
    if whiten:
        keep = min(keep, max(1, len(fit) // WHITEN_ROWS_PER_DIM))
    scale = singular[:keep] / np.sqrt(max(len(fit) - 1, 1)) if whiten else np.ones(keep)
    return ((x - mean) @ (vt[:keep].T / scale)).astype(np.float32)


def pixel_features(means: np.ndarray, dims: int = DIMS, seed: int = 0, fit_rows: np.ndarray | None = None
                   ) -> np.ndarray:
    """(n, ≤ dims) L2-normalised features of images given as their `block_means`, the components fitted on the
    rows `fit_rows` (default: every row): see the module docstring."""
    return normalise(principal_components(means, dims, seed=seed, fit_rows=fit_rows))


def dataset_pixel_features(store, dataset_id: int, image_ids: np.ndarray, fit_ids: np.ndarray | None = None,
                           progress: Progress | None = None) -> np.ndarray:
    """`pixel_features` of the dataset's images `image_ids` (rows in that order), read at `PIXEL_SIZE` from the
    pixel cache (decoding what it lacks) a batch at a time; the components fitted on the images `fit_ids` among
    them (default: all; a run passes those of the pairs outside the held-out split, so no test image shapes them)."""
    from core.features import Features, image_pixel_batches
    batches = [Features(b.ids, block_means(b.values))
               for b in image_pixel_batches(store, dataset_id, PIXEL_SIZE, progress=progress)]
    means = Features(np.concatenate([b.ids for b in batches]), np.vstack([b.values for b in batches])).rows(image_ids)
    fit_rows = None if fit_ids is None else np.flatnonzero(np.isin(image_ids, fit_ids))
    return pixel_features(means, fit_rows=fit_rows)
