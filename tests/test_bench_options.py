"""Every benchmark refuses a bad option up front, in one line naming it (exit 1), before it reads a dataset, makes
a scratch store or trains anything; and `bench` lists only the modules that are benchmarks."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from core.cli import main
from core.cli.bench import benchmark_names

REFUSED = [
    # bench quality: each value of each option, before the clean ceiling or a first cell trains
    (["quality", "--noise", "2"], "--noise takes comma-separated ratios within [0, 1], got '2'"),
    (["quality", "--noise", "0.2,abc"], "--noise takes comma-separated ratios within [0, 1], got 'abc'"),
    (["quality", "--noise", ","], "--noise takes comma-separated ratios within [0, 1], got ','"),
    (["quality", "--kinds", "nope"], "--kinds takes comma-separated noise kinds (ncr, decl, hard), got 'nope'"),
    (["quality", "--methods", "b1,nope"], "--methods takes comma-separated methods (b0, b1, "),
    (["quality", "--methods", "b0"], "b0 scores with a pretrained model, and concord-tiny's image tower is not"),
    (["quality", "--k", "0"], "--k takes a whole number of at least 1, got 0"),
    (["quality", "--seeds", "0"], "--seeds takes a whole number of at least 1, got 0"),
    (["quality", "--seeds", "-1"], "--seeds takes a whole number of at least 1, got -1"),
    (["quality", "--first-seed", "-1"], "--first-seed takes a whole number of at least 0, got -1"),
    (["quality", "--epochs", "0"], "--epochs takes a whole number of at least 1, got 0"),
    (["quality", "--epochs", "-3"], "--epochs takes a whole number of at least 1, got -3"),
    (["quality", "--meta-fraction", "5"], "--meta-fraction takes a ratio within [0, 1], got 5.0"),
    (["quality", "--set", "tau=1"], "--set tau=1: name the method, METHOD.KEY=VALUE"),
    (["quality", "--set", "npc.nope=1"], "--set npc.nope=1: npc is not among the methods trained (b1)"),
    (["quality", "--methods", "mscn", "--no-ceiling", "--set", "b1.lr=0.01"],
     "--set b1.lr=0.01: b1 is not among the methods trained (mscn)"),
    (["quality", "--methods", "npc", "--set", "npc.nope=1"], "unknown setting(s) for npc: nope"),
    (["quality", "--methods", "npc", "--set", "npc.tau=abc"], "setting tau='abc': expected float"),
    (["quality", "--methods", "npc", "--epochs", "1"], "NPC trains 1 warm-up epoch(s) first"),
    (["quality", "--methods", "concord", "--set", "concord.c=0"], "setting c=0.0: must be above 0"),
    (["quality", "--model", "nope"], "unknown model 'nope'"),
    (["quality", "--collect", "nowhere", "--fuse-again", "--set", "b1.batch_size=8"],
     "--set b1.batch_size=8: b1 is not among the methods trained (concord)"),
    # bench loop
    (["loop", "--decide", "-1"], "--decide takes comma-separated whole numbers of at least 1, got '-1'"),
    (["loop", "--decide", "abc"], "--decide takes comma-separated whole numbers of at least 1, got 'abc'"),
    (["loop", "--decide", "0"], "--decide takes comma-separated whole numbers of at least 1, got '0'"),
    (["loop", "--decide", "100,500"], "mscn retrains once: --decide takes one number for it"),
    (["loop", "--method", "concord", "--decide", "500,100"], "--decide takes rising cumulative steps"),
    (["loop", "--cells", "nowhere", "--decide", "0"], "--decide takes comma-separated whole numbers of at least 1"),
    (["loop", "--seeds", "0"], "--seeds takes a whole number of at least 1, got 0"),
    (["loop", "--noise", "1.5"], "--noise takes a ratio within [0, 1], got 1.5"),
    (["loop", "--kinds", "ncr,x"], "--kinds takes comma-separated noise kinds (ncr, decl, hard), got 'x'"),
    (["loop", "--method", "nope"], "unknown method 'nope'"),
    (["loop", "--set", "nope=1"], "unknown setting(s) for mscn: nope"),
    (["loop", "--epochs", "0"], "--epochs takes a whole number of at least 1, got 0"),
    (["loop", "--epochs", "1"], "MSCN needs at least one epoch after its 2 warm-up epoch(s)"),   # its config's check
    # the benchmarks that train one method
    (["npc-diagnose", "--epochs", "0"], "--epochs takes a whole number of at least 1, got 0"),
    (["mscn-diagnose", "--seed", "-1"], "--seed takes a whole number of at least 0, got -1"),
    (["cost", "--methods", "nope"], "unknown method 'nope'"),
    (["cost", "--noise", "3"], "--noise takes a ratio within [0, 1], got 3.0"),
    # the benchmarks of N pairs
    (["scale", "--pairs", "-1"], "--pairs takes comma-separated whole numbers of at least 1, got '-1'"),
    (["scale", "--pairs", "abc"], "--pairs takes comma-separated whole numbers of at least 1, got 'abc'"),
    (["scale", "--steps", "import,nope"], "--steps takes comma-separated steps (import, features, "),
    (["scale", "--captions-per-image", "0"], "--captions-per-image takes a whole number of at least 1, got 0"),
    (["map", "--pairs", "0"], "--pairs takes comma-separated whole numbers of at least 1, got '0'"),
    (["map", "--pairs", "abc"], "--pairs takes comma-separated whole numbers of at least 1, got 'abc'"),
    (["projection", "--points", "0"], "--points takes comma-separated whole numbers of at least 1, got '0'"),
    (["projection", "--points", "abc"], "--points takes comma-separated whole numbers of at least 1, got 'abc'"),
    (["projection", "--dim", "0"], "--dim takes a whole number of at least 1, got 0"),
]


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder that every temporary folder is made in (so a test sees whether a benchmark made one)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize(("argv", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_bad_option_is_refused_before_anything_is_made(argv: list[str], message: str, capsys, concord_env: Path,
                                                         scratch: Path) -> None:
    extra = [] if argv[0] == "import" else ["--no-docs"]
    assert main(["bench", *argv, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}"), err
    assert len(err.splitlines()) == 1
    assert not (concord_env / "concord.duckdb").exists()       # the user's store was never opened
    assert not any(scratch.iterdir())                           # no scratch store, no generated pairs


@pytest.mark.parametrize(("argv", "message"), [
    (["--pairs", "-5"], "--pairs takes a whole number of at least 1, got -5"),
    (["--captions-per-image", "0"], "--captions-per-image takes a whole number of at least 1, got 0"),
])
def test_bench_import_refuses_bad_counts(argv: list[str], message: str, capsys, concord_env: Path,
                                         scratch: Path) -> None:
    assert main(["bench", "import", *argv]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not any(scratch.iterdir())


@pytest.mark.parametrize("argv", [
    ["quality", "--methods", "mscn,concord", "--set", "b1.lr=0.01", "--set", "concord.fast_b1_lr=0.01"],
    ["quality", "--noise", "0,1", "--kinds", "decl", "--seeds", "2", "--first-seed", "3", "--epochs", "1",
     "--meta-fraction", "0.05"],
    ["loop", "--method", "concord", "--decide", "100,500"],
    ["loop", "--set", "co_training=false", "--epochs", "3"],
])
def test_good_options_pass_the_checks(argv: list[str], capsys, concord_env: Path) -> None:
    """Options that are right reach the dataset, which this test's empty store lacks."""
    assert main(["bench", *argv, "--no-docs"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: no dataset named 'demo'")


def test_only_modules_that_register_are_benchmarks(capsys) -> None:
    names = benchmark_names()
    assert {"quality", "loop", "import", "npc-diagnose", "mscn-diagnose", "scale"} <= set(names)
    assert "headroom" not in names and "diagnose" not in names       # helper modules the benchmarks share
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "headroom", "--help"])
    assert exit_.value.code == 2
    assert "invalid choice: 'headroom'" in capsys.readouterr().err


def test_the_package_helpers_outlive_the_map_benchmark_shadowing_map(tmp_path: Path) -> None:
    """Importing `core.benchmarks.map` binds `map` in the package's namespace: its helpers must not call the
    builtin (`--collect` of an empty folder crashed with "'module' object is not callable" once it was imported)."""
    import core.benchmarks.map  # noqa: F401
    from core.benchmarks import kept_stores
    from core.errors import ConcordError
    with pytest.raises(ConcordError, match="no kept benchmark store"):
        kept_stores([tmp_path])
