"""The store: Concord's DuckDB database, and the only module that holds SQL.

One `Store` per process (DuckDB admits one read-write process per file). Each thread gets its own
cursor; every write runs in a transaction under a process-wide write lock, so concurrent writers in
one process never conflict and a failed write leaves nothing behind.

Identity: a pair is (image content hash, caption text hash); re-importing a dataset keeps the ids,
decisions and meta-data of the pairs that still exist. Decisions are append-only (an undo is a new
row naming the decision it reverts). The meta-data table is the one trusted set every method reads.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import duckdb
import numpy as np

if TYPE_CHECKING:   # pandas is imported where a method builds a frame, so `datasets` and the like start at once
    import pandas as pd

from core import paths
from core.errors import ConcordError, DatabaseLocked, NotFound
from core.hashing import text_hash

SCHEMA_VERSION = 2

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE schema_version(version INTEGER NOT NULL)",
        "INSERT INTO schema_version VALUES (0)",
        "CREATE SEQUENCE seq_dataset START 1",
        "CREATE SEQUENCE seq_image START 1",
        "CREATE SEQUENCE seq_caption START 1",
        "CREATE SEQUENCE seq_pair START 1",
        "CREATE SEQUENCE seq_run START 1",
        "CREATE SEQUENCE seq_decision START 1",
        "CREATE SEQUENCE seq_meta START 1",
        """CREATE TABLE datasets(
            id BIGINT PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, root VARCHAR NOT NULL,
            source_format VARCHAR NOT NULL, source_path VARCHAR, parent VARCHAR, info JSON,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE images(
            id BIGINT NOT NULL, dataset_id BIGINT NOT NULL, path VARCHAR NOT NULL, hash VARCHAR NOT NULL,
            width INTEGER, height INTEGER, nbytes BIGINT)""",
        """CREATE TABLE captions(
            id BIGINT NOT NULL, dataset_id BIGINT NOT NULL, text VARCHAR NOT NULL, hash VARCHAR NOT NULL)""",
        """CREATE TABLE pairs(
            id BIGINT NOT NULL, dataset_id BIGINT NOT NULL, image_id BIGINT NOT NULL,
            caption_id BIGINT NOT NULL, split VARCHAR NOT NULL, key VARCHAR NOT NULL, uid VARCHAR NOT NULL,
            is_noisy BOOLEAN, original_caption_id BIGINT, position BIGINT NOT NULL)""",
        """CREATE TABLE runs(
            id BIGINT PRIMARY KEY, dataset_id BIGINT NOT NULL, method VARCHAR NOT NULL, model VARCHAR NOT NULL,
            regime VARCHAR, device VARCHAR, seed INTEGER, config JSON, state VARCHAR NOT NULL,
            owner_pid INTEGER, owner_host VARCHAR, heartbeat DOUBLE, created_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP, finished_at TIMESTAMP, threshold DOUBLE NOT NULL DEFAULT 0.5,
            metrics JSON, progress JSON, error VARCHAR, checkpoint VARCHAR, parent_run BIGINT)""",
        """CREATE TABLE scores(
            run_id BIGINT NOT NULL, pair_id BIGINT NOT NULL, similarity DOUBLE, clean_prob DOUBLE,
            weight DOUBLE)""",
        """CREATE TABLE score_extras(
            run_id BIGINT NOT NULL, pair_id BIGINT NOT NULL, name VARCHAR NOT NULL, value DOUBLE)""",
        """CREATE TABLE decisions(
            id BIGINT NOT NULL, dataset_id BIGINT NOT NULL, pair_id BIGINT NOT NULL, action VARCHAR NOT NULL,
            reviewer VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, new_caption_id BIGINT,
            reverts BIGINT, run_id BIGINT)""",
        """CREATE TABLE meta_entries(
            id BIGINT NOT NULL, dataset_id BIGINT NOT NULL, image_id BIGINT NOT NULL,
            caption_id BIGINT NOT NULL, label SMALLINT NOT NULL, source VARCHAR NOT NULL,
            decision_id BIGINT, replaces BIGINT, created_at TIMESTAMP NOT NULL,
            removed_at TIMESTAMP, removed_by BIGINT)""",
    ],
    2: [
        "CREATE SEQUENCE seq_review_set START 1",
        """CREATE TABLE review_sets(
            id BIGINT NOT NULL, dataset_id BIGINT NOT NULL, name VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE review_set_pairs(set_id BIGINT NOT NULL, pair_id BIGINT NOT NULL,
            position INTEGER NOT NULL)""",
    ],
}

ACTIONS = ("keep", "reject", "fix", "skip")
META_SOURCES = ("seed", "decision", "import", "manual")
RUN_STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")

# Effective decisions: not an undo and not reverted by one. The current decision of a pair is its
# latest effective one.
_EFFECTIVE = """(SELECT d.* FROM decisions d WHERE d.dataset_id = {ds} AND d.action <> 'undo'
    AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.dataset_id = {ds} AND u.reverts = d.id))"""
_CURRENT = """(SELECT * FROM {eff} e QUALIFY row_number() OVER (PARTITION BY e.pair_id ORDER BY e.id DESC) = 1)"""
_DECISION_LOG = """SELECT d.id AS decision_id, d.pair_id, p.key AS pair_key, d.action, d.reviewer, d.created_at,
        nc.text AS new_caption, d.reverts, d.run_id, i.path AS image_path, c.text AS caption
    FROM decisions d
    LEFT JOIN pairs p ON p.id = d.pair_id
    LEFT JOIN images i ON i.id = p.image_id
    LEFT JOIN captions c ON c.id = p.caption_id
    LEFT JOIN captions nc ON nc.id = d.new_caption_id
    WHERE d.dataset_id = {ds} ORDER BY d.id"""
_COPY_FORMATS = {"csv": "FORMAT csv, HEADER", "jsonl": "FORMAT json", "parquet": "FORMAT parquet"}


def fix_caption(caption: str | None) -> str:
    """A fix's new caption as an import stores a caption (line breaks as LF), or ConcordError with the importer's
    reason: the importer's own checks, so that an export with the fix imports back as it was."""
    from core.importers.validation import caption_problem, normalise_caption   # core.importers imports the store

    if caption is None or not caption.strip():
        raise ConcordError("a fix needs the new caption")
    caption = normalise_caption(caption)
    problem = caption_problem(caption)
    if problem is not None:
        raise ConcordError(f"the new caption is refused: {problem}")
    return caption


def _filled(values: np.ndarray, fill: Any) -> np.ndarray:
    """A `fetchnumpy` column with its NULLs as `fill`: None (an object column) or NaN (float64). DuckDB returns a
    masked array where a column has NULLs."""
    out = np.array(np.ma.getdata(values), dtype=object if fill is None else np.float64)
    out[np.ma.getmaskarray(values)] = fill
    return out


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Dataset:
    """A dataset's row: `root` is the folder its image paths are relative to."""

    id: int
    name: str
    root: str
    source_format: str
    source_path: str | None
    parent: str | None
    info: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Run:
    """A scoring run's row (config, metrics and progress decoded from JSON)."""

    id: int
    dataset_id: int
    method: str
    model: str
    regime: str | None
    device: str | None
    seed: int | None
    config: dict[str, Any]
    state: str
    owner_pid: int | None
    owner_host: str | None
    heartbeat: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    threshold: float
    metrics: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    checkpoint: str | None
    parent_run: int | None

    @property
    def cache_key(self) -> str:
        """The run's folder name in the cache. Run ids restart in every database while one cache may serve
        several (`--db`, tests), so the id alone would hand one database's checkpoint to another's run."""
        return f"{self.id}-{self.created_at:%Y%m%dT%H%M%S%f}"


_RUN_COLUMNS = [f for f in Run.__dataclass_fields__]
_JSON_RUN_FIELDS = ("config", "metrics", "progress")


def _locked_pid(message: str) -> tuple[int | None, str | None]:
    m = re.search(r"held in (.*?) \(PID (\d+)\)", message)
    return (int(m.group(2)), m.group(1)) if m else (None, None)


_SNAPSHOTS = itertools.count(1)


def _sql_text(value: str) -> str:
    """`value` as an SQL string literal (for the few statements, like COPY, that take no parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


CLOSE_WAIT_S = 10.0
"""How long `Store.close` waits for another thread's statement to finish."""


@dataclass(frozen=True)
class ExportSnapshot:
    """An export's pairs frozen for one write (`Store.export_snapshot`): every pair with what the export writes of
    it and why it is dropped, if it is. Read it from the thread that made it (its table is that connection's)."""

    store: "Store"
    table: str

    def summary(self) -> dict[str, Any]:
        """`Store.export_summary` of the frozen pairs."""
        return self.store._export_summary(self.table)

    def _kept_sql(self, image_prefix: str) -> str:
        """The kept pairs in import order, as the data file has them (`image` is `image_prefix` and the image's
        path), plus `image_path` and `position`."""
        prefix = _sql_text(image_prefix)
        return f"""SELECT {prefix} || image_path AS image, caption, split, pair_id, clean_prob, weight, decision,
                          image_path, position
                   FROM {self.table} WHERE dropped IS NULL ORDER BY position"""

    def rows(self, image_prefix: str) -> pd.DataFrame:
        """The kept pairs as a frame, for the formats written as one JSON document."""
        return self.store._df(self._kept_sql(image_prefix))

    def copy_rows(self, image_prefix: str, path: str | os.PathLike, fmt: str, columns: Sequence[str]) -> None:
        """Write the kept pairs' `columns` to `path` as csv, jsonl or parquet, streamed by DuckDB's COPY: no row
        passes through Python, so memory stays bounded at any size."""
        self.store._copy(f"SELECT {', '.join(columns)} FROM ({self._kept_sql(image_prefix)})", path, fmt)

    def images(self, image_prefix: str, batch: int) -> Iterator[list[tuple[str, str]]]:
        """The kept images as (path in the dataset, path in the export), each once, in order of first appearance,
        `batch` at a time (each batch one query after the last one's first position: the caller may use the
        store between batches)."""
        prefix = _sql_text(image_prefix)
        after = -1
        while True:
            rows = self.store._q(f"""SELECT image_path, {prefix} || image_path, first FROM {self.table}_images
                                     WHERE first > ? ORDER BY first LIMIT ?""", [after, int(batch)]).fetchall()
            if not rows:
                return
            yield [(str(a), str(b)) for a, b, _ in rows]
            after = int(rows[-1][2])


_IMPORTS: dict[tuple[str, int], int] = {}
"""How many times this process re-imported each (database, dataset): caches of a dataset's pairs key on it."""


class Store:
    """Access to one DuckDB file. Open with `Store.open()`; close with `close()` or a `with` block."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, read_only: bool = False) -> None:
        self._con = con
        self.path = path
        self.read_only = read_only
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()

    # ---------------------------------------------------------------- opening, cursors, transactions
    @classmethod
    def open(cls, path: str | os.PathLike | None = None, read_only: bool = False, migrate: bool = True) -> "Store":
        """Open (creating and migrating if needed) the database at `path` or the configured default."""
        db = paths.db_path(path)
        if not read_only:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif not db.exists():
            raise NotFound(f"no database at {db}")
        try:
            con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                pid, holder = _locked_pid(str(exc))
                raise DatabaseLocked(str(db), pid, holder) from None
            raise ConcordError(f"cannot open database {db}: {exc}") from None
        store = cls(con, str(db), read_only)
        if migrate and not read_only:
            store.migrate()
        return store

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's cursor and the database. A statement another thread is still running (e.g. Review's
        background prefetch) is waited for, up to `CLOSE_WAIT_S`."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while True:
            with self._cursors_lock:
                busy = []
                for cur in self._cursors:
                    try:
                        cur.close()
                    except duckdb.Error:
                        busy.append(cur)
                self._cursors[:] = busy
            try:
                self._con.close()
                return
            except duckdb.ResourceInUseException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB: one cursor per thread)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction on this thread's cursor: committed as a whole or rolled back as a whole."""
        with self._write_lock:
            cur = self.cursor()
            if getattr(self._local, "in_tx", False):  # nested: join the outer transaction
                yield cur
                return
            cur.execute("BEGIN TRANSACTION")
            self._local.in_tx = True
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                self._local.in_tx = False

    def _q(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(sql, params or [])

    def _df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        return self._q(sql, params).df()

    # ---------------------------------------------------------------- schema
    def schema_version(self) -> int:
        try:
            row = self._q("SELECT version FROM schema_version").fetchone()
        except duckdb.CatalogException:
            return 0
        return int(row[0]) if row else 0

    def migrate(self, target: int = SCHEMA_VERSION) -> None:
        """Apply every migration between the file's version and `target`, each in its own transaction."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise ConcordError(
                f"database {self.path} has schema version {current}, newer than this Concord ({SCHEMA_VERSION})")
        for version in range(current + 1, target + 1):
            with self.transaction() as cur:
                for statement in _MIGRATIONS[version]:
                    cur.execute(statement)
                cur.execute("UPDATE schema_version SET version = ?", [version])

    # ---------------------------------------------------------------- datasets
    def _dataset_from_row(self, row: tuple) -> Dataset:
        id_, name, root, fmt, src, parent, info, created = row
        return Dataset(int(id_), name, root, fmt, src, parent, json.loads(info) if info else {}, created)

    def dataset(self, name: str) -> Dataset:
        """The dataset called `name`; `NotFound` with the known names otherwise."""
        row = self._q("SELECT id, name, root, source_format, source_path, parent, info, created_at "
                      "FROM datasets WHERE name = ?", [name]).fetchone()
        if row is None:
            known = ", ".join(self.dataset_names()) or "none yet"
            raise NotFound(f"no dataset named {name!r} (datasets: {known})")
        return self._dataset_from_row(row)

    def dataset_by_id(self, dataset_id: int) -> Dataset:
        row = self._q("SELECT id, name, root, source_format, source_path, parent, info, created_at "
                      "FROM datasets WHERE id = ?", [dataset_id]).fetchone()
        if row is None:
            raise NotFound(f"no dataset with id {dataset_id}")
        return self._dataset_from_row(row)

    def dataset_names(self) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM datasets ORDER BY name").fetchall()]

    def has_dataset(self, name: str) -> bool:
        return self._q("SELECT count(*) FROM datasets WHERE name = ?", [name]).fetchone()[0] > 0

    def list_datasets(self) -> list[dict[str, Any]]:
        """Every dataset with its counts: images, captions, pairs, per split, injected noise, reviewed,
        flagged (under its latest finished run's threshold)."""
        out = []
        for ds_id, name in self._q("SELECT id, name FROM datasets ORDER BY name").fetchall():
            out.append(self.dataset_summary(int(ds_id)) | {"name": name})
        return out

    def dataset_summary(self, dataset_id: int) -> dict[str, Any]:
        ds = self.dataset_by_id(dataset_id)
        q = lambda sql: self._q(sql, [dataset_id]).fetchone()[0]  # noqa: E731
        splits = dict(self._q("SELECT split, count(*) FROM pairs WHERE dataset_id = ? GROUP BY split ORDER BY split",
                              [dataset_id]).fetchall())
        latest = self.latest_finished_run(dataset_id)
        flagged = None
        if latest is not None:
            flagged = self._q("SELECT count(*) FROM scores WHERE run_id = ? AND clean_prob < ?",
                              [latest.id, latest.threshold]).fetchone()[0]
        reviewed = self._q(f"SELECT count(*) FROM {_CURRENT.format(eff=_EFFECTIVE.format(ds=int(dataset_id)))}"
                           ).fetchone()[0]
        return {
            "id": ds.id, "name": ds.name, "root": ds.root, "source_format": ds.source_format,
            "parent": ds.parent, "created_at": ds.created_at.isoformat(timespec="seconds"),
            "images": q("SELECT count(*) FROM images WHERE dataset_id = ?"),
            "captions": q("SELECT count(DISTINCT caption_id) FROM pairs WHERE dataset_id = ?"),
            "pairs": q("SELECT count(*) FROM pairs WHERE dataset_id = ?"),
            "splits": {k: int(v) for k, v in splits.items()},
            "noisy": q("SELECT count(*) FROM pairs WHERE dataset_id = ? AND is_noisy"),
            "reviewed": int(reviewed),
            "flagged": None if flagged is None else int(flagged),
            "latest_run": None if latest is None else latest.id,
            "info": ds.info,
        }

    def write_dataset(self, name: str, root: str | os.PathLike, source_format: str, records: pd.DataFrame | str,
                      *, source_path: str | None = None, parent: str | None = None,
                      info: dict[str, Any] | None = None, replace: bool = False) -> dict[str, int]:
        """Create dataset `name` from `records`, or with `replace=True` reconcile an existing one, atomically.

        `records` is a frame, or the name of a table or view on this thread's cursor (the importer's staged rows,
        `core.importers.staging`), with one row per pair: `image_path` (relative to `root`), `image_hash`,
        `width`, `height`, `nbytes`, `caption`, `split`, `key` (the user's pair id) and optionally `is_noisy`
        and `original_caption`; a relation also has `row_order` (a frame's order is its rows'). Rows repeating
        an earlier row's (image content, caption text) are merged. Replacing keeps the ids (and so the
        decisions, meta-data and scores) of pairs that still exist and deletes what belonged only to pairs that
        are gone; when the pairs change, the runs' stored detection figures go stale (`_stale_detection`). The
        hashes are DuckDB's `sha1`, the same as `core.hashing`'s. Returns counts.
        """
        frame = None
        if not isinstance(records, str):
            frame = records.copy()
            for col in ("is_noisy", "original_caption"):
                if col not in frame:
                    frame[col] = None
            frame["original_caption"] = frame["original_caption"].astype(object).where(
                frame["original_caption"].notna(), None)
            frame["row_order"] = np.arange(len(frame), dtype=np.int64)
        with self.transaction() as cur:
            if frame is None:
                before = self._stage_new_rows(cur, records)
            else:
                cur.register("records_frame", frame)
                try:
                    before = self._stage_new_rows(cur, "records_frame")
                finally:
                    cur.unregister("records_frame")
            existing = cur.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchall()
            existing = existing[0] if existing else None
            if existing and not replace:
                raise ConcordError(f"dataset {name!r} already exists; pass --replace to replace it "
                                   "(decisions on pairs that still exist are kept)")
            if not before:
                raise ConcordError(f"dataset {name!r}: nothing to import (no pairs)")
            info_json = json.dumps(info or {})
            if existing:
                ds_id = int(existing[0])
                cur.execute("UPDATE datasets SET root = ?, source_format = ?, source_path = ?, parent = ?, info = ? "
                            "WHERE id = ?", [str(root), source_format, source_path, parent, info_json, ds_id])
            else:
                ds_id = cur.execute("SELECT nextval('seq_dataset')").fetchone()[0]
                cur.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [ds_id, name, str(root), source_format, source_path, parent, info_json, _now()])
            try:
                # images: keep rows whose (path, hash) is unchanged
                cur.execute("""DELETE FROM images WHERE dataset_id = ? AND NOT EXISTS (SELECT 1 FROM new_images n
                               WHERE n.image_path = images.path AND n.image_hash = images.hash)""", [ds_id])
                cur.execute("""INSERT INTO images SELECT nextval('seq_image'), ?, n.image_path, n.image_hash,
                               n.width, n.height, n.nbytes FROM new_images n WHERE NOT EXISTS (SELECT 1 FROM images i
                               WHERE i.dataset_id = ? AND i.path = n.image_path AND i.hash = n.image_hash)""",
                            [ds_id, ds_id])
                # captions: keep every caption row (decisions may reference typed captions); add new texts
                cur.execute("""INSERT INTO captions SELECT nextval('seq_caption'), ?, n.text, n.hash FROM new_caps n
                               WHERE NOT EXISTS (SELECT 1 FROM captions c
                                                 WHERE c.dataset_id = ? AND c.hash = n.hash)""",
                            [ds_id, ds_id])
                # pairs: reconcile by uid
                pairs_changed = self._pairs_change(cur, ds_id) if existing else False
                gone = "(SELECT id FROM pairs WHERE dataset_id = ? AND uid NOT IN (SELECT uid FROM new_pairs))"
                for table in ("decisions", "scores", "score_extras", "review_set_pairs"):
                    cur.execute(f"DELETE FROM {table} WHERE pair_id IN {gone}", [ds_id])
                cur.execute("DELETE FROM pairs WHERE dataset_id = ? AND uid NOT IN (SELECT uid FROM new_pairs)",
                            [ds_id])
                cur.execute("""UPDATE pairs SET split = n.split, key = n.key, position = n.position,
                               is_noisy = n.is_noisy,
                               original_caption_id = (SELECT c.id FROM captions c WHERE c.dataset_id = pairs.dataset_id
                                                      AND c.hash = n.orig_hash),
                               image_id = (SELECT i.id FROM images i WHERE i.dataset_id = pairs.dataset_id
                                           AND i.path = n.image_path)
                               FROM new_pairs n WHERE pairs.dataset_id = ? AND pairs.uid = n.uid""", [ds_id])
                cur.execute("""INSERT INTO pairs SELECT nextval('seq_pair'), ?, i.id, c.id, n.split, n.key, n.uid,
                               n.is_noisy, oc.id, n.position
                               FROM new_pairs n
                               JOIN images i ON i.dataset_id = ? AND i.path = n.image_path
                               JOIN captions c ON c.dataset_id = ? AND c.hash = n.caption_hash
                               LEFT JOIN captions oc ON oc.dataset_id = ? AND oc.hash = n.orig_hash
                               WHERE NOT EXISTS (SELECT 1 FROM pairs p WHERE p.dataset_id = ? AND p.uid = n.uid)
                               ORDER BY n.position""", [ds_id] * 5)
                # meta-data entries whose image is gone go too
                cur.execute("""DELETE FROM meta_entries WHERE dataset_id = ? AND image_id NOT IN
                               (SELECT id FROM images WHERE dataset_id = ?)""", [ds_id, ds_id])
                pairs = cur.execute("SELECT count(*) FROM new_pairs").fetchone()[0]
                if pairs_changed:
                    self._stale_detection(cur, ds_id)
            finally:
                for table in ("new_images", "new_caps", "new_pairs"):
                    try:
                        cur.execute(f"DROP TABLE IF EXISTS {table}")
                    except duckdb.Error:  # an aborted transaction refuses it; its rollback drops them
                        pass
            counts = {
                "images": cur.execute("SELECT count(*) FROM images WHERE dataset_id = ?", [ds_id]).fetchone()[0],
                "captions": cur.execute("SELECT count(DISTINCT caption_id) FROM pairs WHERE dataset_id = ?",
                                        [ds_id]).fetchone()[0],
                "pairs": cur.execute("SELECT count(*) FROM pairs WHERE dataset_id = ?", [ds_id]).fetchone()[0],
                "merged_duplicates": before - pairs,
            }
        _IMPORTS[(self.path, int(ds_id))] = _IMPORTS.get((self.path, int(ds_id)), 0) + 1
        return {k: int(v) for k, v in counts.items()} | {"dataset_id": int(ds_id)}

    @staticmethod
    def _pairs_change(cur: duckdb.DuckDBPyConnection, dataset_id: int) -> bool:
        """Whether the staged rows (`new_pairs`) change dataset `dataset_id`'s pairs as detection measures them:
        a pair gone or new, or a kept pair's split or injected-noise truth changed."""
        return bool(cur.execute("""SELECT
            EXISTS (SELECT 1 FROM pairs p WHERE p.dataset_id = ? AND p.uid NOT IN (SELECT uid FROM new_pairs))
            OR EXISTS (SELECT 1 FROM new_pairs n WHERE n.uid NOT IN (SELECT uid FROM pairs WHERE dataset_id = ?))
            OR EXISTS (SELECT 1 FROM pairs p JOIN new_pairs n ON n.uid = p.uid WHERE p.dataset_id = ?
                       AND (p.split IS DISTINCT FROM n.split OR p.is_noisy IS DISTINCT FROM n.is_noisy))""",
                                [dataset_id] * 3).fetchone()[0])

    @staticmethod
    def _stale_detection(cur: duckdb.DuckDBPyConnection, dataset_id: int) -> None:
        """Withdraw the detection figures (AUROC, F1 …) the dataset's runs stored when they finished: they were
        measured on pairs that changed. They move to `detection_stale` (with when), so lists show none and
        `evaluate RUN` gives them on the pairs as they are now; the runs' scores of kept pairs stay."""
        rows = cur.execute("SELECT id, metrics FROM runs WHERE dataset_id = ? AND metrics IS NOT NULL",
                           [dataset_id]).fetchall()
        now = _now().isoformat(timespec="seconds")
        for run_id, metrics in rows:
            values = json.loads(metrics) if metrics else {}
            if "detection" not in values:
                continue
            values["detection_stale"] = {"since": now, "figures": values.pop("detection")}
            cur.execute("UPDATE runs SET metrics = ? WHERE id = ?", [json.dumps(values), run_id])

    @staticmethod
    def _stage_new_rows(cur: duckdb.DuckDBPyConnection, relation: str) -> int:
        """`write_dataset`'s temporary tables from `relation`: `new_pairs` (hashed, the first of each pair
        identity kept, numbered by `position`), `new_images` and `new_caps` (caption and original texts, each hash
        once). Returns how many rows `relation` has."""
        cur.execute(f"""
            CREATE OR REPLACE TEMP TABLE new_pairs AS
            SELECT *, (row_number() OVER (ORDER BY row_order) - 1)::BIGINT AS position FROM (
                SELECT CAST(image_path AS VARCHAR) AS image_path, CAST(image_hash AS VARCHAR) AS image_hash,
                       width, height, nbytes, CAST(caption AS VARCHAR) AS caption,
                       sha1(CAST(caption AS VARCHAR)) AS caption_hash, CAST(split AS VARCHAR) AS split,
                       CAST(key AS VARCHAR) AS key, CAST(is_noisy AS BOOLEAN) AS is_noisy,
                       CAST(original_caption AS VARCHAR) AS original_caption,
                       sha1(CAST(original_caption AS VARCHAR)) AS orig_hash,
                       sha1(CAST(image_hash AS VARCHAR) || ':' || sha1(CAST(caption AS VARCHAR))) AS uid, row_order
                FROM {relation}
                QUALIFY row_number() OVER (PARTITION BY uid ORDER BY row_order) = 1)
            ORDER BY position""")
        cur.execute("""CREATE OR REPLACE TEMP TABLE new_images AS
                       SELECT image_path, image_hash, width, height, nbytes FROM new_pairs
                       QUALIFY row_number() OVER (PARTITION BY image_path ORDER BY position) = 1 ORDER BY position""")
        cur.execute("""CREATE OR REPLACE TEMP TABLE new_caps AS
                       SELECT text, hash FROM (SELECT caption AS text, caption_hash AS hash, 0 AS kind, position
                                               FROM new_pairs
                                               UNION ALL SELECT original_caption, orig_hash, 1, position
                                               FROM new_pairs WHERE orig_hash IS NOT NULL)
                       QUALIFY row_number() OVER (PARTITION BY hash ORDER BY kind, position) = 1
                       ORDER BY kind, position""")
        return int(cur.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0])

    def imports_seen(self, dataset_id: int) -> int:
        """How many times this process wrote the dataset's pairs (`write_dataset`): a cache of its pairs, ids or
        rows made under another count is stale (the app is the database's only writer while it runs)."""
        return _IMPORTS.get((self.path, int(dataset_id)), 0)

    def delete_dataset(self, name: str) -> None:
        """Delete a dataset and everything that belongs to it (runs, scores, decisions, meta-data)."""
        ds = self.dataset(name)
        with self.transaction() as cur:
            runs = "(SELECT id FROM runs WHERE dataset_id = ?)"
            cur.execute(f"DELETE FROM scores WHERE run_id IN {runs}", [ds.id])
            cur.execute(f"DELETE FROM score_extras WHERE run_id IN {runs}", [ds.id])
            cur.execute("DELETE FROM review_set_pairs WHERE set_id IN "
                        "(SELECT id FROM review_sets WHERE dataset_id = ?)",
                        [ds.id])
            for table in ("runs", "review_sets", "decisions", "meta_entries", "pairs", "captions", "images"):
                cur.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [ds.id])
            cur.execute("DELETE FROM datasets WHERE id = ?", [ds.id])

    # ---------------------------------------------------------------- pairs
    def pairs_frame(self, dataset_id: int, run_id: int | None = None, *, split: str | None = None,
                    pair_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """One row per pair, in import order: ids, paths, caption text and hashes, split, ground truth,
        and (with `run_id`) the run's scores and `flagged`; always the current decision."""
        ds = int(dataset_id)
        where, params = ["p.dataset_id = ?"], [ds]
        if split is not None:
            where.append("p.split = ?")
            params.append(split)
        if pair_ids is not None:
            where.append("p.id IN (SELECT unnest(?::BIGINT[]))")
            params.append([int(x) for x in pair_ids])
        score_cols = ("NULL::DOUBLE AS similarity, NULL::DOUBLE AS clean_prob, NULL::DOUBLE AS weight, "
                      "NULL::BOOLEAN AS flagged")
        score_join = ""
        if run_id is not None:
            score_cols = ("s.similarity, s.clean_prob, s.weight, (s.clean_prob < r.threshold) AS flagged")
            score_join = ("LEFT JOIN scores s ON s.pair_id = p.id AND s.run_id = ? "
                          "LEFT JOIN runs r ON r.id = s.run_id")
            params = [int(run_id)] + params
        sql = f"""
            SELECT p.id AS pair_id, p.key, p.split, p.position, p.image_id, i.path AS image_path,
                   i.hash AS image_hash, p.caption_id, c.text AS caption, c.hash AS caption_hash,
                   p.is_noisy, oc.text AS original_caption, {score_cols},
                   cd.action AS decision, cd.reviewer AS decided_by, cd.created_at AS decided_at,
                   nc.text AS fixed_caption
            FROM pairs p
            JOIN images i ON i.id = p.image_id
            JOIN captions c ON c.id = p.caption_id
            LEFT JOIN captions oc ON oc.id = p.original_caption_id
            {score_join}
            LEFT JOIN {_CURRENT.format(eff=_EFFECTIVE.format(ds=ds))} cd ON cd.pair_id = p.id
            LEFT JOIN captions nc ON nc.id = cd.new_caption_id
            WHERE {' AND '.join(where)}
            ORDER BY p.position"""
        return self._df(sql, params)

    def scored_pairs(self, dataset_id: int, run_id: int) -> pd.DataFrame:
        """The pairs run `run_id` scored, in import order, with what the map and the score views need and no
        text: pair_id, split, is_noisy (1.0, 0.0, NaN when unknown), similarity, clean_prob, weight, `flagged`
        under the run's threshold, and the current decision. Fetched as numpy arrays: at 1M pairs the pandas
        fetch of `pairs_frame` (its paths and captions) took 5 s, this well under one."""
        import pandas as pd
        ds = int(dataset_id)
        cols = self._q(f"""
            SELECT p.id AS pair_id, p.split, p.is_noisy::DOUBLE AS is_noisy, s.similarity, s.clean_prob, s.weight,
                   (s.clean_prob < r.threshold) AS flagged, cd.action AS decision
            FROM pairs p
            JOIN scores s ON s.pair_id = p.id AND s.run_id = ?
            JOIN runs r ON r.id = s.run_id
            LEFT JOIN {_CURRENT.format(eff=_EFFECTIVE.format(ds=ds))} cd ON cd.pair_id = p.id
            WHERE p.dataset_id = ? AND s.clean_prob IS NOT NULL
            ORDER BY p.position""", [int(run_id), ds]).fetchnumpy()
        frame = pd.DataFrame({**cols, "is_noisy": _filled(cols["is_noisy"], np.nan),
                              "decision": _filled(cols["decision"], None)})
        frame["pair_id"] = frame["pair_id"].astype(np.int64)
        frame["flagged"] = frame["flagged"].astype(bool)
        return frame

    def pair_lookup(self, dataset_id: int, store_ids: bool = False) -> dict[str, int | None]:
        """The identifiers a person may name pairs by, mapped to store ids: pair keys (None for a key that
        several pairs share), or with `store_ids` the numeric store ids as text (`decide`, meta-data CSVs)."""
        rows = self._q("SELECT id, key FROM pairs WHERE dataset_id = ? ORDER BY position",
                       [int(dataset_id)]).fetchall()
        if store_ids:
            return {str(int(i)): int(i) for i, _ in rows}
        lookup: dict[str, int | None] = {}
        for pid, key in rows:
            key = str(key)
            lookup[key] = None if key in lookup else int(pid)
        return lookup

    def images_frame(self, dataset_id: int) -> pd.DataFrame:
        return self._df("SELECT id AS image_id, path, hash, width, height, nbytes FROM images "
                        "WHERE dataset_id = ? ORDER BY id", [dataset_id])

    def has_images_under(self, dataset_id: int, prefix: str) -> bool:
        """Whether an image path of the dataset starts with `prefix` (a folder inside its root, `sub/`)."""
        return self._q("SELECT EXISTS (SELECT 1 FROM images WHERE dataset_id = ? AND starts_with(path, ?))",
                       [dataset_id, prefix]).fetchone()[0]

    def captions_frame(self, dataset_id: int) -> pd.DataFrame:
        """Every caption row of the dataset, those typed in fixes included."""
        return self._df("SELECT id AS caption_id, text, hash FROM captions WHERE dataset_id = ? ORDER BY id",
                        [dataset_id])

    def caption_id(self, dataset_id: int, text: str, create: bool = True) -> int | None:
        """The id of caption `text` in the dataset, inserting it when `create` (typed fixes)."""
        h = text_hash(text)
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM captions WHERE dataset_id = ? AND hash = ?", [dataset_id, h]).fetchone()
            if row is not None or not create:
                return None if row is None else int(row[0])
            new_id = cur.execute("SELECT nextval('seq_caption')").fetchone()[0]
            cur.execute("INSERT INTO captions VALUES (?, ?, ?, ?)", [new_id, dataset_id, text, h])
            return int(new_id)

    # ---------------------------------------------------------------- runs
    def _run_from_row(self, row: tuple) -> Run:
        values = dict(zip(_RUN_COLUMNS, row))
        for f in _JSON_RUN_FIELDS:
            values[f] = json.loads(values[f]) if values[f] else {}
        return Run(**values)

    def create_run(self, dataset_id: int, method: str, model: str, *, regime: str | None = None,
                   device: str | None = None, seed: int | None = None, config: dict[str, Any] | None = None,
                   threshold: float = 0.5, parent_run: int | None = None) -> int:
        """A new run in state `queued`; returns its id."""
        with self.transaction() as cur:
            run_id = int(cur.execute("SELECT nextval('seq_run')").fetchone()[0])
            cur.execute("""INSERT INTO runs (id, dataset_id, method, model, regime, device, seed, config, state,
                           created_at, threshold, parent_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)""",
                        [run_id, dataset_id, method, model, regime, device, seed, json.dumps(config or {}),
                         _now(), threshold, parent_run])
        return run_id

    def run(self, run_id: int) -> Run:
        row = self._q(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE id = ?", [int(run_id)]).fetchone()
        if row is None:
            raise NotFound(f"no run with id {run_id}")
        return self._run_from_row(row)

    def runs(self, dataset_id: int | None = None, state: str | None = None) -> list[Run]:
        """Runs, newest first, optionally of one dataset and/or in one state."""
        where, params = [], []
        if dataset_id is not None:
            where.append("dataset_id = ?")
            params.append(int(dataset_id))
        if state is not None:
            where.append("state = ?")
            params.append(state)
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._run_from_row(r) for r in self._q(sql + " ORDER BY id DESC", params).fetchall()]

    def latest_finished_run(self, dataset_id: int) -> Run | None:
        runs = self.runs(dataset_id, state="finished")
        return runs[0] if runs else None

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set run columns; dict values of config/metrics/progress are stored as JSON.
        `state="running"` also records this process as the owner and beats the heartbeat."""
        if not fields:
            return
        unknown = set(fields) - set(_RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        if fields.get("state") == "running":
            fields.setdefault("owner_pid", os.getpid())
            fields.setdefault("owner_host", socket.gethostname())
            fields.setdefault("heartbeat", time.time())
            fields.setdefault("started_at", _now())
        if fields.get("state") in ("finished", "failed", "cancelled"):
            fields.setdefault("finished_at", _now())
        values = [json.dumps(v) if k in _JSON_RUN_FIELDS else v for k, v in fields.items()]
        with self.transaction() as cur:
            cur.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                        values + [int(run_id)])

    def heartbeat(self, run_id: int, progress: dict[str, Any] | None = None) -> None:
        """Beat a running run's heartbeat (and store its latest progress snapshot)."""
        fields: dict[str, Any] = {"heartbeat": time.time()}
        if progress is not None:
            fields["progress"] = progress
        self.update_run(run_id, **fields)

    def set_threshold(self, run_id: int, threshold: float) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConcordError(f"threshold must be within [0, 1], got {threshold}")
        self.update_run(run_id, threshold=float(threshold))

    def delete_run(self, run_id: int) -> None:
        with self.transaction() as cur:
            for table in ("scores", "score_extras"):
                cur.execute(f"DELETE FROM {table} WHERE run_id = ?", [int(run_id)])
            cur.execute("DELETE FROM runs WHERE id = ?", [int(run_id)])

    # ---------------------------------------------------------------- scores
    def write_scores(self, run_id: int, pair_ids: np.ndarray, similarity: np.ndarray, clean_prob: np.ndarray,
                     weight: np.ndarray, extras: dict[str, np.ndarray] | None = None) -> None:
        """Replace a run's per-pair scores (and extra columns such as NPC's `r`) in one transaction."""
        import pandas as pd

        frame = pd.DataFrame({
            "run_id": np.full(len(pair_ids), int(run_id), dtype=np.int64),
            "pair_id": np.asarray(pair_ids, dtype=np.int64),
            "similarity": np.asarray(similarity, dtype=np.float64),
            "clean_prob": np.asarray(clean_prob, dtype=np.float64),
            "weight": np.asarray(weight, dtype=np.float64),
        })
        extra_frames = [pd.DataFrame({"run_id": frame["run_id"], "pair_id": frame["pair_id"], "name": name,
                                      "value": np.asarray(values, dtype=np.float64)})
                        for name, values in (extras or {}).items()]
        with self.transaction() as cur:
            cur.execute("DELETE FROM scores WHERE run_id = ?", [int(run_id)])
            cur.execute("DELETE FROM score_extras WHERE run_id = ?", [int(run_id)])
            cur.register("new_scores", frame)
            cur.execute("INSERT INTO scores SELECT run_id, pair_id, similarity, clean_prob, weight FROM new_scores")
            cur.unregister("new_scores")
            for ef in extra_frames:
                cur.register("new_extras", ef)
                cur.execute("INSERT INTO score_extras SELECT run_id, pair_id, name, value FROM new_extras")
                cur.unregister("new_extras")

    def scores_version(self, run_id: int) -> tuple:
        """A cheap fingerprint of a run's scores (count and sums): it changes when they are rewritten or refit."""
        return tuple(self._q("SELECT count(*), sum(clean_prob), sum(weight), sum(similarity) FROM scores "
                             "WHERE run_id = ?", [int(run_id)]).fetchone())

    def update_clean_prob(self, run_id: int, pair_ids: np.ndarray, clean_prob: np.ndarray, weight: np.ndarray) -> None:
        """Rewrite a run's `clean_prob` and `weight` for these pairs in one transaction (a refit of a fused score)."""
        import pandas as pd

        frame = pd.DataFrame({"pair_id": np.asarray(pair_ids, dtype=np.int64),
                              "clean_prob": np.asarray(clean_prob, dtype=np.float64),
                              "weight": np.asarray(weight, dtype=np.float64)})
        with self.transaction() as cur:
            cur.register("new_probs", frame)
            cur.execute("""UPDATE scores SET clean_prob = n.clean_prob, weight = n.weight FROM new_probs n
                           WHERE scores.run_id = ? AND scores.pair_id = n.pair_id""", [int(run_id)])
            cur.unregister("new_probs")

    @staticmethod
    def _ident(name: str) -> str:
        """`name` as a quoted SQL identifier (extra score columns are named by methods and files)."""
        return '"' + name.replace('"', '""') + '"'

    def _run_kind(self, run_id: int) -> tuple[str, int, str] | None:
        """(method, dataset id, config JSON) of a run: what decides where its extra score columns live."""
        return self._q("SELECT method, dataset_id, config FROM runs WHERE id = ?", [int(run_id)]).fetchone()

    def _extras_relation(self, run_id: int, pair_id: int | None = None,
                         run: tuple[str, int, str] | None = None) -> tuple[list[str], str, list]:
        """A run's extra score columns as (names, SQL of a relation `(pair_id, *names)`, its parameters): the
        run's `score_extras` rows pivoted in DuckDB (pandas took 17 s at 1M), or for an attached set the consensus
        terms read in place from its scored shards (`_shard_terms`), of one pair when `pair_id` is given
        (`pair_extras` reads stored extras as rows). No names when the run has none, or its shards cannot be read
        now (`extras_unavailable` says why). `run`: its `_run_kind` when the caller has read it."""
        run = self._run_kind(run_id) if run is None else run
        if run is not None and run[0] == "shards":
            config = json.loads(run[2])
            if not config.get("terms") or self._shards_problem(config):
                return [], "", []
            at = None
            if pair_id is not None:
                at = self._q("SELECT p.id, p.position, i.hash FROM pairs p JOIN images i ON i.id = p.image_id "
                             "WHERE p.id = ?", [int(pair_id)]).fetchone()
                if at is None:
                    return [], "", []
            return self._shard_terms(run[1], config, at)
        names = [r[0] for r in self._q("SELECT DISTINCT name FROM score_extras WHERE run_id = ? ORDER BY name",
                                       [int(run_id)]).fetchall()]
        if not names:
            return [], "", []
        wide = "".join(f", max(value) FILTER (WHERE name = ?) AS {self._ident(n)}" for n in names)
        return names, f"SELECT pair_id{wide} FROM score_extras WHERE run_id = ? GROUP BY pair_id", [*names, int(run_id)]

    def extra_names(self, run_id: int) -> list[str]:
        """The names of a run's extra score columns (none when its shards cannot be read now)."""
        return self._extras_relation(run_id)[0]

    def extra_values(self, run_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One extra score column of a run as (pair ids, values), only the pairs that have it: what the map
        reads when it is coloured by that column (a pivot of every column took seconds at 1M pairs)."""
        run = self._run_kind(run_id)
        if run is not None and run[0] == "shards":
            names, relation, params = self._extras_relation(run_id, run=run)
            if name not in names:
                return np.zeros(0, np.int64), np.zeros(0)
            sql, params = f"SELECT pair_id, {self._ident(name)} AS value FROM ({relation})", params
        else:
            sql, params = "SELECT pair_id, value FROM score_extras WHERE run_id = ? AND name = ?", [int(run_id), name]
        cols = self._q(sql, params).fetchnumpy()
        return np.asarray(cols["pair_id"], np.int64), _filled(cols["value"], np.nan)

    def pair_extras(self, run_id: int, pair_id: int) -> dict[str, float]:
        """One pair's extra score columns under a run (e.g. a fused run's signals, an attached set's consensus
        terms); NaN where the pair has no value. Stored extras are read as rows, not pivoted: once per Review
        keypress, a pivot read a fused run's `score_extras` twice (about 15 ms against 4 ms at 1M pairs)."""
        run = self._run_kind(run_id)
        if run is None or run[0] != "shards":
            rows = self._q("SELECT name, value FROM score_extras WHERE run_id = ? AND pair_id = ?",
                           [int(run_id), int(pair_id)]).fetchall()
            return {str(n): float(v) if v is not None else float("nan") for n, v in rows}
        names, relation, params = self._extras_relation(run_id, pair_id, run)
        row = self._q(f"SELECT * EXCLUDE (pair_id) FROM ({relation})", params).fetchone() if names else None
        return {} if row is None else {n: float(v) if v is not None else float("nan") for n, v in zip(names, row)}

    def scores_frame(self, run_id: int, extras: bool = True) -> pd.DataFrame:
        """A run's scores, one row per pair, with `flagged` under the run's threshold and its extra score columns
        (`_extras_relation`; NaN where a pair lacks one), sorted by name for stored extras."""
        rid = int(run_id)
        names, relation, params = self._extras_relation(rid) if extras else ([], "", [])
        join = f"LEFT JOIN ({relation}) e ON e.pair_id = s.pair_id" if names else ""
        wide = "".join(f", e.{self._ident(n)}" for n in names)
        return self._df(f"""SELECT s.pair_id, s.similarity, s.clean_prob, s.weight,
                                   (s.clean_prob < r.threshold) AS flagged{wide}
                            FROM scores s JOIN runs r ON r.id = s.run_id {join}
                            WHERE s.run_id = ? ORDER BY s.pair_id""", params + [rid])

    # ---------------------------------------------------------------- decisions
    def decide(self, dataset_id: int, pair_ids: Sequence[int], action: str, reviewer: str, *,
               new_caption: str | None = None, run_id: int | None = None) -> list[int]:
        """Record `action` on each pair in one transaction, with its meta-data effect; returns decision ids.

        keep → the pair becomes a positive; reject → a (hard) negative; fix → the image with
        `new_caption` becomes a positive and the old pair a negative; skip → no meta-data change. What the
        pair's previous decision put in the meta-data gives way (`_settle_meta`). A fix's caption is checked
        and normalised as an import would (`fix_caption`) and must differ from the pair's own.
        """
        if action not in ACTIONS:
            raise ConcordError(f"unknown action {action!r} (choose one of {', '.join(ACTIONS)})")
        if not reviewer or not reviewer.strip():
            raise ConcordError("a decision needs a reviewer name")
        if action == "fix":
            new_caption = fix_caption(new_caption)
        elif new_caption is not None:
            raise ConcordError(f"only a fix takes a new caption, not {action}")
        ids: list[int] = []
        with self.transaction() as cur:
            wanted = [int(p) for p in pair_ids]
            found = cur.execute("SELECT id, image_id, caption_id, key FROM pairs WHERE dataset_id = ? AND id IN "
                                "(SELECT unnest(?::BIGINT[]))", [dataset_id, wanted]).fetchall()
            by_id = {int(r[0]): (int(r[1]), int(r[2])) for r in found}
            missing = [p for p in wanted if p not in by_id]
            if missing:
                raise NotFound(f"no pair {missing[0]} in this dataset")
            new_caption_id = None
            if action == "fix":
                known = self.caption_id(dataset_id, new_caption, create=False)
                clash = None if known is None else cur.execute(
                    "SELECT key, id FROM pairs WHERE dataset_id = ? AND caption_id = ? AND image_id IN "
                    "(SELECT unnest(?::BIGINT[])) ORDER BY id LIMIT 1",
                    [dataset_id, known, sorted({i for i, _ in by_id.values()})]).fetchone()
                if clash is not None and int(clash[1]) in by_id:
                    raise ConcordError(f"the new caption is the pair's own caption (pair {clash[0]}): use Keep if it "
                                       "is right, or give another caption")
                if clash is not None:       # the fix would repeat that pair, and its label would override its decision
                    raise ConcordError(f"the image already has this caption as pair {clash[0]}: decide on pair "
                                       f"{clash[0]} instead")
                new_caption_id = self.caption_id(dataset_id, new_caption)
            now = _now()
            for pid in wanted:
                image_id, caption_id = by_id[pid]
                did = int(cur.execute("""INSERT INTO decisions VALUES (nextval('seq_decision'), ?, ?, ?, ?, ?, ?,
                                         NULL, ?) RETURNING id""",
                                      [dataset_id, pid, action, reviewer, now, new_caption_id, run_id]).fetchone()[0])
                effects: list[tuple[int, int, int]] = []
                if action == "keep":
                    effects = [(image_id, caption_id, 1)]
                elif action == "reject":
                    effects = [(image_id, caption_id, 0)]
                elif action == "fix":
                    effects = [(image_id, new_caption_id, 1), (image_id, caption_id, 0)]
                for img, cap, label in effects:
                    self._put_meta(cur, dataset_id, img, cap, label, "decision", decision_id=did)
                self._settle_meta(cur, dataset_id, pid, image_id, did)
                ids.append(did)
        return ids

    def undo(self, dataset_id: int, reviewer: str) -> list[int]:
        """Revert `reviewer`'s latest effective decision with its meta-data effect, and with it every other pair
        that the same `decide` call decided (a bulk action is undone as one); returns the reverted ids, latest
        first (none when nothing is left to undo).

        The meta-data of the pairs it touched becomes what the remaining history says (`_settle_meta`): what the
        pair's decision now in effect, if any, put there, else what was there before, never anything made by a
        decision no longer in effect."""
        with self.transaction() as cur:
            rows = cur.execute(f"""WITH e AS (SELECT * FROM {_EFFECTIVE.format(ds=int(dataset_id))} WHERE reviewer = ?),
                                   last AS (SELECT created_at, action FROM e ORDER BY id DESC LIMIT 1)
                                   SELECT e.id, e.pair_id, p.image_id FROM e JOIN last USING (created_at, action)
                                   JOIN pairs p ON p.id = e.pair_id ORDER BY e.id DESC""", [reviewer]).fetchall()
            now = _now()
            for target, pair_id, image_id in rows:
                did = int(cur.execute("""INSERT INTO decisions VALUES (nextval('seq_decision'), ?, ?, 'undo', ?, ?,
                                         NULL, ?, NULL) RETURNING id""",
                                      [dataset_id, pair_id, reviewer, now, target]).fetchone()[0])
                self._settle_meta(cur, dataset_id, int(pair_id), int(image_id), did)
            return [int(r[0]) for r in rows]

    @staticmethod
    def _settle_meta(cur: duckdb.DuckDBPyConnection, dataset_id: int, pair_id: int, image_id: int, by: int) -> None:
        """After decision or undo `by` on pair `pair_id` (of image `image_id`), give each meta-data key the pair's
        decisions touch the active entry its history says.

        The keys are those of the active entries made by decisions on the pair and all those of its current
        decision (the latest not undone). A key's entry is its newest one still standing: one made by the current
        decision of its pair (not one that decision replaced itself), or one of another source; a person's removal
        or replacement (`removed_by` NULL) ends the walk, so nothing older comes back. Entries this deactivates are
        marked removed by `by`, so a later settle may bring them back. A decision's entries are all on its pair's
        image, so the image's decisions and entries are the whole history needed."""
        decisions = cur.execute("""SELECT d.id, d.pair_id, d.action, d.reverts FROM decisions d JOIN pairs p
                                   ON p.id = d.pair_id WHERE d.dataset_id = ? AND p.image_id = ?""",
                                [dataset_id, image_id]).fetchall()
        reverted = {r[3] for r in decisions if r[3] is not None}
        current: dict[int, int] = {}
        for did, pid, action, _ in decisions:
            if action != "undo" and did not in reverted and did > current.get(pid, 0):
                current[pid] = did
        in_effect, of_pair = set(current.values()), {r[0] for r in decisions if r[1] == pair_id}
        rows = cur.execute("""SELECT id, caption_id, decision_id, removed_at IS NULL, removed_by FROM meta_entries
                              WHERE dataset_id = ? AND image_id = ? ORDER BY id DESC""",
                           [dataset_id, image_id]).fetchall()
        keys = {c for _, c, d, active, _ in rows if d in of_pair and (active or d == current.get(pair_id))}
        chosen: dict[int, int | None] = {}
        for entry_id, caption_id, decision_id, active, removed_by in rows:
            if caption_id not in keys or caption_id in chosen:
                continue
            if not active and removed_by is None:           # a person removed or replaced it
                chosen[caption_id] = None
            elif decision_id is None or (decision_id in in_effect and removed_by != decision_id):
                chosen[caption_id] = entry_id
        wanted = {e for e in chosen.values() if e is not None}
        off = [e for e, c, _, active, _ in rows if active and c in keys and e not in wanted]
        on = wanted - {e for e, _, _, active, _ in rows if active}
        if off:
            cur.execute(f"UPDATE meta_entries SET removed_at = ?, removed_by = ? WHERE id IN "
                        f"({', '.join(map(str, off))})", [_now(), by])
        if on:
            cur.execute(f"UPDATE meta_entries SET removed_at = NULL, removed_by = NULL WHERE id IN "
                        f"({', '.join(map(str, sorted(on)))})")

    def decisions_frame(self, dataset_id: int) -> pd.DataFrame:
        """The full decision log, oldest first, with pair keys and caption texts."""
        return self._df(_DECISION_LOG.format(ds=int(dataset_id)))

    def current_decisions(self, dataset_id: int) -> pd.DataFrame:
        """Each decided pair's current (latest effective) decision: pair_id, decision_id, action, reviewer,
        created_at, and a fix's new caption (new_caption_id, new_caption). The fixes' captions are looked up by id
        apart: a join with the captions table scanned all of it (56 ms of every Review keypress at 1M)."""
        import pandas as pd

        ds = int(dataset_id)
        cols = self._q(f"""SELECT cd.pair_id, cd.id AS decision_id, cd.action, cd.reviewer, cd.created_at,
                                  cd.new_caption_id
                           FROM {_CURRENT.format(eff=_EFFECTIVE.format(ds=ds))} cd ORDER BY cd.pair_id""").fetchnumpy()
        # read as arrays, not `.df()`: a few ms less on every Review key press
        frame = pd.DataFrame({"pair_id": np.asarray(cols["pair_id"], np.int64),
                              "decision_id": np.asarray(cols["decision_id"], np.int64),
                              "action": np.asarray(cols["action"], object),
                              "reviewer": np.asarray(cols["reviewer"], object),
                              "created_at": np.asarray(cols["created_at"], "datetime64[us]")})
        fix = _filled(cols["new_caption_id"], np.nan)
        fixed = np.unique(fix[~np.isnan(fix)]).astype(np.int64)
        texts = self.captions_by_id(fixed).set_index("caption_id")["text"] if len(fixed) else None
        return frame.assign(new_caption_id=pd.array(fix, dtype="Int64"),
                            new_caption=None if texts is None else pd.Series(fix).map(texts).to_numpy(object))

    # ---------------------------------------------------------------- meta-data
    def _put_meta(self, cur: duckdb.DuckDBPyConnection, dataset_id: int, image_id: int, caption_id: int,
                  label: int, source: str, decision_id: int | None = None) -> int:
        """Make (image, caption) an active entry with `label`, replacing the active one it supersedes."""
        prev = cur.execute("""SELECT id FROM meta_entries WHERE dataset_id = ? AND image_id = ? AND caption_id = ?
                              AND removed_at IS NULL""", [dataset_id, image_id, caption_id]).fetchone()
        now = _now()
        if prev is not None:
            cur.execute("UPDATE meta_entries SET removed_at = ?, removed_by = ? WHERE id = ?",
                        [now, decision_id, prev[0]])
        return int(cur.execute("""INSERT INTO meta_entries VALUES (nextval('seq_meta'), ?, ?, ?, ?, ?, ?, ?, ?, NULL,
                                  NULL) RETURNING id""", [dataset_id, image_id, caption_id, int(label), source,
                                                         decision_id, None if prev is None else prev[0],
                                                         now]).fetchone()[0])

    def add_meta(self, dataset_id: int, entries: Sequence[tuple[int, int, int]], source: str) -> list[int]:
        """Add (image_id, caption_id, label) entries in one transaction; an entry for the same image and
        caption is replaced. Returns the new entry ids."""
        if source not in META_SOURCES:
            raise ConcordError(f"unknown meta-data source {source!r} (one of {', '.join(META_SOURCES)})")
        with self.transaction() as cur:
            for _, _, label in entries:
                if int(label) not in (0, 1):
                    raise ConcordError(f"a meta-data label is 1 (matched) or 0 (mismatched), got {label!r}")
            return [self._put_meta(cur, dataset_id, int(i), int(c), int(l), source) for i, c, l in entries]

    def remove_meta(self, dataset_id: int, entry_ids: Sequence[int]) -> int:
        """Deactivate entries; returns how many were active."""
        with self.transaction() as cur:
            ids = [int(e) for e in entry_ids]
            n = cur.execute("""SELECT count(*) FROM meta_entries WHERE dataset_id = ? AND removed_at IS NULL
                               AND id IN (SELECT unnest(?::BIGINT[]))""", [dataset_id, ids]).fetchone()[0]
            cur.execute("""UPDATE meta_entries SET removed_at = ? WHERE dataset_id = ? AND removed_at IS NULL
                           AND id IN (SELECT unnest(?::BIGINT[]))""", [_now(), dataset_id, ids])
            return int(n)

    def flip_meta(self, dataset_id: int, entry_ids: Sequence[int]) -> list[int]:
        """Replace each active entry by one with the opposite label (source `manual`)."""
        with self.transaction() as cur:
            rows = cur.execute("""SELECT image_id, caption_id, label FROM meta_entries WHERE dataset_id = ?
                                  AND removed_at IS NULL AND id IN (SELECT unnest(?::BIGINT[])) ORDER BY id""",
                               [dataset_id, [int(e) for e in entry_ids]]).fetchall()
            return [self._put_meta(cur, dataset_id, i, c, 1 - int(l), "manual") for i, c, l in rows]

    def meta_frame(self, dataset_id: int) -> pd.DataFrame:
        """The active meta-data entries (the table every method reads), with the matching pair if any."""
        return self._df("""SELECT m.id AS entry_id, m.image_id, m.caption_id, m.label, m.source, m.decision_id,
                                  m.created_at, i.path AS image_path, c.text AS caption, p.id AS pair_id, p.split
                           FROM meta_entries m
                           JOIN images i ON i.id = m.image_id
                           JOIN captions c ON c.id = m.caption_id
                           LEFT JOIN pairs p ON p.dataset_id = m.dataset_id AND p.image_id = m.image_id
                                             AND p.caption_id = m.caption_id
                           WHERE m.dataset_id = ? AND m.removed_at IS NULL ORDER BY m.id""", [dataset_id])

    # ---------------------------------------------------------------- meta-data curation (issue 12)
    def meta_entry_count(self, dataset_id: int, source: str | None = None, include_removed: bool = False) -> int:
        """How many meta-data entries the dataset has (of one source; with `include_removed`, ever had)."""
        where, params = ["dataset_id = ?"], [int(dataset_id)]
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if not include_removed:
            where.append("removed_at IS NULL")
        return int(self._q(f"SELECT count(*) FROM meta_entries WHERE {' AND '.join(where)}", params).fetchone()[0])

    def search_pairs(self, dataset_id: int, text: str, split: str | None = None, limit: int = 50) -> pd.DataFrame:
        """Pairs whose caption contains `text` (case-insensitive) or whose key is `text`, in import order,
        with the label and id of their active meta-data entry (NULL when they have none)."""
        where = ["p.dataset_id = ?", "(contains(lower(c.text), lower(?)) OR p.key = ?)"]
        params: list[Any] = [int(dataset_id), text, text.strip()]
        if split is not None:
            where.append("p.split = ?")
            params.append(split)
        return self._df(f"""SELECT p.id AS pair_id, p.key, p.split, p.image_id, i.path AS image_path,
                                   i.hash AS image_hash, p.caption_id, c.text AS caption,
                                   m.label AS meta_label, m.id AS entry_id
                            FROM pairs p
                            JOIN images i ON i.id = p.image_id
                            JOIN captions c ON c.id = p.caption_id
                            LEFT JOIN meta_entries m ON m.dataset_id = p.dataset_id AND m.image_id = p.image_id
                                 AND m.caption_id = p.caption_id AND m.removed_at IS NULL
                            WHERE {' AND '.join(where)} ORDER BY p.position LIMIT ?""", params + [int(limit)])

    # ---------------------------------------------------------------- review sets
    def create_review_set(self, dataset_id: int, name: str, pair_ids: Sequence[int]) -> int:
        """Save a named list of pairs (replacing a set of the same name); returns its id."""
        import pandas as pd

        if not name.strip():
            raise ConcordError("a review set needs a name")
        with self.transaction() as cur:
            old = cur.execute("SELECT id FROM review_sets WHERE dataset_id = ? AND name = ?",
                              [dataset_id, name]).fetchone()
            if old is not None:
                cur.execute("DELETE FROM review_set_pairs WHERE set_id = ?", [old[0]])
                cur.execute("DELETE FROM review_sets WHERE id = ?", [old[0]])
            set_id = int(cur.execute("SELECT nextval('seq_review_set')").fetchone()[0])
            cur.execute("INSERT INTO review_sets VALUES (?, ?, ?, ?)", [set_id, dataset_id, name, _now()])
            frame = pd.DataFrame({"set_id": set_id, "pair_id": np.asarray(pair_ids, dtype=np.int64),
                                  "position": np.arange(len(pair_ids), dtype=np.int32)})
            cur.register("new_set", frame)
            cur.execute("INSERT INTO review_set_pairs SELECT set_id, pair_id, position FROM new_set")
            cur.unregister("new_set")
        return set_id

    def review_sets(self, dataset_id: int) -> pd.DataFrame:
        return self._df("""SELECT s.id AS set_id, s.name, s.created_at, count(p.pair_id) AS pairs
                           FROM review_sets s LEFT JOIN review_set_pairs p ON p.set_id = s.id
                           WHERE s.dataset_id = ? GROUP BY ALL ORDER BY s.id DESC""", [dataset_id])

    def review_set_pair_ids(self, set_id: int) -> list[int]:
        return [int(r[0]) for r in self._q("SELECT pair_id FROM review_set_pairs WHERE set_id = ? ORDER BY position",
                                           [set_id]).fetchall()]

    # ---------------------------------------------------------------- dataset records (copies, benchmarks)
    def dataset_records(self, dataset_id: int) -> pd.DataFrame:
        """The dataset as `write_dataset` takes it: one row per pair with its image's path, hash and size,
        caption, split, key, and the injected-noise columns."""
        return self._df("""SELECT i.path AS image_path, i.hash AS image_hash, i.width, i.height, i.nbytes,
                                  c.text AS caption, p.split, p.key, p.is_noisy, oc.text AS original_caption
                           FROM pairs p JOIN images i ON i.id = p.image_id JOIN captions c ON c.id = p.caption_id
                           LEFT JOIN captions oc ON oc.id = p.original_caption_id
                           WHERE p.dataset_id = ? ORDER BY p.position""", [int(dataset_id)])

    # ---------------------------------------------------------------- projection (explore)
    def run_pairs(self, run_id: int) -> pd.DataFrame:
        """The pairs a run scored, with their image and caption ids (what its map projects), by pair id."""
        return self._df("""SELECT p.id AS pair_id, p.image_id, p.caption_id FROM scores s
                           JOIN pairs p ON p.id = s.pair_id WHERE s.run_id = ? ORDER BY p.id""", [int(run_id)])

    # ---------------------------------------------------------------- datasets page: sample pairs
    def sample_pair_ids(self, dataset_id: int, n: int, seed: int = 0) -> list[int]:
        """`n` pair ids of the dataset in an order fixed by `seed` (a hash of id and seed), for a sample grid."""
        rows = self._q("SELECT id FROM pairs WHERE dataset_id = ? ORDER BY hash(id, ?), id LIMIT ?",
                       [int(dataset_id), int(seed), int(n)]).fetchall()
        return [int(r[0]) for r in rows]

    # --- review (issue 11): the review queue and the lookups the Review page needs
    _REVIEW_ORDERS = {"suspicious": "s.clean_prob ASC NULLS LAST, p.position",
                      "uncertain": "abs(s.clean_prob - ?) ASC NULLS LAST, p.position",
                      "set": "rs.position, p.position", "position": "p.position"}

    def review_scope(self, dataset_id: int, run_id: int, *, order: str = "suspicious", split: str | None = None,
                     text: str | None = None, clean_range: tuple[float, float] | None = None,
                     set_id: int | None = None, threshold: float = 0.5) -> np.ndarray:
        """The pair ids of a review queue's scope, in the queue's order (int64).

        The scope is the dataset's pairs (only those of review set `set_id` when given) matching `split`,
        caption `text` (case-insensitive substring, or the pair key) and `clean_range` (inclusive, under
        run `run_id`); decisions do not change it (see `core.review`, which applies them). `order`:
        suspicious (lowest clean_prob), uncertain (clean_prob nearest `threshold`), set (the set's order) or
        position (import order); unscored pairs last, ties by import order."""
        if order not in self._REVIEW_ORDERS or (order == "set" and set_id is None):
            raise ConcordError(f"unknown queue order {order!r}" if order not in self._REVIEW_ORDERS else
                               "the review-set order needs a review set")
        joins, where = [], ["p.dataset_id = ?"]
        join_params: list[Any] = []
        where_params: list[Any] = [int(dataset_id)]
        if set_id is not None:
            joins.append("JOIN review_set_pairs rs ON rs.pair_id = p.id AND rs.set_id = ?")
            join_params.append(int(set_id))
        if text:
            joins.append("JOIN captions c ON c.id = p.caption_id")
            where.append("(contains(lower(c.text), lower(?)) OR p.key = ?)")
            where_params += [text, text.strip()]
        if split is not None:
            where.append("p.split = ?")
            where_params.append(split)
        if clean_range is not None:
            where.append("s.clean_prob BETWEEN ? AND ?")
            where_params += [float(clean_range[0]), float(clean_range[1])]
        order_params = [float(threshold)] if order == "uncertain" else []
        rows = self._q(f"""SELECT p.id FROM pairs p {' '.join(joins)}
                           LEFT JOIN scores s ON s.pair_id = p.id AND s.run_id = ?
                           WHERE {' AND '.join(where)} ORDER BY {self._REVIEW_ORDERS[order]}""",
                       join_params + [int(run_id)] + where_params + order_params).fetchnumpy()
        return np.asarray(rows["id"], dtype=np.int64)

    def review_rows(self, dataset_id: int, run_id: int, pair_ids: Sequence[int]) -> pd.DataFrame:
        """The rows the Review page shows for these pairs, in the order given: ids, position, scores under run
        `run_id`, current decision (and its id), key, split, image path and hash, caption."""
        ids = [int(p) for p in pair_ids]
        ds = int(dataset_id)
        # each table filtered to the pairs' rows first (materialised CTEs): joined directly, DuckDB scanned the
        # whole images, captions and scores tables for a handful of rows (50 ms a keypress at 1M pairs, 13 ms so)
        frame = self._df(f"""
            WITH sel AS MATERIALIZED (SELECT id, position, image_id, caption_id, key, split FROM pairs
                                      WHERE dataset_id = ? AND id IN (SELECT unnest(?::BIGINT[]))),
                 im AS MATERIALIZED (SELECT id, path, hash FROM images WHERE id IN (SELECT image_id FROM sel)),
                 ca AS MATERIALIZED (SELECT id, text FROM captions WHERE id IN (SELECT caption_id FROM sel)),
                 sc AS MATERIALIZED (SELECT pair_id, similarity, clean_prob, weight FROM scores
                                     WHERE run_id = ? AND pair_id IN (SELECT id FROM sel)),
                 cd AS MATERIALIZED (SELECT pair_id, action, id FROM {_CURRENT.format(eff=_EFFECTIVE.format(ds=ds))}
                                     WHERE pair_id IN (SELECT id FROM sel))
            SELECT p.id AS pair_id, p.position, p.image_id, p.caption_id, sc.similarity, sc.clean_prob, sc.weight,
                   cd.action AS decision, cd.id AS decision_id, p.key, p.split, im.path AS image_path,
                   im.hash AS image_hash, ca.text AS caption
            FROM sel p JOIN im ON im.id = p.image_id JOIN ca ON ca.id = p.caption_id
            LEFT JOIN sc ON sc.pair_id = p.id LEFT JOIN cd ON cd.pair_id = p.id""", [ds, ids, int(run_id)])
        return frame.set_index("pair_id").reindex(ids).reset_index()

    def captions_by_id(self, caption_ids: Sequence[int]) -> pd.DataFrame:
        """Caption rows (caption_id, text) of these ids, in no particular order."""
        return self._df("SELECT id AS caption_id, text FROM captions WHERE id IN (SELECT unnest(?::BIGINT[]))",
                        [[int(i) for i in caption_ids]])

    def images_by_id(self, image_ids: Sequence[int]) -> pd.DataFrame:
        """Image rows (image_id, path, hash) of these ids, in no particular order."""
        return self._df("SELECT id AS image_id, path, hash FROM images WHERE id IN (SELECT unnest(?::BIGINT[]))",
                        [[int(i) for i in image_ids]])

    def image_pairs(self, dataset_id: int, image_id: int) -> pd.DataFrame:
        """Every pair of the image (pair_id, caption_id), in import order."""
        return self._df("SELECT id AS pair_id, caption_id FROM pairs WHERE dataset_id = ? AND image_id = ? "
                        "ORDER BY position", [int(dataset_id), int(image_id)])

    def last_decision_id(self, dataset_id: int) -> int:
        """The newest decision id of the dataset (0 when none): a queue opened now keeps pairs decided up to it."""
        return int(self._q("SELECT coalesce(max(id), 0) FROM decisions WHERE dataset_id = ?",
                           [int(dataset_id)]).fetchone()[0])

    def decisions_since(self, dataset_id: int, decision_id: int) -> int:
        """How many decisions (undos included) the dataset has had after decision `decision_id`."""
        return int(self._q("SELECT count(*) FROM decisions WHERE dataset_id = ? AND id > ?",
                           [int(dataset_id), int(decision_id)]).fetchone()[0])

    def decision_times(self, dataset_id: int, reviewer: str, limit: int = 200) -> list[datetime]:
        """When `reviewer`'s latest `limit` decisions (undos not counted) were made, oldest first."""
        rows = self._q("""SELECT created_at FROM decisions WHERE dataset_id = ? AND reviewer = ? AND action <> 'undo'
                          ORDER BY id DESC LIMIT ?""", [int(dataset_id), reviewer, int(limit)]).fetchall()
        return [r[0] for r in reversed(rows)]

    def decision_summary(self, decision_id: int) -> dict[str, Any]:
        """One decision's pair id, pair key and action (what an undo message names)."""
        row = self._q("""SELECT d.pair_id, p.key, d.action FROM decisions d LEFT JOIN pairs p ON p.id = d.pair_id
                         WHERE d.id = ?""", [int(decision_id)]).fetchone()
        if row is None:
            raise NotFound(f"no decision with id {decision_id}")
        return {"pair_id": int(row[0]), "key": row[1], "action": row[2]}

    def split_sizes(self, dataset_id: int) -> dict[str, dict[str, int]]:
        """Per split, sorted by name: its distinct images and captions and its pairs (counted in the database)."""
        rows = self._q("""SELECT split, count(DISTINCT image_id), count(DISTINCT caption_id), count(*) FROM pairs
                          WHERE dataset_id = ? GROUP BY split ORDER BY split""", [int(dataset_id)]).fetchall()
        return {str(s): {"images": int(i), "captions": int(c), "pairs": int(n)} for s, i, c, n in rows}

    def split_names(self, dataset_id: int) -> list[str]:
        """The dataset's split names, sorted."""
        return [r[0] for r in self._q("SELECT DISTINCT split FROM pairs WHERE dataset_id = ? ORDER BY split",
                                      [int(dataset_id)]).fetchall()]

    # ---------------------------------------------------------------- export (core.export)
    @staticmethod
    def _export_sql(dataset_id: int, run_id: int | None, drop_flagged: bool) -> str:
        """Every pair of the dataset with what an export writes of it (the fixed caption where a fix replaced
        it, the run's scores, the current decision) and `dropped`: 'rejected', 'flagged' (undecided or skipped,
        under the run's threshold, and `drop_flagged`) or NULL (kept). Ids are inlined, so COPY can take it."""
        ds = int(dataset_id)
        scores, join = "NULL::DOUBLE AS clean_prob, NULL::DOUBLE AS weight, FALSE AS flagged", ""
        if run_id is not None:
            scores = "s.clean_prob, s.weight, coalesce(s.clean_prob < r.threshold, FALSE) AS flagged"
            join = (f"LEFT JOIN scores s ON s.pair_id = p.id AND s.run_id = {int(run_id)} "
                    "LEFT JOIN runs r ON r.id = s.run_id")
        return f"""
            SELECT *, CASE WHEN decision = 'reject' THEN 'rejected'
                           WHEN {bool(drop_flagged)} AND coalesce(decision, 'skip') = 'skip' AND flagged
                           THEN 'flagged' END AS dropped
            FROM (SELECT p.position, i.path AS image_path, i.nbytes,
                         CASE WHEN cd.action = 'fix' THEN nc.text ELSE c.text END AS caption,
                         p.split, p.key AS pair_id, {scores}, cd.action AS decision
                  FROM pairs p
                  JOIN images i ON i.id = p.image_id
                  JOIN captions c ON c.id = p.caption_id
                  {join}
                  LEFT JOIN {_CURRENT.format(eff=_EFFECTIVE.format(ds=ds))} cd ON cd.pair_id = p.id
                  LEFT JOIN captions nc ON nc.id = cd.new_caption_id
                  WHERE p.dataset_id = {ds})"""

    def _export_summary(self, relation: str) -> dict[str, Any]:
        """`export_summary` over `relation` (the live `_export_sql`, or a snapshot's table)."""
        n, rejected, flagged, fixed = self._q(f"""
            SELECT count(*), count(*) FILTER (WHERE dropped = 'rejected'), count(*) FILTER (WHERE dropped = 'flagged'),
                   count(*) FILTER (WHERE dropped IS NULL AND decision = 'fix') FROM {relation}""").fetchone()
        images = self._q(f"""SELECT split_part(image_path, '/', 1) AS first, count(*), sum(nbytes)
                             FROM (SELECT image_path, any_value(nbytes) AS nbytes FROM {relation}
                                   WHERE dropped IS NULL GROUP BY image_path)
                             GROUP BY first""").fetchall()
        counts = {"in": int(n), "dropped": int(rejected + flagged), "dropped_rejected": int(rejected),
                  "dropped_flagged_unreviewed": int(flagged), "fixed": int(fixed), "out": int(n - rejected - flagged)}
        return {"counts": counts, "images": sum(int(r[1]) for r in images),
                "image_bytes": sum(int(r[2] or 0) for r in images), "first_parts": {r[0] for r in images if r[0]}}

    def export_summary(self, dataset_id: int, run_id: int | None, drop_flagged: bool) -> dict[str, Any]:
        """What an export keeps, counted in the database: `counts` (in, dropped, dropped_rejected,
        dropped_flagged_unreviewed, fixed, out), `images` (distinct kept image paths), `image_bytes` (their
        size) and `first_parts` (the first path part of each, to tell clashes with the export's own files)."""
        return self._export_summary(f"({self._export_sql(dataset_id, run_id, drop_flagged)})")

    @contextmanager
    def export_snapshot(self, dataset_id: int, run_id: int | None, drop_flagged: bool) -> Iterator["ExportSnapshot"]:
        """What an export writes (`_export_sql`), frozen in a temporary table of this thread's connection for the
        length of a write: the data file, the copied images and the manifest's counts then agree whatever is
        decided meanwhile. The table lives in DuckDB (which spills to disk), not in Python, and goes with the
        connection if the process dies."""
        table = f"export_snapshot_{next(_SNAPSHOTS)}"
        try:
            self._q(f"CREATE TEMP TABLE {table} AS {self._export_sql(dataset_id, run_id, drop_flagged)}")
            self._q(f"""CREATE TEMP TABLE {table}_images AS SELECT image_path, min(position) AS first FROM {table}
                        WHERE dropped IS NULL GROUP BY image_path""")      # each kept image once, first seen
            yield ExportSnapshot(self, table)
        finally:
            for name in (table, f"{table}_images"):
                self._q(f"DROP TABLE IF EXISTS {name}")

    def copy_decision_log(self, dataset_id: int, path: str | os.PathLike) -> None:
        """Write the full decision log (`decisions_frame`'s rows) to `path` as csv, streamed by COPY."""
        self._copy(_DECISION_LOG.format(ds=int(dataset_id)), path, "csv")

    def _copy(self, sql: str, path: str | os.PathLike, fmt: str) -> None:
        self._q(f"COPY ({sql}) TO {_sql_text(path)} ({_COPY_FORMATS[fmt]})")

    # ---------------------------------------------------------------- attached scored shards (issue 21)
    _FILE_STRIDE = 1 << 32
    """An attached pair's `position` is its shard's index in the run's file list times this, plus its row in the
    file: exact and unique whatever the files' ordinals (two scoring passes over other input lists may repeat
    them), and the key its in-place terms are joined on."""

    def attach_scored_shards(self, name: str, files: Sequence[str], *, model: str, config: dict[str, Any],
                             source_path: str, info: dict[str, Any] | None = None,
                             terms: Sequence[str] = (), splits: bool = False) -> tuple[int, int]:
        """Make the scored Parquet shards `files` (`core.shards.writer`) dataset `name` with one finished run
        (method `shards`) holding their scores, in one transaction; returns (dataset id, run id).

        DuckDB reads the files in place (`read_parquet`) and copies only what every page and decision joins on:
        each pair's key, image (one per content hash, at its first path) and caption, and its similarity,
        clean_prob and weight. The per-pair `terms` (the consensus terms) stay in the files: the run's config
        records the files and their sizes, `scores_frame` and `pair_extras` read the terms from them, and the
        run's `signal_lows` (each term's lowest fifth over the attached pairs, as a fused run records) explain
        Review's flags. Image paths are absolute, so the dataset's root is `/`. Pairs repeating an earlier pair's
        (image content, caption text) are merged, as on import. With `splits` the files' `split` column gives each
        pair's split (empty, or a file written without the column: train); without, every pair is in `train`."""
        from core.detect.explain import LOW_QUANTILE
        if not files:
            raise ConcordError("no scored shards to attach")
        files = [str(f) for f in files]
        config = {**config, "files": files, "file_bytes": [os.path.getsize(f) for f in files], "terms": list(terms)}
        with self.transaction() as cur:
            if cur.execute("SELECT count(*) FROM datasets WHERE name = ?", [name]).fetchone()[0]:
                raise ConcordError(f"dataset {name!r} already exists; attach under another --name or delete it first")
            ds_id = int(cur.execute("SELECT nextval('seq_dataset')").fetchone()[0])
            cur.execute("INSERT INTO datasets VALUES (?, ?, '/', 'shards', ?, NULL, ?, ?)",
                        [ds_id, name, source_path, json.dumps(info or {}), _now()])
            cur.execute(f"""CREATE TEMP TABLE attach_rows AS
                SELECT key, ltrim(image_path, '/') AS image_path, image_hash, caption, caption_hash,
                       file_index * {self._FILE_STRIDE} + file_row_number AS position,
                       similarity, clean_prob, weight, sha1(image_hash || ':' || caption_hash) AS uid,
                       {"coalesce(nullif(trim(split), ''), 'train')" if splits else "'train'"} AS split
                FROM read_parquet(?::VARCHAR[], file_row_number = true, union_by_name = true)
                QUALIFY row_number() OVER (PARTITION BY uid ORDER BY position) = 1""", [files])
            try:
                cur.execute("""INSERT INTO images SELECT nextval('seq_image'), ?, image_path, image_hash, NULL, NULL,
                               NULL FROM (SELECT image_hash, arg_min(image_path, position) AS image_path,
                                                 min(position) AS o FROM attach_rows GROUP BY image_hash) ORDER BY o""",
                            [ds_id])
                cur.execute("""INSERT INTO captions SELECT nextval('seq_caption'), ?, caption, caption_hash
                               FROM (SELECT caption_hash, any_value(caption) AS caption, min(position) AS o
                                     FROM attach_rows GROUP BY caption_hash) ORDER BY o""", [ds_id])
                cur.execute("""INSERT INTO pairs SELECT nextval('seq_pair'), ?, i.id, c.id, r.split, r.key, r.uid,
                               NULL, NULL, r.position
                               FROM attach_rows r JOIN images i ON i.dataset_id = ? AND i.hash = r.image_hash
                               JOIN captions c ON c.dataset_id = ? AND c.hash = r.caption_hash
                               ORDER BY r.position""", [ds_id] * 3)
                lows = {}
                if terms:
                    _, relation, params = self._shard_terms(ds_id, config)
                    quantiles = ", ".join(f"quantile_cont({self._ident(t)}, {LOW_QUANTILE!r})" for t in terms)
                    row = cur.execute(f"SELECT {quantiles} FROM ({relation})", params).fetchone()
                    lows = {t: float(v) for t, v in zip(terms, row) if v is not None}
                run_id = int(cur.execute("SELECT nextval('seq_run')").fetchone()[0])
                now = _now()
                cur.execute("""INSERT INTO runs (id, dataset_id, method, model, config, state, created_at, started_at,
                               finished_at, threshold, metrics)
                               VALUES (?, ?, 'shards', ?, ?, 'finished', ?, ?, ?, 0.5, ?)""",
                            [run_id, ds_id, model, json.dumps(config), now, now, now,
                             json.dumps({"signal_lows": lows})])
                cur.execute("""INSERT INTO scores SELECT ?, p.id, r.similarity, r.clean_prob, r.weight
                               FROM attach_rows r JOIN pairs p ON p.dataset_id = ? AND p.uid = r.uid""",
                            [run_id, ds_id])
            finally:
                try:
                    cur.execute("DROP TABLE IF EXISTS attach_rows")
                except duckdb.Error:  # an aborted transaction refuses it; its rollback drops the table
                    pass
        return ds_id, run_id

    def _shard_terms(self, dataset_id: int, config: dict[str, Any],
                     at: tuple[int, int, str] | None = None) -> tuple[list[str], str, list]:
        """An attached set's consensus terms as (names, SQL of a relation `(pair_id, *names)`, its parameters),
        read in place from the shard files its run's config lists and joined to the pairs on `position`; `at` (a
        pair's id, position and image hash) narrows it to that pair, read from the rows of its image in its file.

        With the sibling terms comes `sibling_count`, which Review's line names: the other captions of the pair's
        image in its shard, the pool the scorer drew siblings from. NaN terms read as NULL, tested as neither
        finite nor infinite: DuckDB folds `isnan` to false from Parquet min/max statistics, which leave NaN out
        (duckdb/duckdb#25521)."""
        terms, files = list(config["terms"]), list(config["files"])
        first, image, pair, by_image, by_pair = 0, "", "", [], []
        if at is not None:
            first = int(at[1]) // self._FILE_STRIDE
            files, image, pair = [files[first]], "WHERE image_hash = ?", "AND p.id = ?"
            by_image, by_pair = [at[2]], [int(at[0])]
        columns = [f"(CASE WHEN isfinite({q}) OR isinf({q}) THEN {q} END) AS {q}" for q in map(self._ident, terms)]
        names = terms + (["sibling_count"] if "siblings" in terms else [])
        if "siblings" in terms:
            columns.append("count(DISTINCT caption_hash) OVER (PARTITION BY file_index, image_hash) - 1 "
                           "AS sibling_count")
        sql = f"""SELECT p.id AS pair_id{"".join(f", t.{self._ident(n)}" for n in names)}
                  FROM (SELECT (file_index + ?) * {self._FILE_STRIDE} + file_row_number AS position,
                               {", ".join(columns)}
                        FROM read_parquet(?::VARCHAR[], file_row_number = true, union_by_name = true) {image}) t
                  JOIN pairs p ON p.dataset_id = ? AND p.position = t.position {pair}"""
        return names, sql, [first, files, *by_image, int(dataset_id), *by_pair]

    @staticmethod
    def _shards_problem(config: dict[str, Any]) -> str | None:
        """Why an attached set's shard files cannot be read now (gone, or rewritten since attach), else None."""
        folder, kept = config["shards"], "The scores, decisions and export are unaffected"
        for path, size in zip(config["files"], config["file_bytes"]):
            try:
                now = os.path.getsize(path)
            except OSError:
                gone = f"the shards folder {folder} is missing (moved or deleted?)" if not os.path.isdir(folder) \
                    else f"{Path(path).name} is missing from the shards folder {folder}"
                return f"The consensus terms are unavailable: {gone}. {kept}; put the files back to see the terms."
            if now != size:
                return (f"The consensus terms are unavailable: {Path(path).name} in {folder} has changed since it "
                        f"was attached. {kept}; attach the folder anew to read its new terms.")
        return None

    def extras_unavailable(self, run_id: int) -> str | None:
        """A sentence for the pages when a run's extra score columns cannot be read now, else None: an attached
        set's consensus terms live in its shard files, which may have been moved, deleted or rewritten."""
        run = self.run(run_id)
        return self._shards_problem(run.config) if run.method == "shards" and run.config.get("terms") else None
