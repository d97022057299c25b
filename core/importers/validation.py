"""Checks of a single row's parts: the caption text, the image path (never escaping the root), and the
image file itself (decodable in full, its size and content hash), the last run on a thread pool."""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from PIL import Image

from core.hashing import bytes_hash
from core.progress import Progress

MAX_CAPTION_CHARS = 10_000
_BATCH = 256


@dataclass(frozen=True)
class Problem:
    """A refused row: the file, where in it, and why."""

    file: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} {self.where}: {self.reason}"


@dataclass(frozen=True)
class ImageInfo:
    """What the import records of an image that decoded in full."""

    hash: str
    width: int
    height: int
    nbytes: int


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def caption_problem(caption: Any) -> str | None:
    """Why `caption` cannot be imported, or None. The text is never altered (no stripping)."""
    if caption is None or (isinstance(caption, str) and not caption.strip()):
        return "empty caption"
    if not isinstance(caption, str):
        return f"caption is not text ({type(caption).__name__} {caption!r})"
    if _not_utf8(caption):
        return "caption holds bytes that are not UTF-8"
    if len(caption) > MAX_CAPTION_CHARS:
        return f"caption is {len(caption):,} characters, over the limit of {MAX_CAPTION_CHARS:,}"
    return None


def resolve_image_path(root: Path, raw: Any) -> tuple[str, Path] | str:
    """`(relative posix path, absolute path)` of an image under `root` (already resolved), or why not.

    Refuses absolute paths, paths that leave the root through `..`, and symlinks pointing outside it."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "empty image path"
    if not isinstance(raw, str):
        return f"image path is not text ({raw!r})"
    if _not_utf8(raw):
        return "image path holds bytes that are not UTF-8"
    if raw.startswith(("/", "\\")) or os.path.isabs(raw) or (len(raw) > 1 and raw[1] == ":"):
        return f"image path {raw!r} is absolute; paths must be relative to the images root {root}"
    rel = PurePosixPath(os.path.normpath(raw.replace("\\", "/"))).as_posix()
    target = (root / rel).resolve()
    if rel == ".." or rel.startswith("../") or not target.is_relative_to(root):
        return f"image path {raw!r} escapes the images root {root}"
    if not target.is_file():
        return f"image {raw!r} not found under {root}"
    return rel, target


def check_image(path: Path) -> ImageInfo | str:
    """Read, verify and fully decode one image (a full load catches truncation); its info or why not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read image {path.name} ({exc.strerror or exc})"
    if not data:
        return f"image {path.name} is an empty file"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, struct.error…)
        return f"unreadable or truncated image {path.name} ({type(exc).__name__}: {exc})"
    return ImageInfo(bytes_hash(data), int(width), int(height), len(data))


def check_images(paths: Iterable[Path], progress: Progress, workers: int = 2) -> dict[Path, ImageInfo | str]:
    """`check_image` for every path on `workers` threads, in batches between which a cancel takes effect."""
    todo = list(dict.fromkeys(paths))
    progress.start("checking images", len(todo), message=f"checking {len(todo):,} images")
    out: dict[Path, ImageInfo | str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(todo), _BATCH):
            progress.check()
            batch = todo[start:start + _BATCH]
            out.update(zip(batch, pool.map(check_image, batch)))
            progress.advance(len(batch))
    return out
