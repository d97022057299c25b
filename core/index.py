"""Nearest-neighbour search over L2-normalised embeddings (faiss, inner product = cosine).

`VectorIndex` is exact (`IndexFlatIP`) below `exact_below` vectors and IVF (`IndexIVFFlat`) above, with
`nprobe` calibrated at build time: the smallest power of two whose recall@10 against exact search, on a
sample of the indexed vectors used as queries, reaches `target_recall`. `nearest_neighbours` is the all-pairs
search NPC's memory bank needs; `RunNeighbours` answers "which captions are nearest to this image, which images
to this caption" under a run's trained model or a pretrained model (the review page's suggestions).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from core import paths
from core.errors import ConcordError

EXACT_BELOW = 20_000
TARGET_RECALL = 0.99
IVF_TRAIN_ITERATIONS = 10
IVF_TRAIN_POINTS_PER_LIST = 64
"""The IVF quantiser's k-means: 10 iterations on at most 64 sampled vectors per list (faiss: 25 on 256). Recall
is held by calibrating nprobe, so a rougher quantiser costs a little search time, not quality; it halves the
build at 100k vectors and quarters it at 1M."""
_CALIBRATION_QUERIES = 1024
_CALIBRATION_K = 10


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32, C-contiguous copy; zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _recall(found_sims: np.ndarray, exact_sims: np.ndarray) -> float:
    """Recall@k by similarity (robust to ties): the share of found results at least as similar as the k-th
    exact neighbour."""
    kth = exact_sims[:, -1:]
    return float(np.mean(found_sims >= kth - 1e-5))


@dataclass
class VectorIndex:
    """A faiss inner-product index over normalised vectors, returning the caller's ids."""

    index: Any          # faiss.Index
    ids: np.ndarray     # int64 id of each indexed row
    kind: str           # "flat" | "ivf"
    nprobe: int = 0     # IVF only: lists visited per query

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, exact_below: int = EXACT_BELOW,
              target_recall: float = TARGET_RECALL) -> "VectorIndex":
        """Index `vectors` (normalised here) under `ids`: exact below `exact_below` rows, IVF above."""
        x = normalise(vectors)
        ids = np.asarray(ids, dtype=np.int64)
        if x.ndim != 2 or len(x) != len(ids):
            raise ValueError(f"{len(ids)} ids for vectors of shape {x.shape}")
        n, d = x.shape
        if n < exact_below or n < 2 * 39:
            flat = faiss.IndexFlatIP(d)
            flat.add(x)
            return cls(flat, ids, "flat")
        nlist = int(max(1, min(round(4 * math.sqrt(n)), n // 39)))   # ≥ 39 training points per list
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter, ivf.cp.max_points_per_centroid = IVF_TRAIN_ITERATIONS, IVF_TRAIN_POINTS_PER_LIST
        ivf.train(x)
        ivf.add(x)
        return cls(ivf, ids, "ivf", _calibrate(ivf, x, nlist, target_recall))

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (q, k) int64, similarities (q, k) float32), most similar first; id −1 and similarity −inf
        where fewer than k results exist."""
        q = normalise(np.atleast_2d(queries))
        if self.kind == "ivf":
            self.index.nprobe = self.nprobe
        sims, rows = self.index.search(q, int(k))
        found = rows >= 0
        out_ids = np.where(found, self.ids[np.where(found, rows, 0)], -1).astype(np.int64)
        return out_ids, np.where(found, sims, -np.inf).astype(np.float32)

    def save(self, folder: Path) -> None:
        """Write the index into `folder` (index.faiss, ids.npy, meta.json); see `load`."""
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / "index.faiss"))
        np.save(folder / "ids.npy", self.ids)
        (folder / "meta.json").write_text(json.dumps({"kind": self.kind, "nprobe": self.nprobe}))

    @classmethod
    def load(cls, folder: Path) -> "VectorIndex":
        meta = json.loads((folder / "meta.json").read_text())
        return cls(faiss.read_index(str(folder / "index.faiss")), np.load(folder / "ids.npy"), meta["kind"],
                   int(meta["nprobe"]))


def _calibrate(ivf: Any, x: np.ndarray, nlist: int, target_recall: float) -> int:
    """The smallest power-of-two nprobe (up to nlist) reaching `target_recall` on sampled self-queries."""
    rng = np.random.default_rng(0)
    sample = x[np.sort(rng.choice(len(x), size=min(len(x), _CALIBRATION_QUERIES), replace=False))]
    k = min(_CALIBRATION_K, len(x))
    exact_sims, _ = faiss.knn(sample, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    nprobe = 1
    while nprobe < nlist:
        ivf.nprobe = nprobe
        sims, _ = ivf.search(sample, k)
        if _recall(sims, exact_sims) >= target_recall:
            return nprobe
        nprobe *= 2
    return nlist


def nearest_neighbours(vectors: np.ndarray, k: int, exclude_self: bool = True, candidates: np.ndarray | None = None,
                       exact_below: int = EXACT_BELOW, target_recall: float = TARGET_RECALL
                       ) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `vectors`, the k most similar rows (by cosine): (row indices (n, k) int64,
    similarities (n, k) float32), most similar first. `exclude_self` leaves each row out of its own list;
    `candidates` (row indices or a boolean mask) restricts which rows may be neighbours (NPC: the clean pairs).
    Missing results (fewer candidates than k) are −1 / −inf."""
    n = len(vectors)
    if candidates is None:
        cand = np.arange(n, dtype=np.int64)
    else:
        cand = np.asarray(candidates)
        cand = np.flatnonzero(cand) if cand.dtype == bool else cand.astype(np.int64)
    x = normalise(vectors)
    index = VectorIndex.build(x[cand], cand, exact_below, target_recall)
    extra = 1 if exclude_self else 0
    ids, sims = index.search(x, k + extra)
    if exclude_self:
        not_self = ids != np.arange(n)[:, None]
        order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]   # drop self (or the last when absent)
        ids = np.take_along_axis(ids, order, axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
    return ids, sims


# ---------------------------------------------------------------------------------------------- per run / model
class RunNeighbours:
    """Nearest captions of an image and nearest images of a caption, across a dataset, under one model."""

    def __init__(self, image_index: VectorIndex, caption_index: VectorIndex, image_ids: np.ndarray,
                 image_emb: np.ndarray, caption_ids: np.ndarray, caption_emb: np.ndarray) -> None:
        self.image_index, self.caption_index = image_index, caption_index
        self._image_pos = pd.Index(np.asarray(image_ids, dtype=np.int64))
        self._caption_pos = pd.Index(np.asarray(caption_ids, dtype=np.int64))
        self._image_emb, self._caption_emb = image_emb, caption_emb

    @classmethod
    def from_embeddings(cls, emb: Any, exact_below: int = EXACT_BELOW) -> "RunNeighbours":
        """From a `core.artifacts.RunEmbeddings` (or anything with its four arrays)."""
        image_emb, caption_emb = normalise(emb.image_emb), normalise(emb.caption_emb)
        return cls(VectorIndex.build(image_emb, emb.image_ids, exact_below),
                   VectorIndex.build(caption_emb, emb.caption_ids, exact_below),
                   emb.image_ids, image_emb, emb.caption_ids, caption_emb)

    @classmethod
    def for_run(cls, store, run_id: int) -> "RunNeighbours":
        """The neighbours under run `run_id`'s trained model: built once from its embeddings (at the end of the
        run, `build_for_run`), then kept in memory and on disk under the run's cache folder (rebuilt when the
        embeddings change)."""
        return _run_neighbours(*_embeddings_stamp(store, run_id))

    @classmethod
    def build_for_run(cls, store, run_id: int, progress: Any = None) -> None:
        """Build run `run_id`'s two indexes and write them to its cache folder, reporting on `progress` (a
        `core.progress.Progress`) as stage `index`: what a run does when it ends, so that Review loads them
        instead of building them on its first visit. Nothing is built when they are already on disk."""
        _load_or_build(*_embeddings_stamp(store, run_id), progress)

    @classmethod
    def for_model(cls, store, dataset_id: int, model: str, device: str = "auto") -> "RunNeighbours":
        """The neighbours under a model with a pretrained image tower (its cached features; ConcordError for
        concord-tiny, whose image embeddings come from a run)."""
        from core.models import model_info
        info = model_info(model)
        if not info.image_pretrained:
            raise ConcordError(f"model {model!r} has no pretrained image tower: use the neighbours of a finished run")
        images, captions = store.images_frame(dataset_id), store.captions_frame(dataset_id)
        content = hashlib.sha1()
        for frame, id_col in ((images, "image_id"), (captions, "caption_id")):
            content.update(np.asarray(frame[id_col], dtype=np.int64).tobytes())
            content.update("".join(frame["hash"]).encode())
        return _model_neighbours(store, int(dataset_id), model, device, info.identity, content.hexdigest(),
                                 str(paths.cache_dir()))

    def _query(self, positions: pd.Index, emb: np.ndarray, key: int, what: str) -> np.ndarray:
        pos = positions.get_indexer([int(key)])[0]
        if pos < 0:
            raise KeyError(f"no embedding for {what} id {int(key)}")
        return emb[pos:pos + 1]

    def captions_for_image(self, image_id: int, k: int = 5) -> pd.DataFrame:
        """The k captions nearest to image `image_id`: columns caption_id, similarity (most similar first)."""
        ids, sims = self.caption_index.search(self._query(self._image_pos, self._image_emb, image_id, "image"), k)
        keep = ids[0] >= 0
        return pd.DataFrame({"caption_id": ids[0][keep], "similarity": sims[0][keep]})

    def captions_near_captions(self, caption_ids: Any, k: int = 5) -> pd.DataFrame:
        """The k captions nearest to the mean of captions `caption_ids` (those with an embedding; KeyError when
        none has one): columns caption_id, similarity (most similar first)."""
        pos = self._caption_pos.get_indexer(np.asarray(caption_ids, dtype=np.int64))
        pos = pos[pos >= 0]
        if not len(pos):
            raise KeyError("no embedding for any of these captions")
        ids, sims = self.caption_index.search(self._caption_emb[pos].mean(axis=0, keepdims=True), k)
        keep = ids[0] >= 0
        return pd.DataFrame({"caption_id": ids[0][keep], "similarity": sims[0][keep]})

    def images_for_caption(self, caption_id: int, k: int = 5) -> pd.DataFrame:
        """The k images nearest to caption `caption_id`: columns image_id, similarity (most similar first)."""
        ids, sims = self.image_index.search(self._query(self._caption_pos, self._caption_emb, caption_id, "caption"), k)
        keep = ids[0] >= 0
        return pd.DataFrame({"image_id": ids[0][keep], "similarity": sims[0][keep]})


@dataclass(frozen=True)
class _Embeddings:
    image_ids: np.ndarray
    image_emb: np.ndarray
    caption_ids: np.ndarray
    caption_emb: np.ndarray


@functools.lru_cache(maxsize=4)
def _model_neighbours(store, dataset_id: int, model: str, device: str, identity: str, content: str,
                      cache: str) -> RunNeighbours:
    """Keyed by the model's identity and the dataset's content (ids and hashes of its images and captions)."""
    import torch

    from core import features
    from core.models import TINY, load_model, model_info
    images = features.image_features(store, dataset_id, model, device)
    texts = features.text_features(store, dataset_id, model, device)
    caption_emb = texts.values
    if model_info(model).family == TINY:   # cached MiniLM features -> the model's text projection
        loaded = load_model(model, device)
        with torch.inference_mode():
            caption_emb = loaded.encode_cached_text(torch.as_tensor(caption_emb, device=loaded.device)).cpu().numpy()
    return RunNeighbours.from_embeddings(_Embeddings(images.ids, images.values, texts.ids, caption_emb))


def _embeddings_stamp(store, run_id: int) -> tuple[str, int, int]:
    """(the run's cache folder, its embeddings file's size and modification time)."""
    from core import artifacts
    run = store.run(run_id)   # NotFound for an unknown run
    path = artifacts.embeddings_path(run)
    if not path.exists():
        artifacts.load_embeddings(run)   # raises NotFound saying what to do
    st = path.stat()
    return str(path.parent), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _run_neighbours(run_folder: str, size: int, mtime_ns: int) -> RunNeighbours:
    """Keyed by the run's cache folder and its embeddings file's size and time, so a re-run's new embeddings
    give new neighbours."""
    return _load_or_build(run_folder, size, mtime_ns)


def _load_or_build(run_folder: str, size: int, mtime_ns: int, progress: Any = None) -> RunNeighbours:
    """The run's neighbours from its `neighbours` folder when its stamp matches the embeddings, else built
    (images, then captions, each a step of `progress`) and written there, the stamp last."""
    from core import artifacts
    emb = artifacts.read_embeddings(Path(run_folder) / "embeddings.npz")
    folder = Path(run_folder) / "neighbours"
    stamp = {"embeddings_size": size, "embeddings_mtime_ns": mtime_ns}
    stamp_file = folder / "stamp.json"
    image_emb, caption_emb = normalise(emb.image_emb), normalise(emb.caption_emb)
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return RunNeighbours(VectorIndex.load(folder / "images"), VectorIndex.load(folder / "captions"),
                             emb.image_ids, image_emb, emb.caption_ids, caption_emb)
    if progress is not None:
        progress.start("index", 2, message=f"nearest-neighbour index of {len(image_emb):,} images")
    stamp_file.unlink(missing_ok=True)            # the stamp is written last: it vouches for both indexes
    image_index = VectorIndex.build(image_emb, emb.image_ids)
    image_index.save(folder / "images")
    if progress is not None:
        progress.set_message(f"nearest-neighbour index of {len(caption_emb):,} captions")
        progress.advance()
    caption_index = VectorIndex.build(caption_emb, emb.caption_ids)
    caption_index.save(folder / "captions")
    tmp = folder / "stamp.json.tmp"
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, stamp_file)
    if progress is not None:
        progress.advance()
    return RunNeighbours(image_index, caption_index, emb.image_ids, image_emb, emb.caption_ids, caption_emb)
