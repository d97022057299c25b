"""A folder of fixed-shape array rows keyed by content hash, written in atomic chunks.

Each chunk is two `.npy` files, `NAME.values.npy` (the rows) and `NAME.keys.npy` (their 40-character hex
hashes, written last: it marks the chunk complete). Both are written to a temporary file and renamed, so a
process killed at any moment leaves either a whole chunk or nothing that counts; a rerun computes only what
no complete chunk holds. Readers memory-map the value files and gather the rows they want. Concurrent
writers never clash (unique chunk names); a row written twice is read from either chunk (same content).
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

KEY_DTYPE = "S40"
_KEYS, _VALUES = ".keys.npy", ".values.npy"


def _atomic_save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyedArrayCache:
    """Rows of shape `row_shape` and dtype `dtype`, one per key, under `folder`."""

    def __init__(self, folder: Path, row_shape: tuple[int, ...], dtype: str | np.dtype, description: str = "") -> None:
        self.folder = Path(folder)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "info.json"
        if not info.exists():
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix="info.json", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump({"description": description, "row_shape": self.row_shape, "dtype": self.dtype.str}, fh)
            os.replace(tmp, info)
        self._index: pd.Series | None = None   # key -> chunk name, over complete chunks
        self._scanned: set[str] = set()

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def chunks(self) -> list[str]:
        """Names of the complete chunks."""
        return sorted(p.name[:-len(_KEYS)] for p in self.folder.glob("*" + _KEYS))

    def _refresh(self) -> pd.Series:
        """Index the chunks completed since the last look (also by other processes)."""
        new = [c for c in self.chunks() if c not in self._scanned]
        if new or self._index is None:
            parts = [] if self._index is None else [self._index]
            for name in new:
                keys = np.load(self.folder / (name + _KEYS), allow_pickle=False)
                parts.append(pd.Series(name, index=pd.Index(keys.astype(str)), dtype=object))
            index = pd.concat(parts) if parts else pd.Series([], dtype=object)
            self._index = index[~index.index.duplicated(keep="first")]
            self._scanned.update(new)
        return self._index

    def __len__(self) -> int:
        return len(self._refresh())

    def missing(self, keys: Sequence[str]) -> np.ndarray:
        """Boolean mask over `keys`: True where no complete chunk holds the key."""
        index = self._refresh()
        return ~pd.Index(np.asarray(keys, dtype=str)).isin(index.index)

    def write(self, keys: Sequence[str], values: np.ndarray) -> None:
        """Commit rows as one new chunk (atomically: values first, then the keys that make it visible)."""
        keys_arr = np.asarray(keys, dtype=KEY_DTYPE)
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape != (len(keys_arr), *self.row_shape):
            raise ValueError(f"rows of shape {values.shape[1:]} for a cache of {self.row_shape}")
        if not len(keys_arr):
            return
        name = f"{uuid.uuid4().hex}"
        _atomic_save(self.folder / (name + _VALUES), values)
        _atomic_save(self.folder / (name + _KEYS), keys_arr)

    def read(self, keys: Sequence[str]) -> np.ndarray:
        """The rows of `keys`, in their order; KeyError naming the first key not cached."""
        keys = np.asarray(keys, dtype=str)
        out = np.empty((len(keys), *self.row_shape), dtype=self.dtype)
        if not len(keys):
            return out
        index = self._refresh()
        pos = index.index.get_indexer(keys)
        if (pos < 0).any():
            raise KeyError(f"{keys[np.argmax(pos < 0)]} is not in the cache {self.folder}")
        chunk_of = index.to_numpy()[pos]
        for name in pd.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == name)
            chunk_keys = np.load(self.folder / (name + _KEYS), allow_pickle=False).astype(str)
            rows = pd.Index(chunk_keys).get_indexer(keys[sel])
            values = np.load(self.folder / (name + _VALUES), mmap_mode="r", allow_pickle=False)
            order = np.argsort(rows, kind="stable")     # read the memory map front to back
            out[sel[order]] = values[rows[order]]
        return out
