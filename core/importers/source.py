"""What every format reader produces: the rows of a data file, each located in it, before any check.

Readers keep a row even when it is broken (its `problem` says why) so problems are reported in file
order; problems that spoil the whole file (unreadable, empty, malformed JSON, missing columns) raise
`ConcordError` at once instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConcordError


@dataclass(frozen=True)
class SourceRow:
    """One image–caption row as written in the file; `where` locates it (`line 7`, `row 3`, …)."""

    where: str
    image: Any
    caption: Any
    split: str
    key: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Source:
    """A parsed data file: its format, rows, and what a faithful re-export needs (`info`)."""

    format: str
    rows: list[SourceRow]
    info: dict[str, Any] = field(default_factory=dict)


def read_text(path: Path) -> str:
    """The file as text. Bytes that are not UTF-8 are kept as lone surrogates (`surrogateescape`) so the
    row holding them can be named and refused; a leading byte-order mark is dropped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConcordError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not data.strip():
        raise ConcordError(f"{path}: the file is empty")
    text = data.decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def load_json(path: Path) -> Any:
    """Parse a whole JSON file; malformed JSON is refused with its line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConcordError(f"{path} line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg})") from None


def as_text(value: Any) -> Any:
    """Binary cells (Parquet `binary`, …) as text with undecodable bytes kept as surrogates."""
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


def optional_text(value: Any) -> str | None:
    """A cell as a string, or None when it is missing or blank."""
    value = as_text(value)
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None
