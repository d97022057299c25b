"""Real files' forms that are imported correctly (normalised where needed): line ends, byte-order marks
and encodings, Unicode forms of file names, links within the root, images whose extension lies; and the
few that cannot be, refused with file, row and reason and nothing changed."""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ConcordError
from core.hashing import file_hash
from core.importers import import_dataset
from tests.test_import_bad import folder  # noqa: F401  the same two-image folder

CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")


def pairs(store, name: str = "ds") -> list[tuple[str, str, str]]:
    frame = store.pairs_frame(store.dataset(name).id)
    return sorted(zip(frame["key"], frame["image_path"], frame["caption"]))


TEXT = f"pair_id,image,caption\r\ng1,a.png,un {CAFE_NFC} crème\r\ng2,b.png,\"two\r\nlines\"\r\n"
WANT = [("g1", "a.png", f"un {CAFE_NFC} crème"), ("g2", "b.png", "two\nlines")]


@pytest.mark.parametrize("encoding,bom", [
    ("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
    ("utf-16-le", b""), ("utf-16-be", b""), ("utf-32-le", b"\xff\xfe\x00\x00"), ("utf-32-be", b"\x00\x00\xfe\xff"),
])
def test_csv_encodings_boms_and_crlf(store, folder: Path, encoding: str, bom: bytes) -> None:
    """CR LF line ends (and a CR LF inside a quoted caption, which becomes LF) in every Unicode encoding
    with or without its byte-order mark: the same pairs, accents intact."""
    (folder / "p.csv").write_bytes(bom + TEXT.encode(encoding))
    import_dataset(store, folder / "p.csv", "ds")
    assert pairs(store) == WANT


def test_jsonl_and_coco_in_utf16_with_bom(store, folder: Path) -> None:
    lines = [{"image": "a.png", "caption": "rouge\r\nvif"}, {"image": "b.png", "caption": "bleu"}]
    (folder / "p.jsonl").write_bytes("\r\n".join(json.dumps(x) for x in lines).encode("utf-16"))
    import_dataset(store, folder / "p.jsonl", "j")
    assert [c for _, _, c in pairs(store, "j")] == ["rouge\nvif", "bleu"]
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 1, "caption": "é"}]}
    (folder / "c.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(coco, ensure_ascii=False).encode())
    import_dataset(store, folder / "c.json", "c")
    assert pairs(store, "c") == [("5", "a.png", "é")]


def test_broken_utf16_is_refused_naming_the_file(store, folder: Path) -> None:
    (folder / "p.csv").write_bytes(b"\xff\xfe" + "pair_id,image,caption\n".encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(ConcordError, match=r"p.csv: not valid UTF-16-LE text \(byte \d+: .*\); save the file as UTF-8"):
        import_dataset(store, folder / "p.csv", "ds")
    assert store.dataset_names() == []


@pytest.mark.parametrize("on_disk,in_file", [(CAFE_NFD, CAFE_NFC), (CAFE_NFC, CAFE_NFD)])
def test_unicode_form_of_paths(store, folder: Path, on_disk: str, in_file: str) -> None:
    """A name written NFC in the file and NFD on disk (macOS), or the other way round, finds the file;
    the pair records the name as it is on disk so every later read finds it too."""
    (folder / on_disk).mkdir()
    Image.new("RGB", (8, 8), "green").save(folder / on_disk / f"{on_disk}.png")
    (folder / "p.csv").write_text(f"image,caption\n{in_file}/{in_file}.png,green\n", encoding="utf-8")
    report = import_dataset(store, folder / "p.csv", "ds")
    assert report.pairs == 1
    assert pairs(store) == [("1", f"{on_disk}/{on_disk}.png", "green")]


def test_link_within_the_root_is_followed(store, folder: Path) -> None:
    (folder / "sub").mkdir()
    os.symlink("../a.png", folder / "sub" / "alias.png")
    (folder / "p.csv").write_text("image,caption\nsub/alias.png,red through a link\n")
    import_dataset(store, folder / "p.csv", "ds")
    images = store.images_frame(store.dataset("ds").id)
    assert images["hash"].tolist() == [file_hash(folder / "a.png")]


def test_linked_folder_within_the_root_is_followed(store, folder: Path) -> None:
    """A folder link that stays inside the root: the image is found through it and stored under the path as written."""
    (folder / "real").mkdir()
    Image.new("RGB", (6, 6), "teal").save(folder / "real" / "t.png")
    os.symlink("real", folder / "alias")
    (folder / "p.csv").write_text("image,caption\nalias/t.png,teal through a linked folder\n")
    import_dataset(store, folder / "p.csv", "ds")
    images = store.images_frame(store.dataset("ds").id)
    assert images["path"].tolist() == ["alias/t.png"]
    assert images["hash"].tolist() == [file_hash(folder / "real" / "t.png")]


def test_image_whose_extension_lies_is_read_by_content(store, folder: Path) -> None:
    Image.new("RGB", (12, 7), "purple").save(folder / "photo.png", format="JPEG")
    Image.new("RGB", (5, 9), "orange").save(folder / "scan.jpg", format="PNG")
    (folder / "p.csv").write_text("image,caption\nphoto.png,a jpeg named png\nscan.jpg,a png named jpg\n")
    import_dataset(store, folder / "p.csv", "ds")
    images = store.images_frame(store.dataset("ds").id).set_index("path")
    assert (images.loc["photo.png", "width"], images.loc["photo.png", "height"]) == (12, 7)
    assert (images.loc["scan.jpg", "width"], images.loc["scan.jpg", "height"]) == (5, 9)
    assert images.loc["photo.png", "hash"] == file_hash(folder / "photo.png")


def test_bad_row_in_one_file_of_an_export_folder_names_that_file(store, folder: Path) -> None:
    """An export folder with several data files (COCO): the refusal names the file and the row."""
    manifest = {"concord_version": "x", "files": ["captions_train.json", "captions_val.json"], "images_root": "."}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    train = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 1, "image_id": 1, "caption": "r"}]}
    val = {"images": [{"id": 2, "file_name": "b.png"}],
           "annotations": [{"id": 2, "image_id": 2, "caption": "tab\tok"}, {"id": 3, "image_id": 2, "caption": "\x07"}]}
    (folder / "captions_train.json").write_text(json.dumps(train))
    (folder / "captions_val.json").write_text(json.dumps(val))
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder)
    assert (f"{folder / 'captions_val.json'} annotations[1] (id 3): caption holds the control character U+0007 "
            "at character 1") in str(err.value)
    assert "1 bad row(s) of 3" in str(err.value) and store.dataset_names() == []
    report = import_dataset(store, folder, skip_bad=True)
    assert report.name == "data" and report.splits == {"train": {"images": 1, "captions": 1, "pairs": 1},
                                                       "val": {"images": 1, "captions": 1, "pairs": 1}}


def test_folder_without_manifest_needs_one_data_file(store, folder: Path) -> None:
    (folder / "p.csv").write_text("image,caption\na.png,red\n")
    assert import_dataset(store, folder).name == "data"
    (folder / "q.jsonl").write_text('{"image": "b.png", "caption": "blue"}\n')
    with pytest.raises(ConcordError, match=r"without a Concord export manifest and with 2 data files "
                                           r"\(p.csv, q.jsonl\); give the data file"):
        import_dataset(store, folder, "other")
    assert store.dataset_names() == ["data"]
