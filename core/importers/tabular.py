"""CSV, JSON Lines and Parquet: one row per pair, with an image path and a caption column (names
configurable), and optionally a split and a pair id; other columns are ignored. All three are streamed: a
header or schema problem is refused when the file is opened, a bad row is yielded in its place."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ConcordError
from core.importers.source import (Source, SourceRow, as_text, count_lines, optional_text, read_lines,
                                   split_name)


@dataclass(frozen=True)
class ColumnNames:
    """Which columns hold what. `image` and `caption` are required; `split` and `id` are used when present."""

    image: str = "image"
    caption: str = "caption"
    split: str = "split"
    id: str = "pair_id"


_FLAGS = {"image": "--image-column", "caption": "--caption-column"}


def _require(path: Path, present: list[str], columns: ColumnNames) -> None:
    for role in ("image", "caption"):
        name = getattr(columns, role)
        if name not in present:
            raise ConcordError(f"{path}: missing column {name!r} (the file has: {', '.join(map(repr, present))}); "
                               f"name the {role} column with {_FLAGS[role]}")


def _row(where: str, get: Callable[[str], Any], columns: ColumnNames, default_split: str) -> SourceRow:
    return SourceRow(where=where, image=as_text(get(columns.image)), caption=as_text(get(columns.caption)),
                     split=split_name(get(columns.split)) or default_split, key=optional_text(get(columns.id)))


def _info(columns: ColumnNames, present: list[str], **extra: Any) -> dict[str, Any]:
    used = {role: name for role, name in asdict(columns).items() if name in present}
    return {"columns": used, **extra}


class _Lines:
    """The lines handed to `csv.reader`, noting when they run out: the reader asks for a line past the last one
    only while a quoted field is open, so a row read when they ran out opens a quote that is never closed."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines, self.ended = lines, False

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        try:
            return next(self.lines)
        except StopIteration:
            self.ended = True
            raise


def _unclosed_quote(path: Path, line: int, what: str) -> ConcordError:
    return ConcordError(f"{path} line {line}: {what} opens a quote (\") that is never closed, so the rest of the "
                        "file would be read as one field; close the quote (a quote inside a quoted field is "
                        "written twice: \"\")")


def read_csv(path: Path, columns: ColumnNames, default_split: str) -> Source:
    """A CSV file (tab-separated when it ends in `.tsv`) with a header row, streamed; rows are named by line.
    A row with more fields than the header is refused (its caption holds an unquoted delimiter: keeping the
    first part would cut it short). A quote that is never closed refuses the whole file, and so does a quoted
    field that runs over lines past the csv module's size limit (a quote closed much later, or never): the rows
    after it cannot be told apart."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    lines = _Lines(read_lines(path, "any"))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise ConcordError(f"{path} line 1: malformed CSV header ({exc})") from None
    if lines.ended:
        raise _unclosed_quote(path, 1, "the header")
    _require(path, header, columns)
    index = {name: i for i, name in reversed(list(enumerate(header)))}
    needed = max(index[columns.image], index[columns.caption])
    hint = f" (quote a caption that holds a {'comma' if delimiter == ',' else 'tab'})"

    def rows() -> Iterator[SourceRow]:
        count = 0
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if reader.line_num > line and "field larger than field limit" in str(exc):
                    raise ConcordError(f"{path} line {line}: a quoted field of the row runs over lines {line}–"
                                       f"{reader.line_num} past {csv.field_size_limit():,} characters (a quote "
                                       "that is never closed?); the rows after it cannot be told apart") from None
                count += 1
                yield SourceRow(f"line {line}", None, None, default_split, problem=f"malformed CSV ({exc})")
                continue
            if lines.ended:
                raise _unclosed_quote(path, line, "the row")
            if not cells:
                continue
            count += 1
            where = f"line {line}"
            if len(cells) <= needed or len(cells) > len(header):
                yield SourceRow(where, None, None, default_split,
                                problem=f"row has {len(cells)} fields, the header has {len(header)}"
                                        + (hint if len(cells) > len(header) else ""))
                continue
            get = lambda col, c=cells: c[index[col]] if col in index and index[col] < len(c) else None  # noqa: E731
            yield _row(where, get, columns, default_split)
        if not count:
            raise ConcordError(f"{path}: no data rows (only a header)")

    return Source("csv", rows(), max(count_lines(path) - 1, 1), _info(columns, header, delimiter=delimiter))


def read_jsonl(path: Path, columns: ColumnNames, default_split: str) -> Source:
    """JSON Lines, streamed: one object per line; a line that is not a JSON object is a bad row, not a bad file.
    The columns it names (`info`) are the union of every object's fields, known once the rows are read."""
    info = _info(columns, [])

    def rows() -> Iterator[SourceRow]:
        present: dict[str, None] = {}
        count = good = 0
        for number, line in enumerate(read_lines(path, "lf"), 1):
            line = line.removesuffix("\n").removesuffix("\r")
            if not line.strip():
                continue
            count += 1
            where = f"line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceRow(where, None, None, default_split,
                                problem=f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield SourceRow(where, None, None, default_split, problem=f"not a JSON object ({type(obj).__name__})")
                continue
            present.update(dict.fromkeys(obj))
            lacking = [name for name in (columns.image, columns.caption) if name not in obj]
            if lacking:
                yield SourceRow(where, None, None, default_split, problem=f"no {lacking[0]!r} field")
                continue
            good += 1
            yield _row(where, obj.get, columns, default_split)
        if not count:
            raise ConcordError(f"{path}: the file is empty")
        if good:
            _require(path, list(present), columns)
        info.update(_info(columns, list(present)))

    return Source("jsonl", rows(), max(count_lines(path), 1), info)


_PARQUET_BATCH = 8192


def read_parquet(path: Path, columns: ColumnNames, default_split: str) -> Source:
    """A Parquet file, streamed a row group's batch at a time; rows are named by their 1-based number."""
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConcordError(f"{path}: not a readable Parquet file ({exc})") from None
    present = file.schema_arrow.names
    _require(path, present, columns)
    total = file.metadata.num_rows
    if total == 0:
        raise ConcordError(f"{path}: the file is empty (no rows)")
    wanted = [c for c in dict.fromkeys((columns.image, columns.caption, columns.split, columns.id)) if c in present]

    def rows() -> Iterator[SourceRow]:
        number = 0
        try:
            for batch in file.iter_batches(batch_size=_PARQUET_BATCH, columns=wanted):
                data = {c: batch.column(c).to_pylist() for c in wanted}
                for i in range(batch.num_rows):
                    number += 1
                    yield _row(f"row {number}", lambda col, i=i: data[col][i] if col in data else None, columns,
                               default_split)
        except (pa.ArrowException, OSError) as exc:
            raise ConcordError(f"{path} after row {number}: not a readable Parquet file ({exc})") from None

    return Source("parquet", rows(), total, _info(columns, present))
