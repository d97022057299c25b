"""Content hashes: the identity of images, captions and pairs (so re-imports keep decisions)."""
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


def pair_uid(image_hash: str, caption_hash: str) -> str:
    """A pair's identity: the same image content with the same caption text."""
    return hashlib.sha1(f"{image_hash}:{caption_hash}".encode()).hexdigest()
