"""What a run leaves in the cache: its checkpoint and its embeddings, keyed by the run (`Run.cache_key`).

Everything here can be recomputed by running the run again, so it lives under `CONCORD_CACHE/runs/KEY/`.
The embeddings (one L2-normalised vector per image and per caption of the dataset, under the run's trained
model) serve the neighbours, the suggestions and the map.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from core import paths
from core.errors import NotFound
from core.store import Run


@dataclass(frozen=True)
class RunEmbeddings:
    """Per-image and per-caption embeddings (float32, L2-normalised) under one run's model."""

    image_ids: np.ndarray
    image_emb: np.ndarray
    caption_ids: np.ndarray
    caption_emb: np.ndarray

    def image_rows(self, ids: Sequence[int]) -> np.ndarray:
        """Embeddings of these image ids, in their order."""
        return self.image_emb[_positions(self.image_ids, ids, "image")]

    def caption_rows(self, ids: Sequence[int]) -> np.ndarray:
        """Embeddings of these caption ids, in their order."""
        return self.caption_emb[_positions(self.caption_ids, ids, "caption")]


def _positions(known: np.ndarray, wanted: Sequence[int], what: str) -> np.ndarray:
    """Row positions in `known` of each id in `wanted`; KeyError naming the first id not there."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(known) == 0:
        if len(wanted):
            raise KeyError(f"no embedding for {what} id {int(wanted[0])}")
        return wanted
    order = np.argsort(known, kind="stable")
    pos = order[np.minimum(np.searchsorted(known[order], wanted), len(known) - 1)]
    missing = known[pos] != wanted
    if missing.any():
        raise KeyError(f"no embedding for {what} id {int(wanted[np.argmax(missing)])}")
    return pos


def _folder(run: Run) -> Path:
    return paths.cache_dir() / "runs" / run.cache_key


def run_dir(run: Run) -> Path:
    """The run's cache folder (created)."""
    d = _folder(run)
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoint_path(run: Run) -> Path:
    """Where the run's resumable checkpoint lives (a torch file)."""
    return run_dir(run) / "checkpoint.pt"


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz so that readers see the old file or the whole new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def embeddings_path(run: Run) -> Path:
    return _folder(run) / "embeddings.npz"


def save_embeddings(run: Run, emb: RunEmbeddings) -> None:
    run_dir(run)
    atomic_save_npz(embeddings_path(run),
                    image_ids=np.asarray(emb.image_ids, np.int64), image_emb=np.asarray(emb.image_emb, np.float32),
                    caption_ids=np.asarray(emb.caption_ids, np.int64),
                    caption_emb=np.asarray(emb.caption_emb, np.float32))


def has_embeddings(run: Run) -> bool:
    return embeddings_path(run).exists()


def load_embeddings(run: Run) -> RunEmbeddings:
    """The run's embeddings; `NotFound` saying what to do when the cache no longer has them."""
    path = embeddings_path(run)
    if not path.exists():
        raise NotFound(f"run {run.id} has no embeddings in the cache ({path}); the cache was cleared or the run "
                       "did not finish: run it again to recompute them")
    return read_embeddings(path)


def read_embeddings(path: Path) -> RunEmbeddings:
    """The embeddings in the .npz file `path` (see `save_embeddings`)."""
    with np.load(path) as z:
        return RunEmbeddings(z["image_ids"], z["image_emb"], z["caption_ids"], z["caption_emb"])



def clear_run(run: Run) -> None:
    """Remove what the cache holds for `run` (checkpoint, embeddings, maps, neighbours): its row is deleted."""
    shutil.rmtree(_folder(run), ignore_errors=True)
