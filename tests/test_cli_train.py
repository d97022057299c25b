"""`train`, `runs` and `evaluate` from the command line, end to end on a tiny demo with the real concord-tiny
model (pretrained MiniLM text tower, CNN image tower trained from its seed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


@pytest.fixture
def tiny_demo(concord_env: Path) -> str:
    result = cli("demo", "--images", "30", "--noise", "0.4", "--seed", "3")
    assert result.returncode == 0, result.stderr
    return "demo"


def test_train_runs_and_evaluate(tiny_demo: str) -> None:
    trained = cli("train", tiny_demo, "--method", "b1", "--epochs", "2", "--set", "batch_size=16", "--json")
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert result["state"] == "finished" and result["method"] == "b1"
    assert result["n"] == 120 and result["noisy"] == 48          # 24 train images × 5 captions, 40% noisy
    assert 0.0 <= result["auroc"] <= 1.0 and result["rsum"] is not None
    assert result["weight_auroc"] == pytest.approx(result["auroc"])     # b1's weight is its clean_prob

    runs = json.loads(cli("runs", tiny_demo, "--json").stdout)
    assert ([(r["run_id"], r["method"], r["state"], r["epochs"]) for r in runs]
            == [(result["run_id"], "b1", "finished", 2)])
    assert runs[0]["auroc"] == pytest.approx(result["auroc"])

    evaluated = json.loads(cli("evaluate", str(result["run_id"]), "--json").stdout)
    assert evaluated["auroc"] == pytest.approx(result["auroc"]) and evaluated["rsum"] == pytest.approx(result["rsum"])


def test_train_refuses_bad_settings_and_resuming_a_finished_run(tiny_demo: str) -> None:
    bad = cli("train", tiny_demo, "--set", "learning_rate=1")
    assert bad.returncode == 1 and "unknown setting(s) for b1: learning_rate" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert json.loads(cli("runs", tiny_demo, "--json").stdout) == []          # nothing half-created

    listed = cli("train", "--list-settings", "--method", "b1")
    assert listed.returncode == 0 and "gmm_max_iter" in listed.stdout and "batch_size" in listed.stdout

    done = json.loads(cli("train", tiny_demo, "--epochs", "1", "--set", "batch_size=32", "--json")
                      .stdout.strip().splitlines()[-1])
    again = cli("train", "--resume", str(done["run_id"]))
    assert again.returncode == 1
    assert (f"run {done['run_id']} is finished; only a cancelled, interrupted or failed run can be resumed"
            in again.stderr)
    other = cli("train", "elsewhere", "--resume", str(done["run_id"]))
    assert other.returncode == 1 and (f"run {done['run_id']} belongs to dataset 'demo', not 'elsewhere'; "
                                      f"`train --resume {done['run_id']}` needs no dataset name") in other.stderr
