"""Thumbnails: small PNGs of dataset images, made once and cached by image content and size.

Pages show these bytes instead of reading and decoding the original file on every rerun. The image path is
resolved inside the dataset root (never escaping it).
"""
from __future__ import annotations

import base64
import io
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps

from core import paths
from core.errors import ConcordError


def image_file(root: str | os.PathLike, rel_path: str) -> Path:
    """The file of image `rel_path` under `root`; refuses a path that escapes the root."""
    base = Path(root).resolve()
    target = (base / rel_path).resolve()
    if target != base and base not in target.parents:
        raise ConcordError(f"image path {rel_path!r} escapes the dataset root {base}")
    return target


def thumbnail(root: str | os.PathLike, rel_path: str, image_hash: str, size: int = 128, upscale: bool = False) -> bytes:
    """PNG bytes of the image fitted within `size`×`size` (aspect kept), cached per (hash, size).

    With `upscale`, an image smaller than `size` is enlarged by a whole factor with nearest-neighbour
    sampling, so small generated images stay sharp when shown large."""
    kind = f"{int(size)}{'u' if upscale else ''}"
    cached = paths.cache_dir() / "thumbs" / kind / image_hash[:2] / f"{image_hash}.png"
    if cached.exists():
        return cached.read_bytes()
    try:
        with Image.open(image_file(root, rel_path)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            factor = size // max(im.size)
            if upscale and factor > 1:
                im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=False, compress_level=6)
    except OSError as exc:
        raise ConcordError(f"cannot read image {rel_path} under {root}: {exc}") from None
    data = buf.getvalue()
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, cached)
    return data


def png_data_uri(data: bytes) -> str:
    """PNG bytes as a `data:` URI: shown with the page's own message, without a request of its own."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


URIS_KEPT = 512
"""How many images' `data:` URIs `image_uri` keeps in memory (a few KB to a few hundred KB each)."""


@lru_cache(maxsize=URIS_KEPT)
def image_uri(root: str, rel_path: str, image_hash: str, size: int, upscale: bool = False) -> str:
    """`thumbnail` as a `data:` URI, the latest `URIS_KEPT` kept: Review shows a pair's images again on every
    rerun and makes the next pair's ahead (`core.review.prefetch_pair`), so a key press reads no file for them."""
    return png_data_uri(thumbnail(root, rel_path, image_hash, size, upscale))
