"""Bad input: each kind is refused naming file, line/row and reason, leaving the database unchanged;
with skip_bad exactly the good rows go in and the bad ones are listed in a CSV report."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ConcordError
from core.importers import import_dataset

HEADER = "pair_id,image,caption\n"
GOOD = "g1,a.png,a red square\ng2,b.png,a blue square\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), "red").save(data / "a.png")
    Image.new("RGB", (8, 8), "blue").save(data / "b.png")
    return data


@pytest.fixture
def existing(store, folder: Path):
    """A dataset already in the database, with a decision: a refused replace must leave all of it alone."""
    (folder / "old.csv").write_text(HEADER + GOOD, encoding="utf-8")
    report = import_dataset(store, folder / "old.csv", "ds")
    first = int(store.pairs_frame(report.dataset_id)["pair_id"].iloc[0])
    store.decide(report.dataset_id, [first], "keep", "ann")
    return report.dataset_id


def snapshot(store, dataset_id: int):
    return (store.pairs_frame(dataset_id).drop(columns=["similarity", "clean_prob", "weight"]).to_dict("records"),
            store.images_frame(dataset_id).to_dict("records"),
            store.dataset_by_id(dataset_id).source_path, len(store.meta_frame(dataset_id)))


def write_csv_bytes(folder: Path, bad_row: bytes) -> Path:
    path = folder / "pairs.csv"
    path.write_bytes((HEADER + "g1,a.png,a red square\n").encode() + bad_row + b"\ng2,b.png,a blue square\n")
    return path


def truncated_png(folder: Path) -> bytes:
    Image.effect_noise((64, 64), 50).convert("RGB").save(folder / "full.png")
    data = (folder / "full.png").read_bytes()
    (folder / "t.png").write_bytes(data[: len(data) // 2])
    return b"bad,t.png,a truncated one"


def outside_symlink(folder: Path) -> bytes:
    outside = folder.parent / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    os.symlink(outside, folder / "link.png")
    return b"bad,link.png,points outside"


def self_loop(folder: Path) -> bytes:
    os.symlink("loop.png", folder / "loop.png")
    return b"bad,loop.png,a link to itself"


def two_link_loop(folder: Path) -> bytes:
    os.symlink("y.png", folder / "x.png")
    os.symlink("x.png", folder / "y.png")
    return b"bad,x.png,two links pointing at each other"


def dangling_link(folder: Path) -> bytes:
    os.symlink("gone.png", folder / "dangling.png")
    return b"bad,dangling.png,a link to nothing"


def oversized_png(folder: Path) -> bytes:
    Image.new("1", (8200, 8200)).save(folder / "huge.png")  # 67 M pixels in a few kB
    return b"bad,huge.png,too many pixels"


def truncated_jpeg(folder: Path) -> bytes:
    Image.effect_noise((64, 64), 50).convert("RGB").save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    (folder / "t.jpg").write_bytes(data[: len(data) * 2 // 3])
    return b"bad,t.jpg,cut short"


def unsupported_format(folder: Path) -> bytes:
    Image.new("RGB", (8, 8), "red").save(folder / "pcx.png", format="PCX")  # the extension lies too
    return b"bad,pcx.png,a PCX file"


def text_named_png(folder: Path) -> bytes:
    (folder / "notes.png").write_text("just some text, not an image")
    return b"bad,notes.png,a text file with an image extension"


def outside_folder_link(folder: Path) -> bytes:
    """A regular file reached through a linked folder that leads outside the root (the fast path's folder check)."""
    away = folder.parent / "away"
    away.mkdir()
    Image.new("RGB", (4, 4)).save(away / "c.png")
    os.symlink(away, folder / "sub")
    return b"bad,sub/c.png,through a linked folder"


def folder_named_png(folder: Path) -> bytes:
    (folder / "dir.png").mkdir()
    return b"bad,dir.png,a folder"


CASES = {
    "symlink loop": (self_loop, r"image path 'loop.png' is a link that loops \(it leads back to itself\)"),
    "two-link loop": (two_link_loop, r"image path 'x.png' is a link that loops"),
    "dangling link": (dangling_link, r"image 'dangling.png' is a link to a file that does not exist"),
    "oversized image": (oversized_png, r"image huge.png is 8,200×8,200 pixels, over the limit of 67,108,864"),
    "truncated jpeg": (truncated_jpeg, r"unreadable or truncated image t.jpg \(OSError: "),
    "unsupported format": (unsupported_format, r"image pcx.png is in the PCX format; import PNG, JPEG"),
    "extension lies, not an image": (text_named_png, r"unreadable or truncated image notes.png \(not an image PIL "
                                                     r"can read\)"),
    "folder, not a file": (folder_named_png, r"image 'dir.png' not found under .* \(it is a folder\)"),
    "control character": (lambda f: b"bad,a.png,a bell\x07 rings", r"caption holds the control character U\+0007 at "
                                                                    r"character 7"),
    "escape sequence": (lambda f: b"bad,a.png,\x1b[31mred\x1b[0m", r"control character U\+001B at character 1"),
    "NUL byte": (lambda f: b"bad,a.png,nul\x00inside", r"control character U\+0000 at character 4"),
    "C1 control": (lambda f: "bad,a.png,next\u0085line".encode(), r"control character U\+0085 at character 5"),
    "DEL": (lambda f: b"bad,a.png,del\x7f", r"control character U\+007F at character 4"),
    "missing image": (lambda f: b"bad,nope.png,no such image", r"image 'nope.png' not found under"),
    "unreadable image": (lambda f: (f / "junk.png").write_bytes(b"not an image at all") and b"bad,junk.png,junk",
                         r"unreadable or truncated image junk.png \(not an image PIL can read\)"),
    "truncated image": (truncated_png, r"unreadable or truncated image t.png \(OSError: "),
    "dotdot escape": (lambda f: b"bad,../outside.png,escapes", r"image path '../outside.png' escapes the images root"),
    "absolute path": (lambda f: f"bad,{f / 'a.png'},absolute".encode(), r"is absolute; paths must be relative"),
    "symlink outside": (outside_symlink, r"image path 'link.png' escapes the images root"),
    "linked folder outside": (outside_folder_link, r"image path 'sub/c.png' escapes the images root"),
    "empty caption": (lambda f: b'bad,a.png,""', r"empty caption"),
    "whitespace caption": (lambda f: b"bad,a.png,   \t ", r"empty caption"),
    "caption too long": (lambda f: b"bad,a.png," + b"x" * 10_001,
                         r"caption is 10,001 characters, over the limit of 10,000"),
    "not utf-8": (lambda f: b"bad,a.png,caf\xe9 latin-1", r"caption holds bytes that are not UTF-8 \(byte 0xE9 at "
                                                          r"character 4\); save the file as UTF-8"),
    "image path not utf-8": (lambda f: b"bad,caf\xe9.png,latin-1 path", r"image path holds bytes that are not UTF-8"),
    "duplicate pair_id": (lambda f: b"g1,b.png,same id again", r"duplicate pair_id 'g1' \(first at line 2\)"),
    "more fields than the header": (lambda f: b"bad,a.png,a dog, a cat, and a bird",
                                    r"row has 5 fields, the header has 3 \(quote a caption that holds a comma\)"),
    "NUL in the image path": (lambda f: b"bad,a.png\x00x,a NUL in the name",
                              r"image path holds the control character U\+0000 at character 6"),
    "escape in the image path": (lambda f: b"bad,\x1b[1ma.png,an escape in the name",
                                 r"image path holds the control character U\+001B at character 1"),
    "name too long": (lambda f: b"bad," + b"x" * 300 + b".png,a name over 255 bytes",
                      r"image 'x{300}\.png' cannot be reached \(File name too long\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_row_refuses_everything(store, folder: Path, existing: int, case: str) -> None:
    make_row, reason = CASES[case]
    path = write_csv_bytes(folder, make_row(folder))
    before = snapshot(store, existing)
    with pytest.raises(ConcordError) as err:
        import_dataset(store, path, "ds", replace=True)
    message = str(err.value)
    assert f"{path} line 3: " in message, message
    assert __import__("re").search(reason, message), message
    assert "refused, nothing changed: 1 bad row(s) of 3" in message and "--skip-bad" in message
    assert snapshot(store, existing) == before


@pytest.mark.parametrize("case", list(CASES))
def test_skip_bad_imports_exactly_the_good_rows(store, folder: Path, case: str) -> None:
    make_row, reason = CASES[case]
    path = write_csv_bytes(folder, make_row(folder))
    report = import_dataset(store, path, "ds", skip_bad=True)
    pairs = store.pairs_frame(report.dataset_id)
    assert sorted(zip(pairs["key"], pairs["caption"])) == [("g1", "a red square"), ("g2", "a blue square")]
    assert [(p.where, p.file) for p in report.skipped] == [("line 3", str(path))]
    assert Path(report.report_path).parent == Path(os.environ["CONCORD_HOME"]) / "import-reports"
    with open(report.report_path, newline="", encoding="utf-8") as fh:
        listed = list(csv.DictReader(fh))
    assert [r["location"] for r in listed] == ["line 3"]
    assert __import__("re").search(reason, listed[0]["reason"])


def test_malformed_json_names_line_and_column(store, folder: Path) -> None:
    (folder / "c.json").write_text('{"images": [\n  {"id": 1, "file_name": "a.png"}\n  "annotations": []}')
    with pytest.raises(ConcordError, match=r"c.json line 3 column 3: malformed JSON \(Expecting ',' delimiter\)"):
        import_dataset(store, folder / "c.json", "ds", skip_bad=True)
    assert store.dataset_names() == []


def test_malformed_jsonl_line_is_a_bad_row(store, folder: Path) -> None:
    lines = ['{"image": "a.png", "caption": "red"}', '{"image": "b.png", "caption": ', '{"image": "b.png"}',
             '{"image": "b.png", "caption": "blue"}']
    (folder / "p.jsonl").write_text("\n".join(lines))
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder / "p.jsonl", "ds")
    assert "p.jsonl line 2: malformed JSON (Expecting value at column 31)" in str(err.value)
    assert "p.jsonl line 3: no 'caption' field" in str(err.value)
    assert store.dataset_names() == []
    report = import_dataset(store, folder / "p.jsonl", "ds", skip_bad=True)
    assert report.pairs == 2 and [p.where for p in report.skipped] == ["line 2", "line 3"]


def test_missing_column_names_the_flag(store, folder: Path) -> None:
    (folder / "p.csv").write_text("file,caption\na.png,red\n")
    with pytest.raises(ConcordError, match=r"p.csv: missing column 'image' \(the file has: 'file', 'caption'\); "
                                           r"name the image column with --image-column"):
        import_dataset(store, folder / "p.csv", "ds", skip_bad=True)
    assert store.dataset_names() == []


@pytest.mark.parametrize("name,content,reason", [
    ("e.csv", b"", "the file is empty"), ("e.jsonl", b"\n  \n", "the file is empty"),
    ("h.csv", HEADER.encode(), "no data rows (only a header)"), ("e.json", b"", "the file is empty"),
])
def test_empty_file(store, folder: Path, name: str, content: bytes, reason: str) -> None:
    (folder / name).write_bytes(content)
    with pytest.raises(ConcordError, match=f"{name}: {__import__('re').escape(reason)}"):
        import_dataset(store, folder / name, "ds", skip_bad=True)
    assert store.dataset_names() == []


def test_coco_annotation_problems_are_located(store, folder: Path) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "missing.png"}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "red"}, {"id": 11, "image_id": 2, "caption": "x"},
                            {"id": 12, "image_id": 3, "caption": "y"}, {"id": 13, "image_id": 1, "caption": " "}]}
    (folder / "captions_val2014.json").write_text(json.dumps(coco))
    report = import_dataset(store, folder / "captions_val2014.json", "ds", skip_bad=True)
    assert [(p.where, p.reason) for p in report.skipped] == [
        ("annotations[1] (id 11)", f"image 'missing.png' not found under {folder.resolve()}"),
        ("annotations[2] (id 12)", "image_id 3 is not among the images"),
        ("annotations[3] (id 13)", "empty caption")]
    assert report.splits == {"val": {"images": 1, "captions": 1, "pairs": 1}}


def test_all_bad_with_skip_bad_is_refused(store, folder: Path) -> None:
    (folder / "p.csv").write_text(HEADER + "x,nope.png,red\n")
    with pytest.raises(ConcordError, match="nothing to import, all 1 rows are bad"):
        import_dataset(store, folder / "p.csv", "ds", skip_bad=True)
    assert store.dataset_names() == []
