"""`decide` CLI: single decisions, CSV files (all or nothing, bad rows named by line), undo, export CLI."""
from __future__ import annotations

import csv
import json

import pytest

from core.cli import main
from core.store import Store
from tests.test_export import make_dataset


@pytest.fixture
def ds(tmp_path):
    with Store.open() as s:
        make_dataset(s, tmp_path / "src")
    return tmp_path


def current(name: str = "ds") -> dict[str, tuple[str, str | None]]:
    with Store.open() as s:
        cd = s.pairs_frame(s.dataset(name).id).astype(object)
        cd = cd.where(cd.notna(), None)
        return {k: (a, f) for k, a, f in zip(cd["key"], cd["decision"], cd["fixed_caption"]) if a is not None}


def test_single_decisions_and_undo(ds, capsys):
    assert main(["decide", "ds", "--pair", "101", "--action", "keep", "--reviewer", "ann"]) == 0
    assert main(["decide", "ds", "--pair", "103", "--action", "fix", "--caption", "new words",
                 "--reviewer", "ann"]) == 0
    assert current() == {"101": ("keep", None), "103": ("fix", "new words")}
    assert main(["decide", "ds", "--undo", "--reviewer", "ann"]) == 0
    assert current() == {"101": ("keep", None)}
    with Store.open() as s:
        meta = s.meta_frame(s.dataset("ds").id)
        assert list(zip(meta["caption"], meta["label"])) == [("caption number 0", 1)]
        pid = int(s.pairs_frame(s.dataset("ds").id).set_index("key").loc["104", "pair_id"])
    assert main(["decide", "ds", "--pair", str(pid), "--store-ids", "--action", "reject", "--reviewer", "bo"]) == 0
    assert current()["104"] == ("reject", None)
    assert main(["decide", "ds", "--pair", "999", "--action", "keep"]) == 1
    assert "no pair '999' in this dataset" in capsys.readouterr().err


def test_csv_all_or_nothing(ds, capsys):
    good = ds / "good.csv"
    good.write_text("pair_id,action,caption\n101,keep,\n102,reject,\n103,fix,a better caption\n104,skip,\n")
    assert main(["decide", "ds", "--csv", str(good), "--reviewer", "ann"]) == 0
    assert "stored 4 decision(s) by 'ann': 1 keep, 1 reject, 1 fix, 1 skip" in capsys.readouterr().out
    assert current() == {"101": ("keep", None), "102": ("reject", None), "103": ("fix", "a better caption"),
                         "104": ("skip", None)}
    bad = ds / "bad.csv"
    bad.write_text("pair_id,action,caption\n105,keep,\n106,fix,\n")
    assert main(["decide", "ds", "--csv", str(bad), "--reviewer", "ann"]) == 1
    assert f"{bad} line 3: a fix needs the new caption; nothing was stored" in capsys.readouterr().err
    bad.write_text("pair_id,action,caption\n105,keep,\n106,delete,\n")
    assert main(["decide", "ds", "--csv", str(bad), "--reviewer", "ann"]) == 1
    assert f"{bad} line 3: unknown action 'delete'" in capsys.readouterr().err
    bad.write_text("pair,action\n105,keep\n")
    assert main(["decide", "ds", "--csv", str(bad)]) == 1
    assert "line 1: missing column(s) pair_id" in capsys.readouterr().err
    assert "105" not in current()


def meta_rows(name: str = "ds") -> list[tuple[str, int, str]]:
    """The active meta-data entries as (caption, label, source), in entry order."""
    with Store.open() as s:
        meta = s.meta_frame(s.dataset(name).id)
        return [(c, int(l), src) for c, l, src in zip(meta["caption"], meta["label"], meta["source"])]


def test_undo_by_two_reviewers_leaves_the_meta_data_as_before(ds, capsys):
    for args in (["--reviewer", "alice", "--pair", "101", "--action", "keep"],
                 ["--reviewer", "bob", "--pair", "101", "--action", "reject"]):
        assert main(["decide", "ds", *args]) == 0
    assert meta_rows() == [("caption number 0", 0, "decision")]
    assert main(["decide", "ds", "--reviewer", "alice", "--undo"]) == 0
    assert meta_rows() == [("caption number 0", 0, "decision")] and current() == {"101": ("reject", None)}
    assert main(["decide", "ds", "--reviewer", "bob", "--undo"]) == 0
    assert meta_rows() == [] and current() == {}


def write_csv(path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["pair_id", "action", "caption"], *rows])


def test_csv_captions_keep_their_line_breaks_and_characters(ds, capsys):
    good = ds / "good.csv"
    write_csv(good, [["101", "fix", "multi\nline"], ["102", "fix", "sep\u2028here"], ["103", "fix", "a\r\nb"],
                     ["104", "keep", ""]])
    assert main(["decide", "ds", "--csv", str(good), "--reviewer", "ann"]) == 0
    assert current() == {"101": ("fix", "multi\nline"), "102": ("fix", "sep\u2028here"), "103": ("fix", "a\nb"),
                         "104": ("keep", None)}


@pytest.mark.parametrize("rows, message", [
    ([["105", "keep", ""], ["106", "fix", "line\none"], ["105", "reject", ""]],
     "line 5: pair '105' is already listed on line 2; nothing was stored"),
    ([["105", "keep", ""], ["106", "fix", "form\x0cfeed"]],
     "line 3: the new caption is refused: caption holds the control character U+000C at character 5; "
     "nothing was stored"),
    ([["105", "keep", ""], ["106", "fix", "bell\x07"]],
     "line 3: the new caption is refused: caption holds the control character U+0007 at character 5; "
     "nothing was stored"),
    ([["105", "keep", ""], ["106", "fix", "caption number 5"]],
     "line 3: the new caption is the pair's own caption (pair 106): use Keep if it is right, or give another "
     "caption; nothing was stored"),
    ([["105", "keep", ""], ["106", "fix", "red", "blue"]],
     "line 3: row has 4 fields, the header has 3 (quote a value that holds a comma); nothing was stored"),
], ids=["duplicate", "form-feed", "bell", "own-caption", "unquoted-comma"])
def test_csv_bad_rows_are_named_and_nothing_is_stored(ds, capsys, rows, message):
    bad = ds / "bad.csv"
    write_csv(bad, rows)
    assert main(["decide", "ds", "--csv", str(bad), "--reviewer", "ann"]) == 1
    assert f"{bad} {message}" in capsys.readouterr().err
    assert current() == {} and meta_rows() == []


def test_export_cli(ds, capsys):
    assert main(["decide", "ds", "--pair", "102", "--action", "reject", "--reviewer", "ann"]) == 0
    out = ds / "out"
    assert main(["export", "ds", "--out", str(out), "--format", "jsonl", "--images", "paths", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert manifest["counts"]["out"] == 5 and manifest["options"]["images"] == "paths"
    lines = (out / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["clean_prob"] is None
    assert main(["export", "ds", "--out", str(out)]) == 1
    assert "not empty; choose another folder or pass --overwrite" in capsys.readouterr().err
