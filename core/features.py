"""Cached model inputs and features: caption features, decoded images, pretrained image features.

Everything lives under `CONCORD_CACHE/features/KIND/MODEL-IDENTITY/` as a `KeyedArrayCache` keyed by content
hash (the caption's text hash, the image file's hash), so re-imports, renamed files and other datasets with the
same content reuse it, and adding rows computes only the new ones.

Determinism: the rows still to compute are taken in a fixed order (captions by length then hash, images by
hash) and cut into fixed batches, and chunks are committed in that order; so a run cancelled or killed after
any chunk and then resumed computes exactly the batches an uninterrupted run would have, and gives the same
numbers. Images are decoded on a thread pool, a couple of batches ahead of the model (decoding overlaps the
forward pass); every image is decoded once per size, then read from the cache.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import time
from collections import deque
from contextlib import closing
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from core import paths
from core.errors import ConcordError
from core.hashing import text_hash
from core.keyed_cache import KeyedArrayCache
from core.models import DEFAULT_MODEL, LoadedModel, load_model, model_info, resolve_device
from core.progress import Progress

PIXELS_VERSION = "shortest-bicubic-centre/v1"   # how images are resized; part of the pixel cache key
COMMIT_BYTES = 64 << 20                          # commit a chunk at least every 64 MB of results …
COMMIT_SECONDS = 10.0                            # … or every 10 s, whichever comes first


@dataclass(frozen=True)
class Features:
    """Rows of a dataset's captions or images: `ids` (store ids) in the order of `values`."""

    ids: np.ndarray      # int64 caption ids or image ids
    values: np.ndarray   # float32 (n, d) features, or uint8 (n, S, S, 3) pixels

    @functools.cached_property
    def _positions(self) -> pd.Index:
        return pd.Index(self.ids)

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        """Values of these ids, in their order; KeyError naming the first id not here."""
        wanted = np.asarray(ids, dtype=np.int64)
        pos = self._positions.get_indexer(wanted)
        if (pos < 0).any():
            raise KeyError(f"id {int(wanted[np.argmax(pos < 0)])} is not among these features")
        return self.values[pos]


# ---------------------------------------------------------------------------------------------- caches
def _cache(kind: str, identity: str, row_shape: tuple[int, ...], dtype: str) -> KeyedArrayCache:
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", identity)[:60]
    digest = hashlib.sha1(identity.encode()).hexdigest()[:10]
    return KeyedArrayCache(paths.cache_dir() / "features" / kind / f"{slug}-{digest}", row_shape, dtype,
                           description=f"{kind} for {identity}")


def _text_cache(name: str) -> KeyedArrayCache:
    info = model_info(name)
    return _cache("text", info.identity, (info.text_feature_dim,), "float32")


def _image_cache(name: str) -> KeyedArrayCache:
    info = model_info(name)
    return _cache("image", info.identity, (info.embed_dim,), "float32")


def _pixel_cache(size: int) -> KeyedArrayCache:
    return _cache("pixels", f"{size}px-{PIXELS_VERSION}", (size, size, 3), "uint8")


class _Committer:
    """Collects computed rows and commits them to a cache as chunks (by size and by time), in order."""

    def __init__(self, cache: KeyedArrayCache) -> None:
        self.cache = cache
        self._keys: list[str] = []
        self._values: list[np.ndarray] = []
        self._bytes = 0
        self._last = time.monotonic()

    def add(self, keys: Sequence[str], values: np.ndarray) -> None:
        self._keys.extend(keys)
        self._values.append(values)
        self._bytes += values.nbytes
        if self._bytes >= COMMIT_BYTES or time.monotonic() - self._last >= COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._keys:
            self.cache.write(self._keys, np.concatenate(self._values))
        self._keys, self._values, self._bytes, self._last = [], [], 0, time.monotonic()


