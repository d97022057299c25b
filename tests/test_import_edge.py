"""Edge cases an audit found the importers got silently wrong, each now imported exactly or refused naming
file, row and reason with nothing stored: CSV rows with more fields than the header and quotes never closed,
COCO split words inside other words, repeated or unusable COCO ids, pair keys of rows without an id beside
rows with one, empty exports, `--split` for Karpathy files, per-image ids under the stored path, split names
with spaces."""
from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ConcordError
from core.export import ExportOptions, export_dataset
from core.importers import import_dataset
from tests.test_import_bad import existing, folder, snapshot  # noqa: F401  the same two-image folder and dataset


def pairs(store, name: str = "ds") -> list[tuple[str, str, str, str]]:
    """(key, image path, caption, split) of every pair of dataset `name`, sorted."""
    frame = store.pairs_frame(store.dataset(name).id)
    return sorted(zip(frame["key"], frame["image_path"], frame["caption"], frame["split"]))


def reported(report) -> list[list[str]]:
    """The (location, reason) of each row listed in an import's problem report."""
    with open(report.report_path, newline="", encoding="utf-8") as fh:
        return [[r["location"], r["reason"]] for r in csv.DictReader(fh)]


# ------------------------------------------------------------------ CSV: extra fields, quotes never closed
@pytest.mark.parametrize("name,text,fields", [
    ("p.csv", "image,caption\na.png,a dog, a cat, and a bird\nb.png,blue\n", "4 fields, the header has 2 (quote a "
                                                                             "caption that holds a comma)"),
    ("p.tsv", "image\tcaption\na.png\ta dog\tand a cat\nb.png\tblue\n", "3 fields, the header has 2 (quote a "
                                                                        "caption that holds a tab)"),
])
def test_a_row_with_more_fields_than_the_header_is_refused_not_cut(store, folder: Path, existing: int, name: str,
                                                                   text: str, fields: str) -> None:
    """Before: the caption was silently cut at its first unquoted delimiter ("a dog")."""
    (folder / name).write_text(text)
    before = snapshot(store, existing)
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder / name, "ds", replace=True)
    assert f"1 bad row(s) of 2: {folder / name} line 2: row has {fields} (all listed in" in str(err.value)
    assert snapshot(store, existing) == before
    report = import_dataset(store, folder / name, "new", skip_bad=True)
    assert pairs(store, "new") == [("2", "b.png", "blue", "train")]
    assert reported(report) == [["line 2", f"row has {fields}"]]


def test_a_quoted_caption_holding_the_delimiter_is_kept_whole(store, folder: Path) -> None:
    (folder / "p.csv").write_text('image,caption\na.png,"a dog, a cat, and a bird"\n')
    import_dataset(store, folder / "p.csv", "ds")
    assert pairs(store) == [("1", "a.png", "a dog, a cat, and a bird", "train")]


QUOTE_NEVER_CLOSED = ("opens a quote (\") that is never closed, so the rest of the file would be read as one "
                      "field; close the quote (a quote inside a quoted field is written twice: \"\")")


@pytest.mark.parametrize("text,where", [
    ('image,caption\na.png,"never closed\nb.png,ok\nb.png,fine\n', "line 2: the row"),
    ('image,caption\na.png,ok\nb.png,"two\nlines",\nb.png,"never closed\n\n', "line 5: the row"),
    ('image,"caption\na.png,red\n', "line 1: the header"),
])
def test_a_quote_never_closed_refuses_the_whole_file(store, folder: Path, existing: int, text: str,
                                                     where: str) -> None:
    """Before: the rest of the file became the caption of the row that opened the quote, and was stored."""
    (folder / "p.csv").write_text(text)
    before = snapshot(store, existing)
    for skip_bad in (False, True):
        with pytest.raises(ConcordError) as err:
            import_dataset(store, folder / "p.csv", "ds", replace=True, skip_bad=skip_bad)
        assert str(err.value) == f"{folder / 'p.csv'} {where} {QUOTE_NEVER_CLOSED}"
    assert snapshot(store, existing) == before and store.dataset_names() == ["ds"]


