"""The map of a run's pairs: 2-D coordinates from the embeddings under the run's model, cached per settings.

Two modes. "pairs": one point per pair, from its fused embedding (the normalised sum of its image's and its
caption's embedding), so matched pairs of one topic gather and a mismatched pair lands between topics.
"two-sets": images and captions as two point sets in one map (each distinct image and caption once), and
the page draws a line per pair from its image to its caption, so a mismatched pair shows as a long line.

A PCA view (`pca_run`) takes a second and is shown at once; the UMAP view (`project_run`) is the one people
read, computed as a background job. Above `max_fit_points` points UMAP is fitted on a seeded random sample
of that size and the other points are placed at the weighted mean of their nearest fitted points (in batches,
cancellable between them): fitting is super-linear in the number of points while placing is linear, and a
sample of 50k already fixes the layout of the clusters. UMAP gets inputs reduced by PCA to `pca_dims`
dimensions and, for the cosine metric, its k-nearest-neighbour graph from faiss (`precomputed_knn`), which
replaces its own nearest-neighbour descent, the slowest part of a fit. Both are cached under the run's cache folder,
keyed by the settings and stamped with the embeddings file, so recomputed embeddings (a re-run) never meet an old map.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core import artifacts
from core.errors import ConcordError
from core.progress import Progress
from core.store import Run

if TYPE_CHECKING:
    from core.index import VectorIndex

MODES = ("pairs", "two-sets")
METRICS = ("cosine", "euclidean")
MIN_UMAP_POINTS = 5  # below this UMAP's neighbour graph is degenerate: the PCA coordinates are used
TRANSFORM_BATCH = 20_000
PCA_FIT_SAMPLE = 20_000
_PLACE_TEMPERATURE = 0.05   # neighbour weights exp((sim - best sim) / T) when placing points outside the fit


@dataclass(frozen=True)
class ProjectionSettings:
    """How the UMAP map of a run is computed; equal settings share one cached map."""

    mode: str = "pairs"
    """"pairs" (one point per pair, fused image+text embedding) or "two-sets" (images and captions)."""
    n_neighbors: int = 15
    """UMAP neighbourhood size: larger shows more global structure, smaller more local detail."""
    min_dist: float = 0.1
    """How tightly UMAP packs points of one cluster (0 = tight clumps)."""
    metric: str = "cosine"
    """Distance between embeddings ("cosine" or "euclidean")."""
    seed: int | None = 0
    """Random seed: the same settings give the same map. None runs UMAP in parallel, not reproducibly."""
    max_fit_points: int = 50_000
    """Above this many points UMAP is fitted on a sample of this size and the rest placed by their neighbours."""
    pca_dims: int = 50
    """UMAP's inputs are the first `pca_dims` principal components (of the normalised vectors for cosine)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConcordError(f"unknown projection mode {self.mode!r} (one of {', '.join(MODES)})")
        if self.metric not in METRICS:
            raise ConcordError(f"unknown projection metric {self.metric!r} (one of {', '.join(METRICS)})")
        if self.n_neighbors < 2:
            raise ConcordError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ConcordError(f"min_dist must be within [0, 1], got {self.min_dist}")
        if self.max_fit_points < 100:
            raise ConcordError(f"max_fit_points must be at least 100, got {self.max_fit_points}")
        if self.pca_dims < 2:
            raise ConcordError(f"pca_dims must be at least 2, got {self.pca_dims}")

    @property
    def key(self) -> str:
        """A short stable hash of the settings: names the cache file and the background job."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ math
def fuse(image_emb: np.ndarray, caption_emb: np.ndarray) -> np.ndarray:
    """Each row's normalised sum of image and caption embedding (a zero sum stays zero)."""
    total = np.asarray(image_emb, dtype=np.float32) + np.asarray(caption_emb, dtype=np.float32)
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    return np.divide(total, norms, out=np.zeros_like(total), where=norms > 0)


