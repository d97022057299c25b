"""The Karpathy split JSON (Flickr30K, MS-COCO): `images[]` with `filename`, optional `filepath`,
`split` (`restval` counts as `train`; an image without one is in `--split`'s split, else in `train`) and
`sentences[].raw`. Pair keys are `sentid`s (or a sentence's `pair_id`, which Concord's exports write when a
key is not a number); the per-image ids and original split go into the dataset info, under the image's stored
path, for a faithful re-export."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ConcordError
from core.importers.source import Source, SourceRow, split_name
from core.importers.validation import normalise_path

_KEPT_FIELDS = ("imgid", "cocoid", "filepath", "filename", "split")


def is_karpathy(obj: Any) -> bool:
    """An `images` list whose first entry has `sentences`, or an empty one (a Concord export of no pairs)."""
    images = obj.get("images") if isinstance(obj, dict) else None
    return isinstance(images, list) and (not images or isinstance(images[0], dict) and "sentences" in images[0])


def read_karpathy(path: Path, obj: Any, split: str | None = None) -> Source:
    """Rows of a parsed Karpathy file, one per sentence, image by image; `split` is that of images giving none."""
    if not is_karpathy(obj):
        raise ConcordError(f"{path}: not a Karpathy split file (needs 'images' with 'sentences')")
    rows: list[SourceRow] = []
    kept: dict[str, dict[str, Any]] = {}
    for i, img in enumerate(obj["images"]):
        if not isinstance(img, dict):
            rows.append(SourceRow(f"images[{i}]", None, None, split or "train",
                                  problem="an image entry must be an object"))
            continue
        filename, filepath = img.get("filename"), img.get("filepath")
        image = f"{filepath}/{filename}" if filepath and isinstance(filename, str) else filename
        raw_split = split_name(img.get("split")) or split or "train"
        image_split = "train" if raw_split == "restval" else raw_split
        if isinstance(image, str) and image.strip():
            kept[normalise_path(image)] = {k: img[k] for k in _KEPT_FIELDS if k in img}
        sentences = img.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            rows.append(SourceRow(f"images[{i}]", image, None, image_split, problem="image has no sentences"))
            continue
        for j, sent in enumerate(sentences):
            where = f"images[{i}].sentences[{j}]"
            if not isinstance(sent, dict):
                rows.append(SourceRow(where, image, None, image_split, problem="a sentence must be a JSON object"))
                continue
            key = sent.get("pair_id") if isinstance(sent.get("pair_id"), str) else None  # written by exports
            key = key or (str(sent["sentid"]) if sent.get("sentid") is not None else None)
            rows.append(SourceRow(where, image, sent.get("raw"), image_split, key,
                                  problem=None if isinstance(filename, str) else "image has no filename"))
    if not rows:
        raise ConcordError(f"{path}: no images (the file holds no captions)")
    return Source("karpathy", rows, len(rows), {"karpathy": {"dataset": obj.get("dataset"), "images": kept}})