def test_a_quoted_field_past_the_size_limit_over_lines_refuses_the_file(store, folder: Path) -> None:
    """Past the csv module's limit (131,072 characters) the reader gives up inside the field; the lines after
    would be read as rows, so the file is refused. On one line the row alone is refused (the next line is a row)."""
    long = "x" * 70_000
    (folder / "p.csv").write_text(f'image,caption\na.png,red\nb.png,"{long}\n{long}\nb.png,not a row"\n')
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder / "p.csv", "ds", skip_bad=True)
    assert str(err.value) == (f"{folder / 'p.csv'} line 3: a quoted field of the row runs over lines 3–4 past "
                              "131,072 characters (a quote that is never closed?); the rows after it cannot be told "
                              "apart")
    assert store.dataset_names() == []
    (folder / "p.csv").write_text(f'image,caption\na.png,red\nb.png,"{long * 2}"\nb.png,blue\n')
    report = import_dataset(store, folder / "p.csv", "ds", skip_bad=True)
    assert pairs(store) == [("1", "a.png", "red", "train"), ("3", "b.png", "blue", "train")]
    assert reported(report) == [["line 3", "malformed CSV (field larger than field limit (131072))"]]


# ------------------------------------------------------------------ COCO: split words, ids
def coco(folder: Path, name: str, images: list, annotations: list) -> Path:
    (folder / name).write_text(json.dumps({"images": images, "annotations": annotations}))
    return folder / name


