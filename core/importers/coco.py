"""MS-COCO captions JSON: `images[]` (`id`, `file_name`) and `annotations[]` (`id`, `image_id`, `caption`).

The split comes from `--split`, else from the image entry's `split` field (Concord's exports write it),
else from the image's file name (`COCO_train2014_…`, `val2017/…`), else from the JSON file's name
(`captions_val2014.json`), else `train`. Pair keys are annotation ids (or their `pair_id` field, which
Concord's exports write when a key is not a number);
image ids and the file's `info`/`licenses` go into the dataset info for a faithful re-export.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.errors import ConcordError
from core.importers.source import Source, SourceRow

_SPLIT = re.compile(r"(train|val|test)(?:\d{4})?", re.IGNORECASE)


def is_coco(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("images"), list) and isinstance(obj.get("annotations"), list)


def _split_of(name: str) -> str | None:
    m = _SPLIT.search(name)
    return m.group(1).lower() if m else None


def read_coco(path: Path, obj: Any, split: str | None) -> Source:
    """Rows of a parsed COCO captions file, one per annotation, in annotation order."""
    if not is_coco(obj):
        raise ConcordError(f"{path}: not an MS-COCO captions file (needs 'images' and 'annotations' lists)")
    file_split = _split_of(path.name) or "train"
    images: dict[Any, dict[str, Any]] = {}
    for i, img in enumerate(obj["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise ConcordError(f"{path} images[{i}]: an image entry needs an 'id'")
        images[img["id"]] = img
    rows: list[SourceRow] = []
    for i, ann in enumerate(obj["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            rows.append(SourceRow(where, None, None, file_split, problem="an annotation must be a JSON object"))
            continue
        img = images.get(ann.get("image_id"))
        if img is None:
            rows.append(SourceRow(where, None, ann.get("caption"), file_split,
                                  problem=f"image_id {ann.get('image_id')!r} is not among the images"))
            continue
        name = img.get("file_name")
        own = img.get("split") if isinstance(img.get("split"), str) and img["split"].strip() else None
        row_split = split or own or (_split_of(name) if isinstance(name, str) else None) or file_split
        key = ann.get("pair_id") if isinstance(ann.get("pair_id"), str) else None
        key = key or (str(ann["id"]) if ann.get("id") is not None else None)
        rows.append(SourceRow(where, name, ann.get("caption"), row_split, key,
                              problem=None if isinstance(name, str) else f"image {img['id']!r} has no file_name"))
    if not rows:
        raise ConcordError(f"{path}: no annotations (the file holds no captions)")
    image_ids = {img["file_name"]: img["id"] for img in images.values() if isinstance(img.get("file_name"), str)}
    info = {"coco": {"image_ids": image_ids, "info": obj.get("info"), "licenses": obj.get("licenses")}}
    return Source("coco", rows, len(rows), info)
