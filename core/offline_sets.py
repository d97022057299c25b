"""Offline real image sets, from Debian packages (no network): Fashion-MNIST and Noto colour emoji.

- `fashion-mnist` (apt package `dataset-fashion-mnist`): product photos, 28×28 grey, upscaled. Every
  image is paired with the five captions of its class, so a caption of another image counts as
  mismatched exactly when it names another class. Train and val images come from the package's
  training file, test images from its test file.
- `emoji` (apt package `fonts-noto-color-emoji`): every single-code-point emoji of Noto Color Emoji
  drawn with Pillow (the colour bitmaps exist at size 109 only, so drawn there and resized) on white,
  with five captions made from its Unicode name.

Both pick their images with a seeded generator, split them like the demo, and write PNGs with the
demo's fixed encoder settings, so a seed gives the same files.
"""
from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from core.demo import png_bytes, split_sizes
from core.errors import ConcordError
from core.hashing import bytes_hash
from core.progress import Progress

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FRACTIONS = (0.8, 0.1, 0.1)

FASHION_CAPTIONS: tuple[tuple[str, ...], ...] = (
    ("a t-shirt", "a photo of a short-sleeved top", "a grey picture of a tee", "a simple t-shirt on a dark background",
     "a product photo of a casual top"),
    ("a pair of trousers", "a photo of long pants", "a grey picture of trousers", "trousers laid out flat",
     "a product photo of a pair of pants"),
    ("a pullover", "a photo of a long-sleeved sweater", "a grey picture of a jumper", "a knitted pullover laid flat",
     "a product photo of a sweater"),
    ("a dress", "a photo of a woman's dress", "a grey picture of a dress", "a dress on a dark background",
     "a product photo of a one-piece dress"),
    ("a coat", "a photo of a jacket with long sleeves", "a grey picture of a coat", "a winter coat laid out flat",
     "a product photo of an outdoor jacket"),
    ("a sandal", "a photo of an open summer shoe", "a grey picture of a sandal", "a strappy sandal seen from the side",
     "a product photo of a sandal"),
    ("a shirt", "a photo of a buttoned shirt", "a grey picture of a blouse", "a collared shirt laid out flat",
     "a product photo of a shirt"),
    ("a sneaker", "a photo of a sports shoe", "a grey picture of a trainer", "a running shoe seen from the side",
     "a product photo of a sneaker"),
    ("a bag", "a photo of a handbag", "a grey picture of a purse", "a bag with a handle", "a product photo of a bag"),
    ("an ankle boot", "a photo of a short boot", "a grey picture of an ankle boot", "a leather boot seen from the side",
     "a product photo of a boot"),
)
_EMOJI_RANGES = (range(0x1F300, 0x1FB00), range(0x2600, 0x27C0))
_EMOJI_DRAW_SIZE = 109


def _missing(package: str, path: Path) -> ConcordError:
    return ConcordError(f"{path} not found: install the Debian package {package} (apt-get install {package})")


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read()[header:], dtype=np.uint8)


