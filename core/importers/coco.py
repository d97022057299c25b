"""MS-COCO captions JSON: `images[]` (`id`, `file_name`) and `annotations[]` (`id`, `image_id`, `caption`).

The split comes from `--split`, else from the image entry's `split` field (Concord's exports write it),
else from the image's file name (`COCO_train2014_…`, `val2017/…`), else from the JSON file's name
(`captions_val2014.json`), else `train`; a name gives a split only as a word of its own (`protest_01.jpg` and
`latest.json` give none). Pair keys are annotation ids (or their `pair_id` field, which Concord's exports write
when a key is not a number). Ids are integers or text, and an image's is its own (a repeated one would give its
captions to another image: the file is refused). Image ids, under the image's stored path, and the file's
`info`/`licenses` go into the dataset info for a faithful re-export.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.errors import ConcordError
from core.importers.source import Source, SourceRow, split_name
from core.importers.validation import normalise_path

_SPLIT = re.compile(r"(?<![a-z])(train|val(?:id(?:ation)?)?|test)(?:\d{4})?(?![a-z])", re.IGNORECASE)
"""A split named in a file name, as a word of its own: not preceded or followed by a letter (`valid` and
`validation` are `val`)."""


def is_coco(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("images"), list) and isinstance(obj.get("annotations"), list)


def _split_of(name: str) -> str | None:
    m = _SPLIT.search(name)
    word = m.group(1).lower() if m else None
    return "val" if word and word.startswith("val") else word


def _is_id(value: Any) -> bool:
    """Whether `value` can be a COCO id: an integer (not a boolean) or text, as JSON writes them."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def read_coco(path: Path, obj: Any, split: str | None) -> Source:
    """Rows of a parsed COCO captions file, one per annotation, in annotation order."""
    if not is_coco(obj):
        raise ConcordError(f"{path}: not an MS-COCO captions file (needs 'images' and 'annotations' lists)")
    file_split = _split_of(path.name) or "train"
    images: dict[Any, dict[str, Any]] = {}
    places: dict[Any, int] = {}
    for i, img in enumerate(obj["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise ConcordError(f"{path} images[{i}]: an image entry needs an 'id'")
        image_id = img["id"]
        if not _is_id(image_id):
            raise ConcordError(f"{path} images[{i}]: image id {image_id!r} is not an integer or text")
        if image_id in images and images[image_id] != img:
            raise ConcordError(f"{path}: duplicate image id {image_id!r} (images[{places[image_id]}] and images[{i}]); "
                               "each image needs an id of its own")
        images.setdefault(image_id, img)
        places.setdefault(image_id, i)
    rows: list[SourceRow] = []
    for i, ann in enumerate(obj["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            rows.append(SourceRow(where, None, None, file_split, problem="an annotation must be a JSON object"))
            continue
        image_id, ann_id = ann.get("image_id"), ann.get("id")
        bad = next((f for f in ("image_id", "id") if ann.get(f) is not None and not _is_id(ann[f])), None)
        if bad:
            rows.append(SourceRow(where, None, ann.get("caption"), file_split,
                                  problem=f"{bad} {ann[bad]!r} is not an integer or text"))
            continue
        img = images.get(image_id)
        if img is None:
            rows.append(SourceRow(where, None, ann.get("caption"), file_split,
                                  problem=f"image_id {image_id!r} is not among the images"))
            continue
        name = img.get("file_name")
        own = split_name(img["split"]) if isinstance(img.get("split"), str) else None
        row_split = split or own or (_split_of(name) if isinstance(name, str) else None) or file_split
        key = ann.get("pair_id") if isinstance(ann.get("pair_id"), str) else None
        key = key or (str(ann_id) if ann_id is not None else None)
        rows.append(SourceRow(where, name, ann.get("caption"), row_split, key,
                              problem=None if isinstance(name, str) else f"image {img['id']!r} has no file_name"))
    if not rows:
        raise ConcordError(f"{path}: no annotations (the file holds no captions)")
    image_ids = {normalise_path(img["file_name"]): img["id"] for img in images.values()
                 if isinstance(img.get("file_name"), str) and img["file_name"].strip()}
    info = {"coco": {"image_ids": image_ids, "info": obj.get("info"), "licenses": obj.get("licenses")}}
    return Source("coco", rows, len(rows), info)