class _Model:
    """A model loaded on first use (nothing is loaded when everything is cached)."""

    def __init__(self, name: str, device: str) -> None:
        self.name, self.device = name, device
        self._loaded: LoadedModel | None = None

    def get(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model(self.name, self.device)
        return self._loaded


def _run(stage: str, keys: list[str], batches: Generator[tuple[list[str], np.ndarray], None, None], cached: int,
         progress: Progress, committer: _Committer | None) -> dict[str, int]:
    """Drive the generator `batches` (the rows of `keys`, computed lazily) into `committer` (None when the
    source commits its rows itself), with progress and cancel between batches. On any exit the generator is
    closed and the completed batches committed. Returns the computed/cached counts."""
    progress.start(stage, total=len(keys), message=f"{stage}: {len(keys):,} to compute, {cached:,} cached")
    try:
        for batch_keys, values in batches:
            if committer is not None:
                committer.add(batch_keys, values)
            progress.advance(len(batch_keys))
            progress.check()
    finally:
        batches.close()
        if committer is not None:
            committer.flush()
    return {"computed": len(keys), "cached": cached}


# ---------------------------------------------------------------------------------------------- captions
def _ensure_texts(keys: Sequence[str], texts: Sequence[str], model: _Model, batch_size: int,
                  progress: Progress) -> dict[str, int]:
    """Compute and cache the text features of the captions not cached yet."""
    cache = _text_cache(model.name)
    frame = pd.DataFrame({"key": list(keys), "text": list(texts)}).drop_duplicates("key")
    todo = frame[cache.missing(frame["key"].to_numpy())]
    todo = todo.assign(n=todo["text"].str.len()).sort_values(["n", "key"], kind="stable")   # similar lengths batch
    todo_keys, todo_texts = todo["key"].tolist(), todo["text"].tolist()

    def batches() -> Iterator[tuple[list[str], np.ndarray]]:
        for start in range(0, len(todo_keys), batch_size):
            stop = start + batch_size
            yield todo_keys[start:stop], model.get().text_features(todo_texts[start:stop]).cpu().numpy()

    return _run("caption features", todo_keys, batches(), len(frame) - len(todo), progress, _Committer(cache))


def encode_texts(texts: Sequence[str], model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 256,
                 progress: Progress | None = None) -> np.ndarray:
    """float32 (n, d) L2-normalised embeddings of `texts` for similarity search (tiny: the normalised pooled
    MiniLM features; open_clip: the normalised `encode_text`), cached per caption hash."""
    keys = [text_hash(t) for t in texts]
    _ensure_texts(keys, texts, _Model(model, device), batch_size, progress or Progress())
    values = _text_cache(model).read(keys)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / np.maximum(norms, 1e-12)).astype(np.float32)


def text_features(store, dataset_id: int, model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 256,
                  progress: Progress | None = None) -> Features:
    """The cached caption features the methods train from, for every caption row of the dataset (originals and
    typed fixes): tiny -> pooled 384-d MiniLM output (not normalised; the projection comes after);
    open_clip -> normalised `encode_text`."""
    caps = store.captions_frame(dataset_id)
    _ensure_texts(caps["hash"].tolist(), caps["text"].tolist(), _Model(model, device), batch_size,
                  progress or Progress())
    return Features(caps["caption_id"].to_numpy(np.int64), _text_cache(model).read(caps["hash"].tolist()))


