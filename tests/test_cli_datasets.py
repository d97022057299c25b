"""The dataset commands: demo (with noise, --json, refusals), noise copies, delete refused without --yes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core import paths
from core.cli import main

REPO = Path(__file__).resolve().parent.parent


def cli_json(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_demo_noise_delete(capsys):
    made = cli_json(capsys, "demo", "--images", "20", "--noise", "0.5", "--noise-kind", "decl", "--seed", "2")
    assert (made["name"], made["images"], made["pairs"], made["noisy"]) == ("demo", 20, 100, 40)
    assert made["splits"] == {"test": {"images": 2, "pairs": 10}, "train": {"images": 16, "pairs": 80},
                              "val": {"images": 2, "pairs": 10}}
    assert main(["demo", "--images", "20"]) == 1
    assert "already exists; pass --replace" in capsys.readouterr().err

    copy = cli_json(capsys, "noise", "demo", "--ratio", "0.25", "--seed", "1", "--as", "demo-25")
    assert (copy["noisy"], copy["train_pairs"], copy["parent"]) == (20, 80, "demo")

    assert main(["delete", "demo-25"]) == 1
    err = capsys.readouterr().err
    assert "not deleted: deleting 'demo-25' also deletes its 100 pairs, its 0 decisions" in err
    assert "pass --yes" in err
    gone = cli_json(capsys, "delete", "demo-25", "--yes")
    assert gone["name"] == "demo-25" and gone["folder"] is None  # images belong to demo
    rows = cli_json(capsys, "datasets")
    assert [r["name"] for r in rows] == ["demo"]
    assert main(["delete", "demo", "--yes"]) == 0
    assert "images in" in capsys.readouterr().out
    assert not (paths.datasets_dir() / "demo").exists()


def test_demo_text_output_and_bad_input(capsys):
    assert main(["demo", "--name", "tiny", "--images", "10", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("created 'tiny' (demo) in ") and "10 images, 50 captions, 50 pairs" in out
    assert main(["noise", "tiny", "--ratio", "1.5", "--as", "t2"]) == 1
    assert "noise ratio must be within [0, 1]" in capsys.readouterr().err
    assert main(["noise", "nope", "--ratio", "0.5", "--as", "t2"]) == 1
    assert "no dataset named 'nope'" in capsys.readouterr().err


def test_demo_subprocess_with_db_flag(tmp_path):
    db = tmp_path / "other.duckdb"
    run = subprocess.run([sys.executable, "-m", "core", "demo", "--source", "emoji", "--images", "10", "--db", str(db),
                          "--json"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["pairs"] == 50
    assert db.exists()
