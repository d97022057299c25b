"""The rows of an import on their way into the store: DuckDB temporary tables on the importing thread's cursor,
filled a batch at a time, so that Python holds one batch of rows whatever the file's size (DuckDB keeps the
tables in its buffer pool and spills them to disk past its memory limit).

`import_rows` has every row read, good or bad, with the first reason it is refused; `import_images` every image
checked. The checks that need all rows (a pair id repeated, an image that failed its check) are queries; the
good rows reach `Store.write_dataset` as the view `import_pairs`.
"""
from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa

from core.importers.validation import ImageInfo, Problem

_BATCH = 8192
_ROWS = (("row_index", pa.int64()), ("file", pa.string()), ("place", pa.string()), ("key", pa.string()),
         ("image", pa.string()), ("caption", pa.string()), ("split", pa.string()), ("abs_path", pa.string()),
         ("problem", pa.string()), ("late", pa.bool_()), ("auto", pa.bool_()))
_IMAGES = (("abs_path", pa.string()), ("image_hash", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
           ("nbytes", pa.int64()), ("problem", pa.string()))
PAIRS = "import_pairs"
"""The view of the good rows, as `Store.write_dataset` reads a relation."""


def _sql_type(t: pa.DataType) -> str:
    return {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.bool_(): "BOOLEAN"}.get(t, "VARCHAR")


def storable(value: Any) -> str | None:
    """A cell as DuckDB text: None stays None; text with lone surrogates (bytes that were not UTF-8) is written
    with backslash escapes, as the problem report writes it."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_MIXED_KEYS = ("a row without a pair_id is keyed by its number among the rows; give every row a pair_id, "
               "or none")


def _repeated_key(key: str, first: str, auto: bool, first_auto: bool) -> str:
    """Why a row whose key an earlier row (at `first`) has is refused. `auto`: the row has no pair id of its own,
    so its key is its number among the rows (`first_auto`: the earlier one has none); two such rows never clash."""
    if auto:
        return f"no pair_id, and its number {key} is the pair_id at {first} ({_MIXED_KEYS})"
    if first_auto:
        return f"pair_id {key!r} is the key of the row at {first}, which has no pair_id ({_MIXED_KEYS})"
    return f"duplicate pair_id {key!r} (first at {first})"


class Staging:
    """One import's temporary tables on `store`'s cursor for this thread; dropped on leaving the `with`."""

    def __init__(self, store) -> None:
        self.cur = store.cursor()
        self._rows: dict[str, list[Any]] = {name: [] for name, _ in _ROWS}
        self._images: dict[str, list[Any]] = {name: [] for name, _ in _IMAGES}

    def __enter__(self) -> "Staging":
        for table, columns in (("import_rows", _ROWS), ("import_images", _IMAGES)):
            cols = ", ".join(f'"{name}" {_sql_type(t)}' for name, t in columns)
            self.cur.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({cols})")
        return self

    def __exit__(self, *exc) -> None:
        self.cur.execute(f"DROP VIEW IF EXISTS {PAIRS}")
        for table in ("import_rows", "import_images"):
            self.cur.execute(f"DROP TABLE IF EXISTS {table}")

    # ------------------------------------------------------------------ filling
    def add_row(self, row_index: int, file: str, place: str, key: str | None, image: Any, caption: Any, split: str,
                abs_path: str | None, problem: str | None, late: bool = False) -> None:
        """One row read: a good one with its resolved image (`image` relative to the root, `abs_path` the file to
        check), or a refused one with its `problem` and its raw image and caption (for the report). A row whose
        `key` is None (the file gives it no pair id) is keyed by its number among the import's rows, `"1"`,
        `"2"`, …. `late`: the problem is the caption's or the path's, which a repeated pair id takes precedence
        over (the reader's own problems come first)."""
        auto = key is None
        values = (row_index, file, place, str(row_index + 1) if auto else key, image, caption, split, abs_path,
                  problem, late, auto)
        for name, value in zip(self._rows, values):
            self._rows[name].append(value if name in ("row_index", "late", "auto") else storable(value))
        if len(self._rows["row_index"]) >= _BATCH:
            self._flush("import_rows", self._rows, _ROWS)

    def add_images(self, paths: list[str], results: list[ImageInfo | str]) -> None:
        """A batch of checked images (`check_images`' `checked`): their hash and size, or why each is refused."""
        for path, result in zip(paths, results):
            bad = isinstance(result, str)
            values = (path, None, None, None, None, result) if bad else (
                path, result.hash, result.width, result.height, result.nbytes, None)
            for name, value in zip(self._images, values):
                self._images[name].append(storable(value) if isinstance(value, str) else value)
        if len(self._images["abs_path"]) >= _BATCH:
            self._flush("import_images", self._images, _IMAGES)

    def _flush(self, table: str, columns: dict[str, list[Any]], schema: tuple) -> None:
        if not next(iter(columns.values())):
            return
        batch = pa.table({name: pa.array(columns[name], type=t) for name, t in schema})
        self.cur.register("import_batch", batch)
        try:
            self.cur.execute(f"INSERT INTO {table} SELECT * FROM import_batch")
        finally:
            self.cur.unregister("import_batch")
        for values in columns.values():
            values.clear()

    # ------------------------------------------------------------------ the checks that need every row
    def finish(self, several_files: bool) -> None:
        """After the last row and image: refuse a row whose pair id an earlier row has (naming where it first
        was; when either of the two has no pair id of its own but its number, saying so), then a good row whose
        image failed its check; make the view of the good rows."""
        self._flush("import_rows", self._rows, _ROWS)
        self._flush("import_images", self._images, _IMAGES)
        first = ("regexp_extract(f.file, '[^/]*$') || ' ' || f.place" if several_files else "f.place")
        repeated = self.cur.execute(f"""
            WITH f AS (SELECT key, arg_min(file, row_index) AS file, arg_min(place, row_index) AS place,
                              arg_min(auto, row_index) AS auto, min(row_index) AS row_index
                       FROM import_rows GROUP BY key HAVING count(*) > 1)
            SELECT r.row_index, r.key, {first}, r.auto, f.auto FROM import_rows r JOIN f USING (key)
            WHERE (r.problem IS NULL OR r.late) AND r.row_index > f.row_index""").fetchall()
        if repeated:
            self.cur.register("import_repeated", pa.table({
                "row_index": pa.array([r[0] for r in repeated], pa.int64()),
                "problem": pa.array([storable(_repeated_key(*r[1:])) for r in repeated])}))
            try:
                self.cur.execute("""UPDATE import_rows SET problem = d.problem FROM import_repeated d
                                    WHERE import_rows.row_index = d.row_index""")
            finally:
                self.cur.unregister("import_repeated")
        self.cur.execute("""CREATE OR REPLACE TEMP TABLE import_images AS SELECT * FROM import_images
                            QUALIFY row_number() OVER (PARTITION BY abs_path) = 1""")
        self.cur.execute("""UPDATE import_rows SET problem = i.problem FROM import_images i
                            WHERE import_rows.abs_path = i.abs_path AND import_rows.problem IS NULL
                                  AND i.problem IS NOT NULL""")
        self.cur.execute(f"""
            CREATE OR REPLACE TEMP VIEW {PAIRS} AS
            SELECT r.image AS image_path, i.image_hash, i.width, i.height, i.nbytes, r.caption, r.split, r.key,
                   NULL::BOOLEAN AS is_noisy, NULL::VARCHAR AS original_caption, r.row_index AS row_order
            FROM import_rows r JOIN import_images i USING (abs_path) WHERE r.problem IS NULL""")

    # ------------------------------------------------------------------ reading back
    def counts(self) -> tuple[int, int]:
        """(rows read, rows refused)."""
        rows, bad = self.cur.execute("SELECT count(*), count(problem) FROM import_rows").fetchall()[0]
        return int(rows), int(bad)

    def problems(self, limit: int | None = None) -> Iterator[tuple[Problem, Any, Any]]:
        """The refused rows in file order, with the image and caption the report lists, a batch at a time."""
        sql = ("SELECT file, place, problem, image, caption FROM import_rows WHERE problem IS NOT NULL "
               "ORDER BY row_index" + ("" if limit is None else f" LIMIT {int(limit)}"))
        result = self.cur.execute(sql)
        while batch := result.fetchmany(_BATCH):
            for file, place, reason, image, caption in batch:
                yield Problem(file, place, reason), image, caption