def load_fashion_mnist(part: str, folder: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,)) of `part` `train` or `t10k`."""
    images, labels = folder / f"{part}-images-idx3-ubyte.gz", folder / f"{part}-labels-idx1-ubyte.gz"
    for path in (images, labels):
        if not path.exists():
            raise _missing("dataset-fashion-mnist", path)
    y = _read_idx(labels, 8)
    return _read_idx(images, 16).reshape(len(y), 28, 28), y


def _record_rows(rel: str, data: bytes, size: int, captions: tuple[str, ...], split: str, key: str) -> list[dict]:
    digest = bytes_hash(data)
    return [{"image_path": rel, "image_hash": digest, "width": size, "height": size, "nbytes": len(data),
             "caption": caption, "split": split, "key": f"{key}-{c}"} for c, caption in enumerate(captions)]


def write_fashion_mnist(folder: Path, images: int = 1000, image_size: int = 64, seed: int = 0,
                        progress: Progress | None = None, source: Path = FASHION_MNIST_DIR) -> pd.DataFrame:
    """`images` Fashion-MNIST images into `folder/images/`; returns the records (five per image)."""
    progress = progress or Progress()
    sizes = split_sizes(images, FRACTIONS)
    train_x, train_y = load_fashion_mnist("train", source)
    test_x, test_y = load_fashion_mnist("t10k", source)
    if sizes["train"] + sizes["val"] > len(train_y) or sizes["test"] > len(test_y):
        raise ConcordError(f"fashion-mnist has {len(train_y) + len(test_y):,} images; asked for {images:,}")
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(train_y))[:sizes["train"] + sizes["val"]]
    chosen = [("train", train_x, train_y, i, f"train{i:05d}") for i in picked[:sizes["train"]]]
    chosen += [("val", train_x, train_y, i, f"train{i:05d}") for i in picked[sizes["train"]:]]
    chosen += [("test", test_x, test_y, i, f"t10k{i:05d}") for i in rng.permutation(len(test_y))[:sizes["test"]]]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    progress.start("images", len(chosen), message="writing fashion-mnist images")
    rows: list[dict] = []
    for n, (split, xs, ys, i, key) in enumerate(chosen):
        img = Image.fromarray(xs[i]).resize((image_size, image_size), Image.Resampling.BICUBIC)
        data = png_bytes(img.convert("RGB"))
        rel = f"images/{key}.png"
        (folder / rel).write_bytes(data)
        rows += _record_rows(rel, data, image_size, FASHION_CAPTIONS[int(ys[i])], split, key)
        progress.advance()
        if n % 64 == 0:
            progress.check()
    return pd.DataFrame(rows)


def _emoji_name(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    if not name or "MODIFIER" in name or "COMPONENT" in name:
        return None
    return name.lower()


def emoji_captions(name: str) -> tuple[str, ...]:
    """Five captions for the emoji whose Unicode name (lower case) is `name`."""
    article = "an" if name[0] in "aeiou" else "a"
    return (name, f"an emoji of {article} {name}", f"the {name} emoji", f"a small colour picture of {article} {name}",
            f"{article} {name} icon on a white background")


def list_emoji(font: ImageFont.FreeTypeFont) -> list[str]:
    """Single-code-point emoji the font draws, with a usable Unicode name, in code-point order."""
    return [chr(cp) for r in _EMOJI_RANGES for cp in r
            if _emoji_name(chr(cp)) and font.getmask(chr(cp), mode="RGBA").getbbox()]


def write_emoji(folder: Path, images: int = 1000, image_size: int = 64, seed: int = 0,
                progress: Progress | None = None, font_path: Path = EMOJI_FONT) -> pd.DataFrame:
    """`images` emoji drawn into `folder/images/`; returns the records (five captions per emoji)."""
    progress = progress or Progress()
    if not font_path.exists():
        raise _missing("fonts-noto-color-emoji", font_path)
    font = ImageFont.truetype(str(font_path), _EMOJI_DRAW_SIZE)
    available = list_emoji(font)
    if images > len(available):
        raise ConcordError(f"the emoji font draws {len(available):,} emoji; asked for {images:,}")
    sizes = split_sizes(images, FRACTIONS)
    order = np.random.default_rng(seed).permutation(len(available))[:images]
    splits = ["train"] * sizes["train"] + ["val"] * sizes["val"] + ["test"] * sizes["test"]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    progress.start("images", images, message="drawing emoji")
    rows: list[dict] = []
    for n, (split, i) in enumerate(zip(splits, order)):
        ch = available[int(i)]
        canvas = Image.new("RGBA", (136, 128), (255, 255, 255, 255))
        ImageDraw.Draw(canvas).text((0, 0), ch, font=font, embedded_color=True)
        side = Image.new("RGB", (136, 136), (255, 255, 255))
        side.paste(canvas.convert("RGB"), (0, 4))
        data = png_bytes(side.resize((image_size, image_size), Image.Resampling.LANCZOS))
        key = f"u{ord(ch):05X}"
        rel = f"images/{key}.png"
        (folder / rel).write_bytes(data)
        rows += _record_rows(rel, data, image_size, emoji_captions(_emoji_name(ch) or ""), split, key)
        progress.advance()
        if n % 64 == 0:
            progress.check()
    return pd.DataFrame(rows)
