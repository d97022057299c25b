"""Shared fixtures: every test gets its own CONCORD_HOME, database and cache (never the user's)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from core.store import Store


@pytest.fixture(autouse=True)
def concord_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CONCORD_HOME/DB at a fresh temp folder. The cache is shared across the session (it holds
    only recomputable things, keyed by content) unless a test sets CONCORD_CACHE itself."""
    home = tmp_path / "home"
    monkeypatch.setenv("CONCORD_HOME", str(home))
    monkeypatch.setenv("CONCORD_DB", str(home / "concord.duckdb"))
    monkeypatch.setenv("CONCORD_CACHE", os.environ.get("CONCORD_TEST_CACHE", str(_session_cache())))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


_CACHE: Path | None = None


def _session_cache() -> Path:
    global _CACHE
    if _CACHE is None:
        _CACHE = Path(tempfile.mkdtemp(prefix="concord-test-cache-"))
    return _CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's shared cache goes with it: a full run leaves about 2 GB of features and pixels there, and
    every run used to leave its own in the temp folder until the disk filled."""
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def store(concord_env: Path):
    """A store on the test's own database file."""
    s = Store.open()
    yield s
    s.close()
