"""Offline real sets from Debian packages: Fashion-MNIST with class captions, Noto colour emoji with
captions from Unicode names; deterministic files; a clear message naming the missing apt package."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ConcordError
from core.generated import GenerateOptions, create_generated
from core.offline_sets import FASHION_CAPTIONS, emoji_captions, write_emoji, write_fashion_mnist


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fashion_mnist_images_get_their_class_captions(tmp_path):
    df = write_fashion_mnist(tmp_path / "a", images=20, image_size=32, seed=1)
    assert len(df) == 100 and df["image_path"].nunique() == 20
    assert df.groupby("split")["image_path"].nunique().to_dict() == {"train": 16, "val": 2, "test": 2}
    assert df[df["split"] == "test"]["key"].str.startswith("t10k").all()
    class_of = {caps: c for c, caps in enumerate(FASHION_CAPTIONS)}
    for _, group in df.groupby("image_path"):
        assert tuple(group["caption"]) in class_of
    with Image.open(tmp_path / "a" / df["image_path"].iloc[0]) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    write_fashion_mnist(tmp_path / "b", images=20, image_size=32, seed=1)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")


def test_emoji_captions_come_from_unicode_names(tmp_path):
    df = write_emoji(tmp_path / "a", images=10, image_size=48, seed=2)
    assert len(df) == 50 and df["caption"].is_unique
    for path, group in df.groupby("image_path"):
        ch = chr(int(Path(path).stem[1:], 16))
        assert tuple(group["caption"]) == emoji_captions(unicodedata.name(ch).lower())
    with Image.open(tmp_path / "a" / df["image_path"].iloc[0]) as img:
        colours = img.convert("RGB").getcolors(48 * 48)
    assert len(colours) > 20  # drawn in colour, not blank
    write_emoji(tmp_path / "b", images=10, image_size=48, seed=2)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")


def test_emoji_caption_wording():
    assert emoji_captions("owl") == ("owl", "an emoji of an owl", "the owl emoji", "a small colour picture of an owl",
                                     "an owl icon on a white background")


def test_missing_packages_are_named(tmp_path):
    with pytest.raises(ConcordError, match=r"install the Debian package dataset-fashion-mnist"):
        write_fashion_mnist(tmp_path / "f", images=10, source=tmp_path / "nowhere")
    with pytest.raises(ConcordError, match=r"install the Debian package fonts-noto-color-emoji"):
        write_emoji(tmp_path / "e", images=10, font_path=tmp_path / "nowhere.ttf")


def test_create_an_offline_set_as_a_dataset(store):
    result = create_generated(store, "fm", GenerateOptions(source="fashion-mnist", images=10, noise=0.5))
    assert (result["images"], result["pairs"]) == (10, 50)
    assert result["noisy"] == 20  # ⌊0.5 · 8 train images · 5⌋
    two = create_generated(store, "emoji2", GenerateOptions(source="emoji", images=10, captions=2, noise=0))
    assert (two["images"], two["pairs"]) == (10, 20)
    for path, group in store.pairs_frame(store.dataset("emoji2").id).groupby("image_path"):
        ch = chr(int(Path(path).stem[1:], 16))
        assert tuple(group["caption"]) == emoji_captions(unicodedata.name(ch).lower())[:2]
    assert store.dataset("fm").source_format == "generated"
