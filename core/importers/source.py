"""What every format reader produces: the rows of a data file, each located in it, before any check.

Readers keep a row even when it is broken (its `problem` says why) so problems are reported in file
order; problems that spoil the whole file (unreadable, empty, malformed JSON, missing columns) raise
`ConcordError` at once instead.
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

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
    """A data file being read: its format; its rows, in file order, read once and lazily (CSV, JSON Lines and
    Parquet are streamed, so an import holds a batch of rows, not the file); how many rows it expects, for the
    progress (exact for JSON and Parquet, the file's line count for CSV and JSON Lines); and what a faithful
    re-export needs (`info`, complete once the rows are read: JSON Lines learns its columns row by row)."""

    format: str
    rows: Iterable[SourceRow]
    expected: int
    info: dict[str, Any] = field(default_factory=dict)


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_CHUNK = 1 << 20


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


def _decoded(path: Path) -> Iterator[str]:
    """The file as text, a chunk at a time: UTF-8, or UTF-16 / UTF-32 with a byte-order mark, or UTF-16 without
    one; the mark is dropped. Bytes that are not UTF-8 (a Latin-1 file, say) are kept as lone surrogates
    (`surrogateescape`) so each row holding them is named and refused; text that is not valid in its UTF-16 /
    UTF-32 encoding is refused with the byte where it breaks."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConcordError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with fh:
        head = fh.read(_CHUNK)
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                head, offset = head[len(bom):], len(bom)
                break
        else:
            encoding, offset = _bomless_utf16(head), 0
        strict = encoding is not None and encoding != "utf-8"
        encoding = encoding or "utf-8"
        decoder = codecs.getincrementaldecoder(encoding)("strict" if strict else "surrogateescape")
        data = head
        while True:
            ahead = fh.read(_CHUNK)
            final = not ahead
            pending = len(decoder.getstate()[0])
            try:
                yield decoder.decode(data, final=final)
            except UnicodeDecodeError as exc:
                raise ConcordError(f"{path}: not valid {encoding.upper()} text (byte {offset - pending + exc.start}: "
                                   f"{exc.reason}); save the file as UTF-8") from None
            if final:
                return
            offset += len(data)
            data = ahead


def read_text(path: Path) -> str:
    """The whole file as text (`_decoded`), for the whole-file formats (COCO, Karpathy); an empty file is refused."""
    text = "".join(_decoded(path))
    if not text.strip():
        raise ConcordError(f"{path}: the file is empty")
    return text


_LINE_END = {"any": re.compile(r"\r\n|\r|\n"), "lf": re.compile(r"\n")}


def read_lines(path: Path, ends: str) -> Iterator[str]:
    """The file's lines with their ends (`_decoded`), streamed. `ends="any"` ends a line at CR LF, CR or LF (what
    the csv module expects), `"lf"` at LF only. A file of nothing but white space is refused as empty before the
    first line."""
    split, held, seen_text = _LINE_END[ends], "", False
    blank: list[str] = []

    def emit(line: str) -> Iterator[str]:
        nonlocal seen_text
        if seen_text:
            yield line
        elif line.strip():
            seen_text = True
            yield from blank
            blank.clear()
            yield line
        else:
            blank.append(line)

    for chunk in _decoded(path):
        text, start = held + chunk, 0
        for m in split.finditer(text):
            if m.end() == len(text) and text.endswith("\r") and ends == "any":
                break                            # a CR at the chunk's end may be half of a CR LF
            yield from emit(text[start:m.end()])
            start = m.end()
        held = text[start:]
    if held:
        yield from emit(held)
    if not seen_text:
        raise ConcordError(f"{path}: the file is empty")


def count_lines(path: Path) -> int:
    """How many line feeds the file holds (a row count's estimate for the progress), read a chunk at a time."""
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(_CHUNK), b""))
    except OSError:
        return 0


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


def split_name(value: Any) -> str | None:
    """A split as written in a file or given with `--split`, without surrounding white space (`" val"` is
    `val`), or None when it is missing or blank."""
    text = optional_text(value)
    return None if text is None else text.strip()