# ---------------------------------------------------------------------------------------------- images
def load_pixels(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image as RGB, resize its shorter side to `size` (bicubic) and crop the centre square, as
    open_clip's eval preprocessing does: uint8 (size, size, 3). JPEGs are decoded at a reduced scale when the
    result still has at least twice `size` pixels on its shorter side (much faster, visually the same)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    with Image.open(path) as img:
        short = min(img.size)
        if img.format == "JPEG" and short > 2 * size:
            scale = 2 * size / short
            img.draft("RGB", (int(img.size[0] * scale) + 1, int(img.size[1] * scale) + 1))
        rgb = img.convert("RGB")
    rgb = TF.center_crop(TF.resize(rgb, size, interpolation=InterpolationMode.BICUBIC), size)
    return np.array(rgb, dtype=np.uint8)


def _decode_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class _PixelSource:
    """Pixels of image rows, batch by batch: from the pixel cache, or decoded on a thread pool a couple of
    batches ahead of the consumer; decoded rows are committed to the pixel cache as they come."""

    def __init__(self, root: Path, size: int, pool: ThreadPoolExecutor, dataset: str) -> None:
        self.root, self.size, self.pool, self.dataset = root, size, pool, dataset
        self.cache = _pixel_cache(size)
        self.committer = _Committer(self.cache)
        self.decoded = 0

    def _decode(self, rel: str) -> np.ndarray:
        path = self.root / rel
        try:
            return load_pixels(path, self.size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ConcordError(f"dataset {self.dataset!r}: image {path} cannot be read ({exc})") from exc

    def batches(self, keys: list[str], rel_paths: list[str], batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """(keys, uint8 pixels) per batch of `batch_size` rows, in order."""
        have = ~self.cache.missing(keys) if keys else np.zeros(0, bool)
        pending: deque[Future] = deque()
        to_decode = iter(np.flatnonzero(~have))
        ahead = 2 * batch_size

        def submit(n: int) -> None:
            for i in range(n):
                idx = next(to_decode, None)
                if idx is None:
                    return
                pending.append(self.pool.submit(self._decode, rel_paths[idx]))

        submit(ahead)
        try:
            for start in range(0, len(keys), batch_size):
                stop = min(start + batch_size, len(keys))
                out = np.empty((stop - start, self.size, self.size, 3), np.uint8)
                cached = np.flatnonzero(have[start:stop])
                if len(cached):
                    out[cached] = self.cache.read([keys[start + i] for i in cached])
                fresh = np.flatnonzero(~have[start:stop])
                for i in fresh:
                    out[i] = pending.popleft().result()
                submit(len(fresh))
                if len(fresh):
                    self.committer.add([keys[start + i] for i in fresh], out[fresh])
                    self.decoded += len(fresh)
                yield keys[start:stop], out
        finally:
            for f in pending:
                f.cancel()
            self.committer.flush()


def _image_rows(store, dataset_id: int) -> tuple[pd.DataFrame, Path, str]:
    ds = store.dataset_by_id(dataset_id)
    images = store.images_frame(dataset_id)
    return images, Path(ds.root), ds.name


def _ensure_pixels(store, dataset_id: int, size: int, batch_size: int, progress: Progress) -> dict[str, int]:
    images, root, name = _image_rows(store, dataset_id)
    unique = images.drop_duplicates("hash")
    with ThreadPoolExecutor(_decode_workers(), thread_name_prefix="concord-decode") as pool:
        source = _PixelSource(root, size, pool, name)
        todo = unique[source.cache.missing(unique["hash"].tolist())]
        keys = todo["hash"].tolist()
        return _run(f"images at {size}px", keys, source.batches(keys, todo["path"].tolist(), batch_size),
                    len(unique) - len(todo), progress, None)


def image_pixels(store, dataset_id: int, size: int, progress: Progress | None = None) -> Features:
    """Every image of the dataset decoded once, RGB, shorter side resized to `size` and centre-cropped (as
    open_clip's preprocessing): uint8 (n, size, size, 3), cached per image hash and size."""
    return next(image_pixel_batches(store, dataset_id, size, None, progress))


def image_pixel_batches(store, dataset_id: int, size: int, batch_size: int | None = 4096,
                        progress: Progress | None = None) -> Iterator[Features]:
    """The pixels `image_pixels` gives, `batch_size` images at a time (bounded memory; None: all in one batch, and
    one batch even for no image)."""
    _ensure_pixels(store, dataset_id, size, 256, progress or Progress())
    images = store.images_frame(dataset_id)
    cache = _pixel_cache(size)
    step = batch_size or max(len(images), 1)
    for start in range(0, max(len(images), 1), step):
        part = images.iloc[start:start + step]
        yield Features(part["image_id"].to_numpy(np.int64), cache.read(part["hash"].tolist()))


def _ensure_image_features(store, dataset_id: int, model: _Model, batch_size: int,
                           progress: Progress) -> tuple[dict[str, int], int]:
    """Compute and cache the image features not cached yet; returns the counts and how many images had to be
    decoded on the way (their pixels are cached too)."""
    info = model_info(model.name)
    if not info.image_pretrained:
        raise ConcordError(f"model {model.name!r} has no pretrained image tower: its image embeddings come from a "
                           "finished run's trained model")
    cache = _image_cache(model.name)
    images, root, name = _image_rows(store, dataset_id)
    unique = images.drop_duplicates("hash")
    todo = unique[cache.missing(unique["hash"].tolist())].sort_values("hash", kind="stable")
    keys = todo["hash"].tolist()
    with ThreadPoolExecutor(_decode_workers(), thread_name_prefix="concord-decode") as pool:
        source = _PixelSource(root, info.image_size, pool, name)

        def batches() -> Iterator[tuple[list[str], np.ndarray]]:
            with closing(source.batches(keys, todo["path"].tolist(), batch_size)) as decoded:
                for batch_keys, pixels in decoded:
                    yield batch_keys, model.get().image_features(pixels).cpu().numpy()

        counts = _run("image features", keys, batches(), len(unique) - len(todo), progress, _Committer(cache))
    return counts, source.decoded


def image_features(store, dataset_id: int, model: str, device: str = "auto", batch_size: int = 256,
                   progress: Progress | None = None) -> Features:
    """Normalised `encode_image` of every image, for models with a pretrained image tower (ConcordError
    otherwise)."""
    _ensure_image_features(store, dataset_id, _Model(model, device), batch_size, progress or Progress())
    images = store.images_frame(dataset_id)
    return Features(images["image_id"].to_numpy(np.int64), _image_cache(model).read(images["hash"].tolist()))


# ---------------------------------------------------------------------------------------------- embed
def embed(store, dataset_name: str, model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 256,
          progress: Progress | None = None) -> dict:
    """Compute whatever `model` needs for the dataset and is not cached: caption features, image features
    (pretrained image towers), and the images decoded at the model's input size. Resumable (work is
    committed in chunks) and cancellable (between batches). Returns computed/cached counts per kind."""
    progress = progress or Progress()
    info = model_info(model)
    ds = store.dataset(dataset_name)
    handle = _Model(model, device)
    t0 = time.perf_counter()
    out: dict = {"dataset": ds.name, "model": model, "identity": info.identity}
    caps = store.captions_frame(ds.id)
    out["captions"] = _ensure_texts(caps["hash"].tolist(), caps["text"].tolist(), handle, batch_size, progress)
    if info.image_pretrained:
        out["image_features"], decoded = _ensure_image_features(store, ds.id, handle, batch_size, progress)
    else:
        out["image_features"], decoded = None, 0
    pixels = _ensure_pixels(store, ds.id, info.image_size, batch_size, progress)
    out["pixels"] = {"computed": pixels["computed"] + decoded, "cached": pixels["cached"] - decoded}
    out["pixel_size"] = info.image_size
    out["device"] = str(resolve_device(device))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def missing_counts(store, dataset_id: int, model: str = DEFAULT_MODEL) -> dict[str, int]:
    """How many captions, images (pixels) and image features `embed` would compute now (0 everywhere: ready)."""
    info = model_info(model)
    caps = store.captions_frame(dataset_id).drop_duplicates("hash")
    images = store.images_frame(dataset_id).drop_duplicates("hash")
    hashes = images["hash"].tolist()
    return {
        "captions": int(_text_cache(model).missing(caps["hash"].tolist()).sum()),
        "pixels": int(_pixel_cache(info.image_size).missing(hashes).sum()),
        "image_features": int(_image_cache(model).missing(hashes).sum()) if info.image_pretrained else 0,
    }