@pytest.mark.parametrize("file_name,json_name,split", [
    ("protest_01.png", "mycaps.json", "train"), ("interval_02.png", "mycaps.json", "train"),
    ("contest.png", "mycaps.json", "train"), ("trainval.png", "mycaps.json", "train"),
    ("a.png", "latest_caps.json", "train"), ("invalid.png", "mycaps.json", "train"),
    ("a.png", "captions_validation.json", "val"), ("valid/a.png", "mycaps.json", "val"),
    ("COCO_val2014_000001.png", "mycaps.json", "val"), ("val2017/a.png", "captions_train2017.json", "val"),
    ("Test/a.png", "mycaps.json", "test"), ("a.png", "captions_test2017.json", "test"),
    ("a.png", "captions_train.json", "train"), ("protest_01.png", "captions_val2014.json", "val"),
])
def test_coco_split_comes_from_whole_words_of_names(store, folder: Path, file_name: str, json_name: str,
                                                    split: str) -> None:
    """Before: `protest_01.jpg` was in test, `interval_02.jpg` in val, and all of `latest_caps.json` in test."""
    (folder / file_name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(folder / file_name, format="PNG")
    path = coco(folder, json_name, [{"id": 1, "file_name": file_name}], [{"id": 5, "image_id": 1, "caption": "c"}])
    import_dataset(store, path, "ds")
    assert pairs(store) == [("5", file_name, "c", split)]


def test_coco_duplicate_image_id_refuses_the_file(store, folder: Path, existing: int) -> None:
    """Before: the caption of a.png was stored as b.png's (the later entry replaced the earlier)."""
    path = coco(folder, "c.json", [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
                [{"id": 1, "image_id": 1, "caption": "caption of a.png"}])
    before = snapshot(store, existing)
    with pytest.raises(ConcordError) as err:
        import_dataset(store, path, "ds", replace=True, skip_bad=True)
    assert str(err.value) == (f"{path}: duplicate image id 1 (images[0] and images[1]); each image needs an id of "
                              "its own")
    assert snapshot(store, existing) == before


def test_coco_image_entry_repeated_as_it_was_is_one_image(store, folder: Path) -> None:
    path = coco(folder, "c.json", [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"},
                                   {"id": 1, "file_name": "a.png"}],
                [{"id": 1, "image_id": 1, "caption": "red"}, {"id": 2, "image_id": 2, "caption": "blue"}])
    report = import_dataset(store, path, "ds")
    assert (report.images, pairs(store)) == (2, [("1", "a.png", "red", "train"), ("2", "b.png", "blue", "train")])


@pytest.mark.parametrize("bad_id", [[1], {"n": 1}, 1.0, True, None])
def test_coco_image_id_that_is_not_an_integer_or_text_refuses_the_file(store, folder: Path, bad_id) -> None:
    """Before: a list or object id crashed the import (TypeError: unhashable type)."""
    path = coco(folder, "c.json", [{"id": 2, "file_name": "b.png"}, {"id": bad_id, "file_name": "a.png"}],
                [{"id": 1, "image_id": 2, "caption": "blue"}])
    with pytest.raises(ConcordError) as err:
        import_dataset(store, path, "ds", skip_bad=True)
    assert str(err.value) == f"{path} images[1]: image id {bad_id!r} is not an integer or text"
    assert store.dataset_names() == []


def test_coco_annotation_ids_that_are_not_integers_or_text_are_bad_rows(store, folder: Path) -> None:
    path = coco(folder, "c.json", [{"id": 1, "file_name": "a.png"}, {"id": "b", "file_name": "b.png"}],
                [{"id": 1, "image_id": [1], "caption": "x"}, {"id": {"k": 2}, "image_id": 1, "caption": "y"},
                 {"id": 3, "image_id": 1, "caption": "red"}, {"id": "four", "image_id": "b", "caption": "blue"},
                 {"id": 5, "caption": "z"}])
    with pytest.raises(ConcordError) as err:
        import_dataset(store, path, "ds")
    assert (f"3 bad row(s) of 5: {path} annotations[0] (id 1): image_id [1] is not an integer or text; "
            f"{path} annotations[1] (id {{'k': 2}}): id {{'k': 2}} is not an integer or text; "
            f"{path} annotations[4] (id 5): image_id None is not among the images (all listed in") in str(err.value)
    assert store.dataset_names() == []
    report = import_dataset(store, path, "ds", skip_bad=True)
    assert pairs(store) == [("3", "a.png", "red", "train"), ("four", "b.png", "blue", "train")]
    assert [p.where for p in report.skipped] == ["annotations[0] (id 1)", "annotations[1] (id {'k': 2})",
                                                 "annotations[4] (id 5)"]


# ------------------------------------------------------------------ pair keys of rows without a pair_id
def test_a_row_without_pair_id_whose_number_is_an_earlier_id_says_so(store, folder: Path, existing: int) -> None:
    """Before: "duplicate pair_id '2' (first at line 2)" for line 3, which has no pair_id at all."""
    (folder / "p.csv").write_text("image,caption,pair_id\na.png,first,2\nb.png,second,\n")
    before = snapshot(store, existing)
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder / "p.csv", "ds", replace=True)
    assert (f"1 bad row(s) of 2: {folder / 'p.csv'} line 3: no pair_id, and its number 2 is the pair_id at line 2 "
            "(a row without a pair_id is keyed by its number among the rows; give every row a pair_id, or none) "
            "(all listed in") in str(err.value)
    assert snapshot(store, existing) == before


def test_a_pair_id_that_is_an_earlier_rows_number_says_so(store, folder: Path) -> None:
    (folder / "p.csv").write_text("image,caption,pair_id\na.png,first,\nb.png,second,1\n")
    report = import_dataset(store, folder / "p.csv", "ds", skip_bad=True)
    assert pairs(store) == [("1", "a.png", "first", "train")]
    assert reported(report) == [["line 3", "pair_id '1' is the key of the row at line 2, which has no pair_id (a row "
                                           "without a pair_id is keyed by its number among the rows; give every "
                                           "row a pair_id, or none)"]]


def test_rows_with_and_without_pair_ids_that_do_not_clash_import(store, folder: Path) -> None:
    (folder / "p.csv").write_text("image,caption,pair_id\na.png,first,g1\nb.png,second,\na.png,third,7\n")
    import_dataset(store, folder / "p.csv", "ds")
    assert pairs(store) == [("2", "b.png", "second", "train"), ("7", "a.png", "third", "train"),
                            ("g1", "a.png", "first", "train")]


# ------------------------------------------------------------------ empty exports and files
def test_an_export_of_no_pairs_is_refused_as_empty(store, folder: Path) -> None:
    """A COCO export with every pair rejected has no split, so no data file. Before: IndexError."""
    (folder / "manifest.json").write_text(json.dumps({"concord_version": "x", "format": "coco", "files": []}))
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder, "ds")
    assert str(err.value) == (f"{folder}: the export is empty (its manifest.json lists no data files: it was "
                              "exported with no pairs)")
    assert store.dataset_names() == []


@pytest.mark.parametrize("fmt", ["auto", "karpathy"])
def test_a_karpathy_file_of_no_images_is_refused_as_empty(store, folder: Path, fmt: str) -> None:
    """What a Karpathy export of no pairs writes. Before: "neither MS-COCO captions nor a Karpathy split"."""
    (folder / "dataset.json").write_text('{"dataset": "ds", "images": []}')
    with pytest.raises(ConcordError) as err:
        import_dataset(store, folder / "dataset.json", "ds", fmt=fmt)
    assert str(err.value) == f"{folder / 'dataset.json'}: no images (the file holds no captions)"
    assert store.dataset_names() == []


