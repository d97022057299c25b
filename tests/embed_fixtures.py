"""Small real datasets for the embedding tests: image files of several formats and modes on disk, written
into the store with `Store.write_dataset`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.hashing import file_hash

WORDS = ["dog", "cat", "horse", "bicycle", "red", "blue", "sofa", "beach", "two", "child", "kite", "street"]


def caption(n: int) -> str:
    """A distinct caption per n, of varying length."""
    words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(3 + n % 9)]
    return f"photo {n}: a " + " ".join(words)


def write_image(path: Path, n: int) -> None:
    """Image n: distinct content; every 4th a 300x200 JPEG (decoded at reduced scale), others PNGs in RGB,
    RGBA, L and P modes with odd sizes."""
    rng = np.random.default_rng(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    if n % 4 == 0:
        Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(path.with_suffix(".jpg"), quality=90)
        return
    mode = ["RGB", "RGBA", "L", "P"][n % 4]
    h, w = 40 + n % 50, 70 + (n * 13) % 60
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    img.save(path.with_suffix(".png"))


def image_name(n: int) -> str:
    return f"img/{n}.jpg" if n % 4 == 0 else f"img/{n}.png"


def records(root: Path, images: range, caps_per_image: int = 2) -> pd.DataFrame:
    rows = []
    for n in images:
        rel = image_name(n)
        if not (root / rel).exists():
            write_image(root / rel, n)
        with Image.open(root / rel) as img:
            w, h = img.size
        for c in range(caps_per_image):
            rows.append({"image_path": rel, "image_hash": file_hash(root / rel), "width": w, "height": h,
                         "nbytes": (root / rel).stat().st_size, "caption": caption(n * caps_per_image + c),
                         "split": "train", "key": f"{n}-{c}"})
    return pd.DataFrame(rows)


def make_dataset(store, root: Path, name: str, images: range, caps_per_image: int = 2, replace: bool = False) -> int:
    """Write dataset `name` over `images` (indices) under `root`; returns its id."""
    counts = store.write_dataset(name, root, "csv", records(root, images, caps_per_image), replace=replace)
    return counts["dataset_id"]
