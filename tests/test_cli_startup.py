"""The import-graph rule of the command line: commands that need no model import neither torch nor
scikit-learn (nor torchvision, open_clip or the training code), so they start at once.

Each command runs in a fresh interpreter on a real database (a dataset with a finished run's scores, a
decision and meta-data), then the interpreter reports which heavy modules it loaded. Not a timed test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from core.paths import REPO_ROOT
from core.store import Store
from tests.test_metadata import make_meta_dataset

HEAVY = ("torch", "sklearn", "torchvision", "open_clip", "timm", "transformers", "core.training", "core.models")
_PROBE = """
import runpy, sys, json
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["python -m core", *args]
code = 0
try:
    runpy.run_module("core", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
print("\\nLOADED " + json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """A database with dataset `ds` (train and val pairs, noise on k2 and k4), a finished b1 run's scores,
    one decision and one meta-data entry."""
    from core.methods import make_config
    tmp = tmp_path_factory.mktemp("startup")
    path = tmp / "concord.duckdb"
    with Store.open(path) as store:
        ds = make_meta_dataset(store, tmp / "src", n=20, noisy=("k2", "k4"))
        run = store.create_run(ds, "b1", "concord-tiny", regime="finetune", device="cpu", seed=0,
                               config=asdict(make_config("b1")), threshold=0.5)
        pairs = store.pairs_frame(ds, split="train")
        clean = np.linspace(0.1, 0.9, len(pairs))
        store.write_scores(run, pairs["pair_id"].to_numpy(), clean, clean, clean)
        store.update_run(run, state="finished")
        store.decide(ds, [int(pairs["pair_id"].iloc[0])], "keep", "ann")
    return path


def probe(args: list[str], db: Path, tmp: Path, watch: tuple[str, ...] = HEAVY) -> dict:
    """Run the command in a fresh interpreter; its exit code, output and which of `watch` it loaded (heavy)."""
    env = dict(os.environ, CONCORD_DB=str(db), CONCORD_HOME=str(tmp / "home"), PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(watch)], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED ")]
    assert line, out.stderr
    return json.loads(line[-1][len("LOADED "):]) | {"stdout": out.stdout, "stderr": out.stderr}


@pytest.mark.parametrize("args", [
    ["datasets", "--json"],
    ["runs", "ds", "--json"],
    ["evaluate", "1", "--json"],
    ["decide", "ds", "--pair", "k3", "--action", "reject", "--reviewer", "bo"],
    ["meta", "ds", "list", "--json"],
    ["meta", "ds", "add", "k5", "--label", "1"],
    ["export", "ds", "--out", "{tmp}/out.csv", "--images", "paths"],
    ["--help"],
    ["bench", "--help"],
], ids=lambda a: " ".join(a[:2]))
def test_light_commands_import_no_model_code(args, db, tmp_path):
    got = probe([a.format(tmp=tmp_path) for a in args], db, tmp_path)
    assert got["code"] == 0, got["stderr"]
    assert got["heavy"] == [], f"{' '.join(args)} loaded {got['heavy']}"


def test_datasets_imports_only_its_own_command(db, tmp_path):
    """`datasets` loads neither the other commands' modules nor pandas (the store builds frames lazily), with
    `--db` before the command as well."""
    for args in (["datasets", "--json"], ["--db", str(db), "datasets", "--json"]):
        got = probe(args, db, tmp_path, watch=HEAVY + ("pandas", "PIL", "core.cli.import_", "core.cli.export"))
        assert got["code"] == 0 and json.loads(got["stdout"].splitlines()[0])[0]["name"] == "ds"
        assert got["heavy"] == [], f"{' '.join(args)} loaded {got['heavy']}"


def test_evaluate_computes_the_figures_without_scikit_learn(db, tmp_path):
    got = probe(["evaluate", "1", "--json"], db, tmp_path)
    figures = json.loads([ln for ln in got["stdout"].splitlines() if ln.startswith("{")][0])
    assert figures["truth"] == "injected" and figures["auroc"] is not None and got["heavy"] == []


def test_a_benchmark_still_imports_what_it_needs(db, tmp_path):
    """`bench NAME` imports only that benchmark (its own parser and options still work)."""
    got = probe(["bench", "projection", "--help"], db, tmp_path)
    assert got["code"] == 0 and "--points" in got["stdout"] and got["heavy"] == []


def test_help_names_the_engine_defaults():
    """The train and embed options left unset take the engine's defaults, which their help names."""
    import argparse

    from core.cli import build_parser
    from core.models import DEFAULT_MODEL
    from core.training import DEFAULT_METHOD, META_SEED_FRACTION, META_SEED_SPLIT
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {cmd: {a.dest: a.help for a in sub.choices[cmd]._actions} for cmd in ("train", "embed")}
    assert f"(default: {DEFAULT_METHOD})" in helps["train"]["method"]
    assert helps["train"]["model"].startswith(f"{DEFAULT_MODEL} (default)")
    assert helps["embed"]["model"].startswith(f"{DEFAULT_MODEL} (default)")
    assert f"(default: {META_SEED_SPLIT})" in helps["train"]["meta_split"]
    assert f"(default: {META_SEED_FRACTION})" in helps["train"]["meta_fraction"]
