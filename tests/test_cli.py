"""The CLI skeleton: `datasets --json` on an empty database, one-line errors, --db everywhere."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=REPO)


def test_datasets_json_on_an_empty_database(tmp_path: Path) -> None:
    result = run_cli("datasets", "--json", "--db", str(tmp_path / "empty.duckdb"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_datasets_lists_counts(tmp_path: Path) -> None:
    import pandas as pd

    from core.store import Store
    db = tmp_path / "d.duckdb"
    with Store.open(db) as s:
        s.write_dataset("tiny", "/root", "csv", pd.DataFrame({
            "image_path": ["a.png", "a.png", "b.png"], "image_hash": ["1", "1", "2"], "width": 4, "height": 4,
            "nbytes": 9, "caption": ["x", "y", "z"], "split": ["train", "train", "test"], "key": ["0", "1", "2"]}))
    rows = json.loads(run_cli("--db", str(db), "datasets", "--json").stdout)
    assert [(r["name"], r["images"], r["captions"], r["pairs"]) for r in rows] == [("tiny", 2, 3, 3)]
    assert rows[0]["splits"] == {"test": 1, "train": 2}


def test_unknown_dataset_is_one_clear_line(tmp_path: Path) -> None:
    from core.cli import main
    from core.errors import NotFound
    from core.store import Store
    with Store.open(tmp_path / "x.duckdb") as s:
        try:
            s.dataset("nope")
        except NotFound as exc:
            assert "no dataset named 'nope'" in str(exc)
    assert callable(main)


def test_a_reader_that_stops_reading_is_no_error(tmp_path: Path) -> None:
    """`python -m core … | head`: once the reader closes the pipe the command stops quietly (no
    'error: BrokenPipeError' line, no traceback at exit)."""
    process = subprocess.Popen([sys.executable, "-m", "core", "datasets", "--json", "--db", str(tmp_path / "d.duckdb")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    process.stdout.close()
    assert process.stderr.read() == b"" and process.wait() == 1


def test_train_list_settings_and_repeated_sets_say_what_to_write(tmp_path: Path) -> None:
    listed = run_cli("train", "--list-settings", "npc", "--db", str(tmp_path / "d.duckdb"))
    assert listed.returncode == 1 and listed.stderr.strip() == (
        "error: --list-settings takes the method as --method, not 'npc': "
        "`python -m core train --list-settings --method npc`")
    twice = run_cli("train", "ds", "--set", "lr=0.1", "--set", "lr=0.2", "--db", str(tmp_path / "d.duckdb"))
    assert twice.returncode == 1 and twice.stderr.strip() == (
        "error: --set lr is given twice ('0.1' and '0.2'); give it once")