def principal_components(vectors: np.ndarray, dims: int, fit_sample: int = PCA_FIT_SAMPLE, seed: int = 0,
                         centre: bool = True) -> np.ndarray:
    """The (n, dims) coordinates of `vectors` on their first `dims` principal components (zero columns past
    the data's dimension); without `centre` the vectors are projected as they are (inner products kept
    within the components' span, which cosine similarity needs).

    Mean and components come from at most `fit_sample` rows (seeded sample) so that a million points stay
    quick; each component's sign is fixed so that its largest loading is positive (deterministic output).
    """
    x = np.asarray(vectors, dtype=np.float64)
    out = np.zeros((len(x), dims), dtype=np.float32)
    if len(x) == 0:
        return out
    fit = x
    if len(x) > fit_sample:
        fit = x[np.sort(np.random.default_rng(seed).choice(len(x), fit_sample, replace=False))]
    mean = fit.mean(axis=0)
    centred = fit - mean
    _, eigvecs = np.linalg.eigh(centred.T @ centred)
    components = eigvecs[:, ::-1][:, :dims]  # eigh sorts ascending
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(components.shape[1])])
    components = components * np.where(signs == 0, 1.0, signs)
    coords = ((x - mean) if centre else x) @ components
    out[:, :coords.shape[1]] = coords
    return out


def pca_projection(vectors: np.ndarray, fit_sample: int = PCA_FIT_SAMPLE, seed: int = 0) -> np.ndarray:
    """The (n, 2) coordinates of `vectors` on their first two principal components (`principal_components`)."""
    return principal_components(vectors, 2, fit_sample, seed)


def _umap_inputs(x: np.ndarray, settings: ProjectionSettings) -> np.ndarray:
    """What UMAP is fitted on: the vectors on their first `pca_dims` components (for cosine: the normalised
    vectors, projected uncentred)."""
    cosine = settings.metric == "cosine"
    if cosine:
        from core.index import normalise
        x = normalise(x)
    return x if x.shape[1] <= settings.pca_dims else principal_components(x, settings.pca_dims, centre=not cosine)


