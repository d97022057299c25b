"""The import streams its rows: text read a chunk at a time (line ends and decoding errors exact across chunk
ends), Parquet a batch at a time, images remembered within a bounded window, the rows staged in DuckDB, and
Python's memory flat in the file's size."""
from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import core.importers.source as source
import core.importers.tabular as tabular
import core.importers.validation as validation
from core.errors import ConcordError
from core.hashing import text_hash
from core.importers import import_dataset
from core.importers.tabular import ColumnNames
from core.progress import Progress


@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 20])
def test_lines_end_where_the_csv_module_expects_across_chunk_ends(tmp_path: Path, monkeypatch, chunk: int) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\r\nb\rc\nd")
    monkeypatch.setattr(source, "_CHUNK", chunk)
    assert list(source.read_lines(path, "any")) == ["a\r\n", "b\r", "c\n", "d"]
    assert list(source.read_lines(path, "lf")) == ["a\r\n", "b\rc\n", "d"]


@pytest.mark.parametrize("chunk", [3, 4, 5, 1 << 20])
def test_a_utf16_error_names_its_byte_whatever_the_chunk(tmp_path: Path, monkeypatch, chunk: int) -> None:
    path = tmp_path / "t.csv"          # BOM (2 bytes), "ab" (4), a lone low surrogate at byte 6, "cd"
    path.write_bytes(b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x00\xdc" + "cd".encode("utf-16-le"))
    monkeypatch.setattr(source, "_CHUNK", chunk)
    with pytest.raises(ConcordError, match=r"t.csv: not valid UTF-16-LE text \(byte 6: "):
        list(source.read_lines(path, "any"))


def test_blank_lines_before_the_header_keep_their_numbers_and_white_space_alone_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b" \n\t\r\n")
    with pytest.raises(ConcordError, match="t.csv: the file is empty"):
        list(source.read_lines(path, "any"))
    path.write_bytes(b"\n\nx,y\n")
    assert list(source.read_lines(path, "any")) == ["\n", "\n", "x,y\n"]


def test_parquet_rows_are_numbered_across_batches(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"image": [f"i{n}.png" for n in range(8)], "caption": [f"c{n}" for n in range(8)]}), path)
    monkeypatch.setattr(tabular, "_PARQUET_BATCH", 3)
    src = tabular.read_parquet(path, ColumnNames(), "train")
    assert src.expected == 8
    assert ([(r.where, r.image, r.caption) for r in src.rows]
            == [(f"row {n + 1}", f"i{n}.png", f"c{n}") for n in range(8)])


def test_an_image_is_checked_once_within_the_recent_window(tmp_path: Path, monkeypatch) -> None:
    for name in "abc":
        Image.new("RGB", (2, 2)).save(tmp_path / f"{name}.png")
    monkeypatch.setattr(validation, "RECENT", 2)
    checked: list[str] = []
    paths = [str(tmp_path / f"{n}.png") for n in "abab" "c" "a"]
    validation.check_images(paths + [None], Progress(), len(paths) + 1, lambda b, r: checked.extend(b), workers=1)
    # a, b once; c evicts a (the window holds b, c), so the last a is checked again
    assert [Path(p).stem for p in checked] == ["a", "b", "c", "a"]


def _csv(folder: Path, rows: int) -> Path:
    """`rows` captions of one image: the import's Python memory is then the rows', not the images'."""
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "one.png")
    path = folder / f"p{rows}.csv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("pair_id,image,caption,split\n")
        for n in range(rows):
            fh.write(f"k{n},one.png,a caption long enough to weigh something: number {n} of the file,train\n")
    return path


def _peak_bytes(store, path: Path) -> int:
    tracemalloc.start()
    try:
        report = import_dataset(store, path, path.stem, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.pairs == int(path.stem[1:])
    return peak


def test_python_memory_of_an_import_does_not_grow_with_the_file(store, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(source, "_CHUNK", 1 << 16)   # both files span many chunks (a chunk is decoded whole)
    small, large = _peak_bytes(store, _csv(tmp_path, 10_000)), _peak_bytes(store, _csv(tmp_path, 40_000))
    # before the staging, every row was held in Python: 8.5 MB for 10,000 rows, 34.2 MB for 40,000 (now 4.6 and 4.7)
    assert large < 1.5 * small, (small, large)


def test_staged_rows_keep_order_ids_and_the_pair_identity(store, tmp_path: Path) -> None:
    path = _csv(tmp_path, 20_000)   # more than two staging batches
    report = import_dataset(store, path, "d", workers=1)
    pairs = store.pairs_frame(report.dataset_id)
    assert pairs["key"].tolist() == [f"k{n}" for n in range(20_000)]
    image_hash = hashlib.sha1((tmp_path / "one.png").read_bytes()).hexdigest()
    uids = dict(store.cursor().execute("SELECT key, uid FROM pairs").fetchall())
    caption = pairs["caption"].iloc[7]
    assert uids["k7"] == hashlib.sha1(f"{image_hash}:{text_hash(caption)}".encode()).hexdigest()
    assert store.cursor().execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]


def test_a_refused_streamed_import_leaves_no_staging_and_nothing_written(store, tmp_path: Path) -> None:
    path = _csv(tmp_path, 9_000)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("k5,one.png,the id again,train\nk9000,missing.png,no such image,train\n")
    with pytest.raises(ConcordError, match=r"2 bad row\(s\) of 9002: .*line 9002: duplicate pair_id 'k5' "
                                           r"\(first at line 7\); .*line 9003: "):
        import_dataset(store, path, "d", workers=1)
    assert not store.has_dataset("d")
    assert store.cursor().execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    report = import_dataset(store, path, "d", skip_bad=True, workers=1)
    assert (report.pairs, report.skipped_count, [p.where for p in report.skipped]) == (9_000, 2,
                                                                                     ["line 9002", "line 9003"])
