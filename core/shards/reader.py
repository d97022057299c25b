"""The input shards: Parquet files of `image, caption` rows, listed from paths, globs, folders or fsspec URLs.

`image` holds a path (relative paths are resolved against the shard's folder) or the image's bytes. A shard's
output is named after its input (`Shard.name`), so two shards with the same file name in different folders
never collide and a re-run finds what it already wrote.
"""
from __future__ import annotations

import glob
import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ConcordError


@dataclass(frozen=True)
class ShardColumns:
    """Which input columns hold what: `image` (path or bytes) and `caption` are required; `key` (the pair's
    id) is used when present, else a pair is keyed `SHARD:ROW`; `split` (train, val, test or any name) is
    used when present, else every pair is `train`."""

    image: str = "image"
    caption: str = "caption"
    key: str = "key"
    split: str = "split"


@dataclass(frozen=True)
class Shard:
    """One input Parquet file: its location (`path`, local or an fsspec URL), its output name, its row count
    and the global position of its first row (shards are ordered by path)."""

    path: str
    name: str
    rows: int
    offset: int
    has_key: bool = False
    images_inline: bool = False    # the image column holds bytes (else paths)
    has_split: bool = False

    @property
    def folder(self) -> str:
        """Where the shard's relative image paths are resolved."""
        return posixpath.dirname(self.path) if _is_url(self.path) else str(Path(self.path).parent)


def _is_url(path: str) -> bool:
    return "://" in path


def _expand(item: str) -> list[str]:
    if _is_url(item):
        import fsspec
        fs, _, found = fsspec.get_fs_token_paths(item)
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        if len(found) == 1 and fs.isdir(found[0]):
            found = fs.glob(posixpath.join(found[0], "*.parquet"))
        return sorted(f"{protocol}://{p}" if "://" not in p else p for p in found)
    if os.path.isdir(item):
        return sorted(str(Path(p).resolve()) for p in glob.glob(os.path.join(item, "*.parquet")))
    return sorted(str(Path(p).resolve()) for p in glob.glob(item))


def _open(path: str):
    if _is_url(path):
        import fsspec
        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def shard_name(path: str) -> str:
    """The output name of the input shard at `path`: its file stem and a short digest of the whole path."""
    stem = posixpath.basename(path).rsplit(".", 1)[0]
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def list_shards(inputs: Sequence[str], columns: ShardColumns = ShardColumns()) -> list[Shard]:
    """Every Parquet shard named by `inputs` (files, globs, folders of `*.parquet`, fsspec URLs), sorted by
    path, with its row count from the Parquet footer. ConcordError when nothing matches, a file is not
    Parquet, or a shard lacks the image or caption column."""
    paths: list[str] = []
    for item in inputs:
        found = _expand(item)
        if not found:
            raise ConcordError(f"no Parquet shards match {item!r}")
        paths.extend(found)
    shards, offset = [], 0
    for path in sorted(dict.fromkeys(paths)):
        try:
            with _open(path) as fh:
                meta = pq.ParquetFile(fh)
                names = meta.schema_arrow.names
                kind = meta.schema_arrow.field(columns.image).type if columns.image in names else pa.string()
                rows = meta.metadata.num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConcordError(f"shard {path}: not a readable Parquet file ({exc})") from None
        for role in ("image", "caption"):
            if getattr(columns, role) not in names:
                raise ConcordError(f"shard {path}: missing column {getattr(columns, role)!r} "
                                   f"(it has: {', '.join(map(repr, names))})")
        shards.append(Shard(path, shard_name(path), int(rows), offset, has_key=columns.key in names,
                            images_inline=pa.types.is_binary(kind) or pa.types.is_large_binary(kind),
                            has_split=columns.split in names))
        offset += int(rows)
    for role, present in (("key", "has_key"), ("split", "has_split")):
        if len({getattr(s, present) for s in shards}) > 1:
            without = next(s.path for s in shards if not getattr(s, present))
            raise ConcordError(f"shard {without} has no {getattr(columns, role)!r} column while others have one: "
                               f"give every shard the {role} column, or none")
    return shards


def read_shard(shard: Shard, columns: ShardColumns = ShardColumns()) -> pa.Table:
    """The shard's image, caption and (when present) key and split columns."""
    with _open(shard.path) as fh:
        f = pq.ParquetFile(fh)
        return f.read(columns=input_columns(shard, columns))


def input_columns(shard: Shard, columns: ShardColumns = ShardColumns()) -> list[str]:
    """The columns a pipeline reads from the shard."""
    return ([columns.image, columns.caption] + ([columns.key] if shard.has_key else [])
            + ([columns.split] if shard.has_split else []))


def image_bytes(value: bytes | str, folder: str) -> bytes:
    """The bytes of an image cell: the bytes themselves, or the file at the path (relative to `folder`)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if _is_url(value) or _is_url(folder):
        target = value if _is_url(value) else posixpath.join(folder, value)
        with _open(target) as fh:
            return fh.read()
    return Path(folder, value).read_bytes()