def place_by_neighbours(fitted: VectorIndex, fitted_coords: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(q, 2) coordinates of `queries`: the mean of the coordinates of their `k` most similar fitted points
    (`fitted` indexes them under their row numbers, cosine), weighted by exp((similarity − the best one's) / T):
    where UMAP's transform starts from, without its refinement."""
    ids, sims = fitted.search(queries, k)
    weights = np.where(ids >= 0, np.exp((sims - sims[:, :1]) / _PLACE_TEMPERATURE), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("qk,qkd->qd", weights, fitted_coords[np.maximum(ids, 0)]).astype(np.float32)


def umap_projection(vectors: np.ndarray, settings: ProjectionSettings, progress: Progress) -> np.ndarray:
    """The (n, 2) UMAP coordinates of `vectors` under `settings` (see the module notes on sampling)."""
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < MIN_UMAP_POINTS:
        return pca_projection(x)
    progress.check()
    import umap  # noqa: PLC0415 - a minute of numba compilation on first import: only when needed

    fit_idx = np.arange(n)
    if n > settings.max_fit_points:
        rng = np.random.default_rng(0 if settings.seed is None else settings.seed)
        fit_idx = np.sort(rng.choice(n, settings.max_fit_points, replace=False))
    inputs = _umap_inputs(x, settings)
    fit = inputs[fit_idx]
    k = min(settings.n_neighbors, len(fit_idx) - 1)
    knn: tuple = (None, None, None)
    if settings.metric == "cosine":
        from core.index import nearest_neighbours
        progress.start("umap-knn", None, message=f"Nearest neighbours of {len(fit_idx):,} points")
        rows, sims = nearest_neighbours(fit, k, exclude_self=False)   # each point first, as UMAP expects
        knn = (rows, np.maximum(1.0 - sims, 0.0).astype(np.float32))
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=settings.min_dist, metric=settings.metric,
                        random_state=settings.seed, n_jobs=1 if settings.seed is not None else -1,
                        precomputed_knn=knn)
    progress.start("umap-fit", None, message=f"Fitting UMAP on {len(fit_idx):,} points")
    coords = np.zeros((n, 2), dtype=np.float32)
    with warnings.catch_warnings():   # "transform will be unavailable": the rest is placed here, not by it
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        coords[fit_idx] = reducer.fit_transform(fit)
    rest = np.setdiff1d(np.arange(n), fit_idx, assume_unique=True)
    progress.start("umap-transform", len(rest), message=f"Placing the other {len(rest):,} points")
    if len(rest):
        from core.index import VectorIndex
        fitted = VectorIndex.build(fit, np.arange(len(fit_idx)))
    for start in range(0, len(rest), TRANSFORM_BATCH):
        progress.check()
        batch = rest[start:start + TRANSFORM_BATCH]
        coords[batch] = place_by_neighbours(fitted, coords[fit_idx], inputs[batch], k)
        progress.advance(len(batch))
    return coords


# ------------------------------------------------------------------------------------------ a run's map
@dataclass(frozen=True)
class _Points:
    """The vectors to project for a run, and which point(s) belong to each pair."""

    pair_ids: np.ndarray
    vectors: np.ndarray
    first: np.ndarray            # row of each pair's point (its image's point in "two-sets")
    second: np.ndarray | None    # row of each pair's caption point ("two-sets" only)


def _points(store, run_id: int, mode: str) -> _Points:
    pairs = store.run_pairs(run_id)
    if pairs.empty:
        raise ConcordError(f"run {run_id} has no scored pairs to map")
    emb = artifacts.load_embeddings(store.run(run_id))
    pair_ids = pairs["pair_id"].to_numpy(np.int64)
    if mode == "pairs":
        vectors = fuse(emb.image_rows(pairs["image_id"]), emb.caption_rows(pairs["caption_id"]))
        return _Points(pair_ids, vectors, np.arange(len(pairs)), None)
    images, image_pos = np.unique(pairs["image_id"].to_numpy(np.int64), return_inverse=True)
    captions, caption_pos = np.unique(pairs["caption_id"].to_numpy(np.int64), return_inverse=True)
    vectors = np.vstack([emb.image_rows(images), emb.caption_rows(captions)])
    return _Points(pair_ids, vectors, image_pos, len(images) + caption_pos)


def _frame(points: _Points, coords: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"pair_id": points.pair_ids, "x": coords[points.first, 0], "y": coords[points.first, 1]})
    if points.second is not None:
        frame["x2"] = coords[points.second, 0]
        frame["y2"] = coords[points.second, 1]
    return frame


def _embeddings_stamp(run: Run) -> np.ndarray:
    """(size, mtime in ns) of the run's embeddings file: a map made from other embeddings is stale."""
    st = artifacts.embeddings_path(run).stat()
    return np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)


def _cache_path(run: Run, name: str) -> Path:
    return artifacts.run_dir(run) / f"projection-{name}.npz"


def _load(run: Run, name: str) -> pd.DataFrame | None:
    path = _cache_path(run, name)
    if not path.exists() or not artifacts.has_embeddings(run):
        return None
    with np.load(path) as z:
        if not np.array_equal(z["stamp"], _embeddings_stamp(run)):
            return None
        return pd.DataFrame({k: z[k] for k in z.files if k != "stamp"})


def _save(run: Run, name: str, frame: pd.DataFrame) -> None:
    arrays = {c: frame[c].to_numpy(np.int64 if c == "pair_id" else np.float32) for c in frame.columns}
    artifacts.atomic_save_npz(_cache_path(run, name), stamp=_embeddings_stamp(run), **arrays)


def save_projection(store, run_id: int, settings: ProjectionSettings, frame: pd.DataFrame) -> None:
    """Cache `frame` (pair_id, x, y[, x2, y2]) as the run's UMAP map under `settings`."""
    _save(store.run(run_id), f"umap-{settings.key}", frame)


def cached_projection(store, run_id: int, settings: ProjectionSettings) -> pd.DataFrame | None:
    """The run's UMAP map under `settings` if computed (and its embeddings unchanged since), else None."""
    return _load(store.run(run_id), f"umap-{settings.key}")


def project_run(store, run_id: int, settings: ProjectionSettings, progress: Progress) -> pd.DataFrame:
    """The run's UMAP map, DataFrame(pair_id, x, y[, x2, y2]): cached, else computed and cached."""
    cached = cached_projection(store, run_id, settings)
    if cached is not None:
        return cached
    progress.start("loading", None, message=f"Loading the embeddings of run {run_id}")
    points = _points(store, run_id, settings.mode)
    frame = _frame(points, umap_projection(points.vectors, settings, progress))
    save_projection(store, run_id, settings, frame)
    return frame


def pca_run(store, run_id: int, mode: str = "pairs") -> pd.DataFrame:
    """The run's PCA map (same frame as `project_run`): quick, shown while UMAP computes; cached."""
    if mode not in MODES:
        raise ConcordError(f"unknown projection mode {mode!r} (one of {', '.join(MODES)})")
    name, run = f"pca-{mode}", store.run(run_id)
    cached = _load(run, name)
    if cached is not None:
        return cached
    points = _points(store, run_id, mode)
    frame = _frame(points, pca_projection(points.vectors))
    _save(run, name, frame)
    return frame
