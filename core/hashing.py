"""Content hashes: the identity of images and captions (so re-imports keep decisions). A pair's identity is
sha1("<image hash>:<caption hash>"), made in SQL where the store writes the pairs (`Store.write_dataset`)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def text_hash(text: str) -> str:
    """Hash of a caption's exact UTF-8 bytes."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def bytes_hash(data: bytes) -> str:
    """Hash of an image file's bytes."""
    return hashlib.sha1(data).hexdigest()


def file_hash(path: str | Path) -> str:
    return bytes_hash(Path(path).read_bytes())

