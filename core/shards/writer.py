"""The scored output: one Parquet file per input shard, written whole or not at all, and a manifest.

`OUT/NAME.parquet` holds each pair's key, source shard and row, caption, image path and hash, similarity,
the consensus terms, clean_prob and weight, and (optionally) both embeddings. A shard whose file exists is
done, so a re-run skips it (resume). `OUT/_concord.json` records what scored the shards; a re-run with
another scorer into the same folder is refused rather than mixing two scorers' numbers. Images that came as
bytes are written once per content hash under `OUT/images/` so the app can show them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ConcordError
from core.shards.reader import Shard

MANIFEST = "_concord.json"
IMAGES = "images"
SCORES = ("similarity", "clean_prob", "weight")
COLUMNS = ("key", "shard", "row", "caption", "caption_hash", "image_path", "image_hash", *SCORES)
"""The columns every scored shard with rows has, and `attach` reads."""
EMBEDDINGS = ("image_emb", "caption_emb")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1), encoding="utf-8"))


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The manifest of output folder `out`; ConcordError when it is not a scored-shards folder."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ConcordError(f"{out} holds no scored shards ({MANIFEST} is missing): write them with "
                           "`python -m core shards score IN --out OUT`")
    return json.loads(path.read_text(encoding="utf-8"))


def output_files(out: str | os.PathLike) -> list[Path]:
    """The scored shard files of `out`, sorted by name."""
    return sorted(p for p in Path(out).glob("*.parquet") if not p.name.startswith("."))


def term_columns(files: Sequence[str | os.PathLike]) -> list[str]:
    """The per-pair term columns of scored shards, in file order: their float64 columns other than `SCORES` (the
    consensus terms when they were scored with them; none otherwise). An empty shard is written without them
    (and without the embeddings): `attach` leaves empty shards out."""
    names = (f.name for path in files for f in pq.read_schema(path)
             if pa.types.is_float64(f.type) and f.name not in SCORES)
    return list(dict.fromkeys(names))


class ShardWriter:
    """Writes scored shards into `out` under `manifest` (checked against an existing one)."""

    def __init__(self, out: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / MANIFEST
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("identity") != manifest.get("identity"):
                raise ConcordError(f"{out} holds shards scored by {old.get('identity', {}).get('scorer')!r} "
                                   f"with other settings; write these ({manifest['identity']['scorer']!r}) to "
                                   "another --out folder")
            manifest = old
        else:
            _write_json(path, manifest)
        self.manifest = manifest

    def record(self, **fields: Any) -> None:
        """Add fields to the manifest (e.g. the mixture a zero-shot pass fitted) and rewrite it."""
        self.manifest = {**self.manifest, **fields}
        _write_json(self.out / MANIFEST, self.manifest)

    def path(self, shard: Shard) -> Path:
        return self.out / f"{shard.name}.parquet"

    def done(self, shard: Shard) -> bool:
        return self.path(shard).exists()

    def pending(self, shards: Sequence[Shard]) -> list[Shard]:
        """The shards not written yet, in order."""
        return [s for s in shards if not self.done(s)]

    def image_path(self, image_hash: str, data: bytes) -> str:
        """Write an image that came as bytes under `OUT/images/` (once per content); its absolute path."""
        target = self.out / IMAGES / image_hash[:2] / image_hash
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
        return str(target)

    def write(self, shard: Shard, columns: dict[str, np.ndarray]) -> Path:
        """Write one shard's scored rows (a dict of equal-length columns; 2-d float arrays become fixed-size
        lists) atomically."""
        arrays = {}
        for name, values in columns.items():
            if isinstance(values, np.ndarray) and values.ndim == 2:
                flat = pa.array(np.ascontiguousarray(values, np.float32).ravel())
                arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
            else:
                arrays[name] = pa.array(values)
        table = pa.table(arrays)
        target = self.path(shard)
        _atomic_write(target, lambda tmp: pq.write_table(table, tmp))
        return target
