"""What every format reader produces: the rows of a data file, each located in it, before any check.

Readers keep a row even when it is broken (its `problem` says why) so problems are reported in file
order; problems that spoil the whole file (unreadable, empty, malformed JSON, missing columns) raise
`ConcordError` at once instead.
"""
from __future__ import annotations

import codecs
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


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _bomless_utf16(data: bytes) -> str | None:
    """`utf-16-le`/`-be` when the bytes look like UTF-16 without a byte-order mark (mostly ASCII text
    has a zero in every other byte), else None."""
    sample = data[:4096]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if odd > 0.4 * half and even < 0.05 * half:
        return "utf-16-le"
    if even > 0.4 * half and odd < 0.05 * half:
        return "utf-16-be"
    return None


def read_text(path: Path) -> str:
    """The file as text: UTF-8, or UTF-16 / UTF-32 with a byte-order mark, or UTF-16 without one; the
    mark is dropped. Bytes that are not UTF-8 (a Latin-1 file, say) are kept as lone surrogates
    (`surrogateescape`) so each row holding them is named and refused. Line ends are left to the readers
    (CR LF and LF both end a row)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConcordError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            data = data[len(bom):]
            break
    else:
        encoding = _bomless_utf16(data)
    if encoding is not None and encoding != "utf-8":
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ConcordError(f"{path}: not valid {encoding.upper()} text (byte {exc.start}: {exc.reason}); "
                               "save the file as UTF-8") from None
    else:
        text = data.decode("utf-8", errors="surrogateescape")
    if not text.strip():
        raise ConcordError(f"{path}: the file is empty")
    return text


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
