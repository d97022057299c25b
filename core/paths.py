"""Where Concord keeps things: the database and generated datasets (kept) and the cache (recomputable).

`CONCORD_HOME` (default `~/.concord`) holds the DuckDB file and generated datasets (one folder per
database, so two databases' demos never overwrite each other); nothing deletes it.
`CONCORD_DB` overrides the database file; a `--db` flag overrides both. `CONCORD_CACHE` (default the
repository's `cache/`) holds only what can be recomputed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """Concord's home folder (`CONCORD_HOME`, default `~/.concord`)."""
    return Path(os.environ.get("CONCORD_HOME") or Path.home() / ".concord").expanduser()


def db_path(override: str | os.PathLike | None = None) -> Path:
    """The DuckDB file: `override` (the `--db` flag), else `CONCORD_DB`, else `CONCORD_HOME/concord.duckdb`."""
    chosen = override or os.environ.get("CONCORD_DB") or home() / "concord.duckdb"
    return Path(chosen).expanduser()


def cache_dir() -> Path:
    """The cache folder (`CONCORD_CACHE`, default the repository's `cache/`)."""
    return Path(os.environ.get("CONCORD_CACHE") or REPO_ROOT / "cache").expanduser()


def datasets_dir() -> Path:
    """Folder holding the images of datasets Concord generates (demo, offline real sets)."""
    return home() / "datasets"


def generated_dir(db: str | os.PathLike) -> Path:
    """Folder holding the images of the datasets generated for database file `db`:
    `datasets/<file stem>-<hash of its absolute path>`, one per database, never shared."""
    absolute = Path(db).expanduser().absolute().resolve()
    digest = hashlib.sha256(str(absolute).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return datasets_dir() / f"{absolute.stem}-{digest}"
