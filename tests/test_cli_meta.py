"""`meta` CLI: list (text and JSON), add, flip, remove, import (split and CSV), seed, search; errors as one line."""
from __future__ import annotations

import json

import pytest

from core.cli import main
from core.store import Store
from tests.test_metadata import make_meta_dataset


@pytest.fixture
def ds(tmp_path):
    with Store.open() as s:
        make_meta_dataset(s, tmp_path / "src")
    return tmp_path


def listing(capsys) -> dict:
    capsys.readouterr()
    assert main(["meta", "ds", "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_empty_list_warns(ds, capsys):
    assert main(["meta", "ds", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "0 positives, 0 negatives (n/a)"
    assert "warning: No positives" in out and out.rstrip().endswith("no entries")


def test_add_flip_remove(ds, capsys):
    assert main(["meta", "ds", "add", "k0", "k2", "--label", "1"]) == 0
    assert main(["meta", "ds", "add", "k4", "--label", "0"]) == 0
    assert "added 1 negative(s)" in capsys.readouterr().out
    got = listing(capsys)
    assert [(e["caption"], e["label"], e["source"]) for e in got["entries"]] == [
        ("Caption 0", 1, "manual"), ("Caption 2", 1, "manual"), ("Caption 4", 0, "manual")]
    assert (got["summary"]["positives"], got["summary"]["negatives"]) == (2, 1)
    first, second, third = (e["entry_id"] for e in got["entries"])
    assert main(["meta", "ds", "flip", str(second)]) == 0
    assert main(["meta", "ds", "remove", str(first), "--db", str(ds / "home" / "concord.duckdb")]) == 0
    got = listing(capsys)
    assert [(e["caption"], e["label"]) for e in got["entries"]] == [("Caption 4", 0), ("Caption 2", 0)]
    assert main(["meta", "ds", "remove", str(first)]) == 1
    assert f"error: no active meta-data entry {first} in this dataset" in capsys.readouterr().err
    assert main(["meta", "ds", "add", "k999", "--label", "1"]) == 1
    assert "error: no pair 'k999' in this dataset" in capsys.readouterr().err
    assert main(["meta", "nope", "list"]) == 1
    assert "no dataset named 'nope'" in capsys.readouterr().err


def test_seed_import_and_list_text(ds, capsys):
    assert main(["meta", "ds", "seed", "--fraction", "0.1"]) == 0
    assert capsys.readouterr().out.startswith("seeded 2 positive(s) from split 'val'\n2 positives, 0 negatives")
    assert main(["meta", "ds", "seed", "--split", "train"]) == 1
    assert "noisy one being cleaned" in capsys.readouterr().err
    labels = ds / "labels.csv"
    labels.write_text("pair_id,label\nk0,0\nk2,0\n")
    assert main(["meta", "ds", "import", "--csv", str(labels)]) == 0
    labels.write_text("pair_id,label\nk4,0\nk6,2\n")
    assert main(["meta", "ds", "import", "--csv", str(labels)]) == 1
    assert f"error: {labels} line 3: a label is 1 (matched) or 0 (mismatched), got '2'; nothing was stored" \
        in capsys.readouterr().err
    assert main(["meta", "ds", "import", "--split", "val"]) == 0
    assert "imported 18 pair(s) of split 'val' with label 1" in capsys.readouterr().out
    assert main(["meta", "ds", "list", "--source", "import", "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "20 positives, 2 negatives (91% positive); by source: seed 2+/0-, import 18+/2-"
    assert out[1].startswith("warning: Too small: 20 positives, fewer than 50")
    assert out[2].split() == ["entry", "label", "source", "pair", "split", "caption"]
    assert out[3].split()[1:5] == ["0", "import", "1", "train"] and out[3].endswith("Caption 0")
    assert out[-1] == "… 18 more (--limit)"


def test_search(ds, capsys):
    assert main(["meta", "ds", "add", "k11", "--label", "0"]) == 0
    capsys.readouterr()
    assert main(["meta", "ds", "search", "caption 1", "--split", "val", "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out] == [["key", "split", "meta", "caption"], ["k1", "val", "-", "Caption", "1"],
                                              ["k11", "val", "0", "Caption", "11"]]
    assert main(["meta", "ds", "search", "zebra", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