# ------------------------------------------------------------------ splits
def test_split_option_names_the_split_of_karpathy_images_without_one(store, folder: Path) -> None:
    """Before: `--split test` was ignored for Karpathy files (every image without a split went to train)."""
    images = [{"filename": "a.png", "sentences": [{"raw": "no split in file", "sentid": 1}]},
              {"filename": "b.png", "split": "val", "sentences": [{"raw": "in val", "sentid": 2}]},
              {"filename": "b.png", "split": "restval", "sentences": [{"raw": "in restval", "sentid": 3}]}]
    (folder / "k.json").write_text(json.dumps({"images": images}))
    import_dataset(store, folder / "k.json", "ds", split="test")
    assert pairs(store) == [("1", "a.png", "no split in file", "test"), ("2", "b.png", "in val", "val"),
                            ("3", "b.png", "in restval", "train")]
    import_dataset(store, folder / "k.json", "default")
    assert [s for *_, s in pairs(store, "default")] == ["train", "val", "train"]


def test_split_names_lose_surrounding_spaces(store, folder: Path) -> None:
    """Before: `a.png,three, val` made a split named " val" beside "val"."""
    (folder / "p.csv").write_text("image,caption,split\na.png,one,val\nb.png,two, val \nb.png,three,\t\n")
    import_dataset(store, folder / "p.csv", "ds", split=" test ")
    assert pairs(store) == [("1", "a.png", "one", "val"), ("2", "b.png", "two", "val"),
                            ("3", "b.png", "three", "test")]
    path = coco(folder, "c.json", [{"id": 1, "file_name": "a.png", "split": " val "}],
                [{"id": 1, "image_id": 1, "caption": "red"}])
    import_dataset(store, path, "c")
    assert pairs(store, "c") == [("1", "a.png", "red", "val")]
    images = [{"filename": "a.png", "split": "test\n", "sentences": [{"raw": "red", "sentid": 1}]}]
    (folder / "k.json").write_text(json.dumps({"images": images}))
    import_dataset(store, folder / "k.json", "k")
    assert pairs(store, "k") == [("1", "a.png", "red", "test")]


# ------------------------------------------------------------------ per-image info under the stored path
def test_coco_image_ids_are_kept_under_the_stored_path_and_exported(store, folder: Path, tmp_path: Path) -> None:
    """Before: ids were kept under the file's `./a.png` but looked up by the stored `a.png`: a re-export gave
    new ids. The same for a name whose Unicode form on disk differs from the file's."""
    nfd, nfc = unicodedata.normalize("NFD", "é.png"), unicodedata.normalize("NFC", "é.png")
    Image.new("RGB", (4, 4), "green").save(folder / nfd)
    (folder / "sub").mkdir()
    Image.new("RGB", (4, 4), "teal").save(folder / "sub" / "t.png")
    path = coco(folder, "c.json", [{"id": 41, "file_name": "./a.png"}, {"id": 42, "file_name": "sub//t.png"},
                                   {"id": 43, "file_name": nfc}, {"id": 44, "file_name": "./never/used.png"}],
                [{"id": 1, "image_id": 41, "caption": "red"}, {"id": 2, "image_id": 42, "caption": "teal"},
                 {"id": 3, "image_id": 43, "caption": "green"}])
    import_dataset(store, path, "ds")
    assert pairs(store) == [("1", "a.png", "red", "train"), ("2", "sub/t.png", "teal", "train"),
                            ("3", nfd, "green", "train")]
    assert store.dataset("ds").info["coco"]["image_ids"] == {"a.png": 41, "sub/t.png": 42, nfd: 43,
                                                             "never/used.png": 44}
    export_dataset(store, "ds", tmp_path / "out", ExportOptions(format="coco"))
    exported = json.loads((tmp_path / "out" / "captions_train.json").read_text(encoding="utf-8"))
    assert {i["file_name"]: i["id"] for i in exported["images"]} == {"a.png": 41, "sub/t.png": 42, nfd: 43}


def test_karpathy_fields_are_kept_under_the_stored_path(store, folder: Path) -> None:
    (folder / "sub").mkdir()
    Image.new("RGB", (4, 4), "teal").save(folder / "sub" / "t.png")
    images = [{"filepath": "./sub/", "filename": "t.png", "imgid": 9, "cocoid": 77, "split": "restval",
               "sentences": [{"raw": "teal", "sentid": 1}]}]
    (folder / "k.json").write_text(json.dumps({"images": images}))
    import_dataset(store, folder / "k.json", "ds")
    assert pairs(store) == [("1", "sub/t.png", "teal", "train")]
    kept = store.dataset("ds").info["karpathy"]["images"]
    assert kept == {"sub/t.png": {"imgid": 9, "cocoid": 77, "filepath": "./sub/", "filename": "t.png",
                                  "split": "restval"}}
