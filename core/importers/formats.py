"""Choosing the reader: `auto` decides by extension, and for `.json` by content (COCO or Karpathy)."""
from __future__ import annotations

from pathlib import Path

from core.errors import ConcordError
from core.importers.coco import is_coco, read_coco
from core.importers.karpathy import is_karpathy, read_karpathy
from core.importers.source import Source, load_json, split_name
from core.importers.tabular import ColumnNames, read_csv, read_jsonl, read_parquet

FORMATS = ("auto", "csv", "jsonl", "parquet", "coco", "karpathy")
_BY_SUFFIX = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
              ".pq": "parquet"}


def read_source(path: Path, fmt: str, columns: ColumnNames, split: str | None) -> Source:
    """Parse `path` as `fmt` (or the detected format) into rows; `split` (`--split`) is the split of rows whose
    file names none (COCO: of every row, over the guess from file names)."""
    if fmt not in FORMATS:
        raise ConcordError(f"unknown format {fmt!r} (choose one of {', '.join(FORMATS)})")
    if fmt == "auto":
        fmt = _BY_SUFFIX.get(path.suffix.lower(), "")
        if not fmt and path.suffix.lower() != ".json":
            raise ConcordError(f"{path}: cannot tell the format from the extension {path.suffix!r}; "
                               f"pass --format ({', '.join(FORMATS[1:])})")
    split = split_name(split)
    default_split = split or "train"
    if fmt == "csv":
        return read_csv(path, columns, default_split)
    if fmt == "jsonl":
        return read_jsonl(path, columns, default_split)
    if fmt == "parquet":
        return read_parquet(path, columns, default_split)
    obj = load_json(path)
    if fmt == "coco" or (not fmt and is_coco(obj)):
        return read_coco(path, obj, split)
    if fmt == "karpathy" or (not fmt and is_karpathy(obj)):
        return read_karpathy(path, obj, split)
    raise ConcordError(f"{path}: a JSON file that is neither MS-COCO captions ('images' + 'annotations') nor a "
                       "Karpathy split ('images' with 'sentences'); for one object per line use .jsonl or "
                       "--format jsonl")
