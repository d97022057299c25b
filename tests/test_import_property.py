"""Property-based test of the importers (hypothesis): for random files of odd rows in CSV, JSON Lines
and Parquet, either every row is good and all come in exactly as written (CR LF in captions as LF),
or the import is refused naming exactly the bad rows and changes nothing; with skip_bad exactly the
good rows come in and the report names the others."""
from __future__ import annotations

import csv
import json
import tempfile
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.errors import ConcordError
from core.importers import import_dataset
from core.store import Store

NFD = unicodedata.normalize("NFD", "é")
IMAGES = {"a.png": "a.png", "sub/b.png": "sub/b.png", f"{NFD}.png": f"{NFD}.png",
          unicodedata.normalize("NFC", f"{NFD}.png"): f"{NFD}.png"}  # file's spelling -> name on disk
BAD = {  # kind -> (image, caption) of a row that must be refused
    "missing image": ("nope.png", "fine words"), "escaping path": ("../a.png", "fine words"),
    "corrupt image": ("junk.png", "fine words"), "empty caption": ("a.png", " \t "),
    "control character": ("a.png", "bell \x07"), "absolute path": ("/etc/passwd", "fine words"),
    "duplicate key": ("a.png", "fine words"),
}
words = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(str.strip)
good_row = st.tuples(st.just("good"), st.sampled_from(sorted(IMAGES)), words, st.booleans())
bad_row = st.tuples(st.sampled_from(sorted(BAD)), st.none(), st.none(), st.booleans())
rows_strategy = st.lists(st.one_of(good_row, good_row, bad_row), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def world():
    """One images folder and one database for every example; "keep" must never change."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "sub").mkdir()
        for i, name in enumerate(["a.png", "sub/b.png", f"{NFD}.png"]):
            Image.new("RGB", (6, 6), (40 * i, 90, 200)).save(folder / name)
        (folder / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        (folder / "keep.csv").write_text("image,caption\na.png,kept\n")
        with Store.open(folder / "p.duckdb") as store:
            import_dataset(store, folder / "keep.csv", "keep")
            yield folder, store


def write(folder: Path, fmt: str, table: list[dict[str, str]]) -> Path:
    path = folder / f"rows.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["pair_id", "image", "caption"], lineterminator="\r\n")
            w.writeheader()
            w.writerows(table)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in table), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(table), path)
    return path


def snapshot(store: Store, name: str):
    if not store.has_dataset(name):
        return None
    frame = store.pairs_frame(store.dataset(name).id)
    return sorted(zip(frame["key"], frame["image_path"], frame["caption"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_random_rows_all_in_or_bad_rows_named(world, rows, fmt) -> None:
    folder, store = world
    table, expected, bad_where = [], [], []
    first_line = {"csv": 2, "jsonl": 1, "parquet": 1}[fmt]
    for i, (kind, image, text, crlf) in enumerate(rows):
        key = f"k{i}"
        if kind == "good":
            caption = f"{text}\r\n#{i}" if crlf else f"{text} #{i}"
            expected.append((key, IMAGES[image], caption.replace("\r\n", "\n")))
        else:
            image, caption = BAD[kind]
            if kind == "duplicate key":
                key = table[0]["pair_id"] if i > 0 else key
                if i == 0:  # nothing to repeat yet: a good row after all
                    expected.append((key, image, caption))
                    table.append({"pair_id": key, "image": image, "caption": caption})
                    continue
        if kind != "good":
            bad_where.append(f"{'row' if fmt == 'parquet' else 'line'} {first_line + i}")
        table.append({"pair_id": key, "image": image, "caption": caption})
    # a CSV caption with CR LF inside spans lines: recompute where each CSV row starts
    if fmt == "csv":
        starts, line = [], 2
        for r in table:
            starts.append(line)
            line += r["caption"].count("\r\n") + 1
        bad_where = [f"line {starts[int(w.split()[1]) - 2]}" for w in bad_where]
    path = write(folder, fmt, table)
    keep, before = snapshot(store, "keep"), snapshot(store, "p")
    if not bad_where:
        import_dataset(store, path, "p", replace=True)
        assert snapshot(store, "p") == sorted(expected)
    else:
        with pytest.raises(ConcordError) as err:
            import_dataset(store, path, "p", replace=True)
        message = str(err.value)
        assert f"refused, nothing changed: {len(bad_where)} bad row(s) of {len(table)}" in message
        for where in bad_where[:5]:
            assert f"{path} {where}: " in message
        assert snapshot(store, "p") == before
        if expected:
            report = import_dataset(store, path, "p", replace=True, skip_bad=True)
            assert [p.where for p in report.skipped] == bad_where
            assert snapshot(store, "p") == sorted(expected)
    assert snapshot(store, "keep") == keep
