"""What an import path names: the data file(s), the images root and a default dataset name.

A path is a data file or a folder. A folder is a Concord export (its `manifest.json` lists the data
files: COCO has one per split) or holds exactly one data file. Beside a Concord export's data file the
manifest also says where the images are (the export's own folder when they were copied, the original
root when only paths were written), so an export imports back with no flags.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConcordError
from core.export import MANIFEST

DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq", ".json")


@dataclass(frozen=True)
class Located:
    """The data files to read (in order), the folder image paths are relative to, and a default name."""

    files: tuple[Path, ...]
    root: Path
    name: str


def export_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the Concord export in `folder`, or None when `folder` holds none."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    is_export = isinstance(manifest, dict) and "concord_version" in manifest and isinstance(manifest.get("files"), list)
    return manifest if is_export else None


def _data_files(folder: Path, manifest: dict[str, Any] | None) -> list[Path]:
    if manifest is not None:
        if not manifest["files"]:  # a COCO export of no pairs has no split, so no data file
            raise ConcordError(f"{folder}: the export is empty (its {MANIFEST} lists no data files: it was "
                               "exported with no pairs)")
        return [folder / str(f) for f in manifest["files"]]
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and p.name != MANIFEST)
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise ConcordError(f"{folder} is a folder without a Concord export manifest and with {len(found)} data "
                           f"files ({listed}); give the data file (CSV, JSONL, Parquet, COCO or Karpathy JSON)")
    return found


def locate(path: Path, images_root: str | Path | None) -> Located:
    """The data files, images root and default dataset name for importing `path` (see the module docstring)."""
    if not path.exists():
        raise ConcordError(f"{path}: no such file")
    folder = path if path.is_dir() else path.parent
    manifest = export_manifest(folder)
    if manifest is not None and not path.is_dir() and path.name not in manifest["files"]:
        manifest = None  # another file beside an export: not the export's data
    files = _data_files(folder, manifest) if path.is_dir() else [path]
    for f in files:
        if not f.is_file():
            raise ConcordError(f"{f}: no such file (listed in {folder / MANIFEST})")
    if images_root is not None:
        root = Path(images_root).expanduser()
    elif manifest is not None:
        root = folder / str(manifest.get("images_root") or ".")
    else:
        root = folder
    if not root.is_dir():
        source = f" (the images root of the export in {folder})" if images_root is None and manifest else ""
        raise ConcordError(f"images root {root} is not a folder{source}")
    dataset = (manifest or {}).get("dataset")
    name = dataset["name"] if isinstance(dataset, dict) and isinstance(dataset.get("name"), str) \
        else (path.name if path.is_dir() else path.stem)
    return Located(tuple(files), root.resolve(), name)
