"""Exporting the cleaned dataset: rejected pairs dropped, fixes applied, per-pair scores attached.

`plan_export` counts what would be written without touching the disk; the Export page previews it and
`write_export` writes exactly it. Rows never gather in Python: the database counts them, writes csv, jsonl and
parquet data files itself (DuckDB's COPY) and hands out the images to copy a batch at a time, so an export's
memory stays bounded whatever the dataset's size (COCO and Karpathy files, single JSON documents, are built
in memory). Writing is atomic: everything goes into a hidden
temporary folder beside the destination (`.NAME.concord-tmp-<pid>`) that is renamed at the end, so a
crash never leaves a half export; `clean_stale_exports` removes the temporary folders of processes that
died (called at the start of every export, and meant for the app's start too).

An export folder is a dataset: `python -m core import DIR` (or of its data file) brings it back with
no flags. It holds the data file(s) (`pairs.csv|jsonl|parquet`, `captions_<split>.json` for COCO,
`dataset.json` for Karpathy), `manifest.json` and `decisions.csv` (the full decision log). With
`--images copy` the kept images sit beside the data file under their original relative paths, and the
data file names them relative to its own folder, so a round trip keeps the paths as they were (only
when an image's first path part would clash with the export's own files do all images go under
`images/`, named so in the data file). With `--images paths` no image is copied: the data file keeps
the paths relative to the original root, which the manifest's `images_root` names and the importer uses.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import core
from core.errors import ConcordError
from core.jobs import pid_alive
from core.progress import Progress
from core.store import Dataset, ExportSnapshot, Run, Store

FORMATS = ("csv", "jsonl", "parquet", "coco", "karpathy")
MANIFEST = "manifest.json"
DECISIONS = "decisions.csv"
IMAGE_MODES = ("copy", "paths")
TABULAR_COLUMNS = ["image", "caption", "split", "pair_id", "clean_prob", "weight", "decision"]
ZIP_LIMIT_BYTES = 200 * 1024 * 1024
_TEMP = re.compile(r"^\..+\.concord-(tmp|old)-(\d+)$")


@dataclass(frozen=True)
class ExportOptions:
    """What to export. `format=None`: the dataset's own format (csv for generated ones);
    `run_id=None`: the latest finished run (or none: scores left empty)."""

    format: str | None = None
    run_id: int | None = None
    drop_flagged_unreviewed: bool = False
    images: str = "copy"
    overwrite: bool = False


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes, counted in the database (its rows are read as they are written): counts, the
    distinct images to copy and their size, and `image_prefix`, where copied images go ("" or "images/")."""

    dataset: Dataset
    run: Run | None
    format: str
    options: ExportOptions
    counts: dict[str, int]
    images: int
    image_bytes: int
    image_prefix: str

    def source(self) -> tuple[int, int | None, bool]:
        """What the store's export reads take: dataset id, run id, drop flag."""
        return self.dataset.id, None if self.run is None else self.run.id, self.options.drop_flagged_unreviewed


def default_format(dataset: Dataset) -> str:
    """The format a dataset came in, or csv for generated ones (demo, noise copies)."""
    return dataset.source_format if dataset.source_format in FORMATS else "csv"


def plan_export(store: Store, name: str, options: ExportOptions = ExportOptions()) -> ExportPlan:
    """Which pairs an export of dataset `name` keeps, with which caption, and the counts (nothing written)."""
    dataset = store.dataset(name)
    fmt = options.format or default_format(dataset)
    if fmt not in FORMATS:
        raise ConcordError(f"unknown export format {fmt!r} (choose one of {', '.join(FORMATS)})")
    if options.images not in IMAGE_MODES:
        raise ConcordError(f"unknown images mode {options.images!r} (choose one of {', '.join(IMAGE_MODES)})")
    if options.run_id is not None:
        run = store.run(options.run_id)
        if run.dataset_id != dataset.id:
            raise ConcordError(f"run {run.id} belongs to another dataset, not {name!r}")
        if run.state != "finished":
            raise ConcordError(f"run {run.id} is {run.state}, so it scored no pair; export with a finished run's "
                               "scores (or none)")
    else:
        run = store.latest_finished_run(dataset.id)
    if options.drop_flagged_unreviewed and run is None:
        raise ConcordError(f"dataset {name!r} has no finished run, so no pair is flagged; "
                           "score it first or export without --drop-flagged-unreviewed")
    summary = store.export_summary(dataset.id, None if run is None else run.id, options.drop_flagged_unreviewed)
    prefix = ""
    if options.images == "copy" and summary["first_parts"] & _own_files(fmt, store.split_names(dataset.id)):
        prefix = "images/"
    copied = options.images == "copy"
    return ExportPlan(dataset, run, fmt, options, summary["counts"], summary["images"] if copied else 0,
                      summary["image_bytes"] if copied else 0, prefix)


def _own_files(fmt: str, splits: list[str]) -> set[str]:
    """The names an export of `fmt` writes at its top level besides images (an image whose first path part is
    one of them goes under `images/`)."""
    if fmt == "coco":
        data = set(_coco_files(splits).values())
    else:
        data = {"dataset.json" if fmt == "karpathy" else f"pairs.{fmt}"}
    return data | {MANIFEST, DECISIONS}


def _coco_files(splits: list[str]) -> dict[str, str]:
    """The `captions_<split>.json` file of each split, its name made safe (a split such as `train/2014` or
    `..` names no folder) and unique; the split itself travels in each image entry's `split` field."""
    names: dict[str, str] = {}
    for split in sorted(splits):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", split).strip(".") or "split"
        name, n = f"captions_{stem}.json", 1
        while name in names.values():
            n += 1
            name = f"captions_{stem}-{n}.json"
        names[split] = name
    return names


def _is_number(key: str) -> bool:
    """Whether a pair key is a plain ASCII number (`str.isdigit` also takes '²', which `int` refuses)."""
    return key.isascii() and key.isdigit()


def _numeric_ids(keys: list[str]) -> list[int]:
    """An integer id per pair key, unique across the export: the key itself when it is a number not seen
    before, else the next free number (COCO annotation ids and Karpathy sentids must be integers)."""
    taken = {int(k) for k in keys if _is_number(k)}
    next_id = max(taken, default=0) + 1
    used: set[int] = set()
    ids = []
    for key in keys:
        if _is_number(key) and int(key) not in used:
            value = int(key)
        else:
            value, next_id = next_id, next_id + 1
        used.add(value)
        ids.append(value)
    return ids


# ------------------------------------------------------------------------------------------ writers
def _write_tabular(snap: ExportSnapshot, plan: ExportPlan, folder: Path) -> list[str]:
    name = f"pairs.{plan.format}"
    snap.copy_rows(plan.image_prefix, folder / name, plan.format, TABULAR_COLUMNS)
    return [name]


def _write_coco(snap: ExportSnapshot, plan: ExportPlan, folder: Path) -> list[str]:
    """One `captions_<split>.json` per split; image ids as imported when known; annotation ids are the
    pair keys when they are numbers (else a `pair_id` field keeps the key); each image entry names its
    `split`, so a re-import puts it back in it whatever its file name says."""
    source = plan.dataset.info.get("coco") or {}
    known_ids: dict[str, Any] = source.get("image_ids") or {}
    image_ids: dict[str, Any] = {}
    taken: set[Any] = set()
    next_id = max([v for v in known_ids.values() if isinstance(v, int)], default=0) + 1
    rows = snap.rows(plan.image_prefix)
    ann_ids = dict(zip(rows.index, _numeric_ids(list(rows["pair_id"]))))
    names = _coco_files(list(rows["split"].unique()))
    files = []
    for split, part in rows.groupby("split", sort=True):
        images, annotations, listed = [], [], set()
        for index, row in zip(part.index, part.itertuples(index=False)):
            known = known_ids.get(row.image_path)
            if row.image not in image_ids:
                if known is not None and known not in taken:    # two files of one import may share an id
                    image_ids[row.image] = known
                else:
                    image_ids[row.image], next_id = next_id, next_id + 1
                taken.add(image_ids[row.image])
            if row.image not in listed:
                listed.add(row.image)
                images.append({"id": image_ids[row.image], "file_name": row.image, "split": split})
            annotation = {"id": ann_ids[index], "image_id": image_ids[row.image], "caption": row.caption}
            if str(ann_ids[index]) != row.pair_id:
                annotation["pair_id"] = row.pair_id
            annotations.append(annotation)
        doc = {"info": source.get("info") or {"description": f"Concord export of {plan.dataset.name}"},
               "licenses": source.get("licenses") or [], "images": images, "annotations": annotations}
        name = names[split]
        (folder / name).write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        files.append(name)
    return files


def _write_karpathy(snap: ExportSnapshot, plan: ExportPlan, folder: Path) -> list[str]:
    """`dataset.json`: one image entry per image (in first-appearance order) with its sentences."""
    source = plan.dataset.info.get("karpathy") or {}
    kept_fields: dict[str, dict[str, Any]] = source.get("images") or {}
    images: dict[tuple[str, str], dict[str, Any]] = {}
    rows = snap.rows(plan.image_prefix)
    sentids = _numeric_ids(list(rows["pair_id"]))
    for sid, row in zip(sentids, rows.itertuples(index=False)):
        entry = images.get((row.image, row.split))
        if entry is None:
            path = PurePosixPath(row.image)
            original = kept_fields.get(row.image_path, {})
            entry = {k: v for k, v in original.items() if k in ("imgid", "cocoid")}
            if str(path.parent) != ".":
                entry["filepath"] = str(path.parent)
            restval = original.get("split") == "restval" and row.split == "train"
            entry |= {"filename": path.name, "imgid": entry.get("imgid", len(images)),
                      "split": "restval" if restval else row.split, "sentences": [], "sentids": []}
            images[(row.image, row.split)] = entry
        sentence = {"raw": row.caption, "tokens": re.findall(r"\w+", row.caption.lower()),
                    "imgid": entry["imgid"], "sentid": sid}
        if str(sid) != row.pair_id:
            sentence["pair_id"] = row.pair_id
        entry["sentences"].append(sentence)
        entry["sentids"].append(sid)
    doc = {"dataset": source.get("dataset") or plan.dataset.name, "images": list(images.values())}
    (folder / "dataset.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return ["dataset.json"]


_WRITERS = {"csv": _write_tabular, "jsonl": _write_tabular, "parquet": _write_tabular,
            "coco": _write_coco, "karpathy": _write_karpathy}


_COPY_BATCH = 2048


def _copy_images(snap: ExportSnapshot, plan: ExportPlan, images: int, folder: Path, progress: Progress) -> None:
    """Copy each kept image's bytes to where the data file names it (its `image` column), each target folder
    made once, the images read from the store a batch at a time. (`copy2` with a `mkdir` per image took 330 s at
    1M images; threads gained nothing here: the copies wait on the file system, not on Python.)"""
    root, out = str(plan.dataset.root), str(folder)
    progress.start("copying images", images)
    made: set[str] = set()
    for batch in snap.images(plan.image_prefix, _COPY_BATCH):
        progress.check()
        for rel, named in batch:
            target = os.path.join(out, named)
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            source = os.path.join(root, rel)
            try:
                shutil.copyfile(source, target)
            except (FileNotFoundError, IsADirectoryError):
                if os.path.isfile(source):
                    raise
                raise ConcordError(f"image {rel!r} of dataset {plan.dataset.name!r} is missing from {root}; "
                                   "restore it or export with --images paths") from None
            progress.advance()


def _manifest(plan: ExportPlan, files: list[str], counts: dict[str, int]) -> dict[str, Any]:
    run = plan.run
    return {
        "concord_version": core.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": plan.dataset.name, "id": plan.dataset.id, "source_format": plan.dataset.source_format,
                    "source_path": plan.dataset.source_path, "root": plan.dataset.root},
        "run": None if run is None else {"id": run.id, "method": run.method, "model": run.model,
                                         "state": run.state, "threshold": run.threshold},
        "model": None if run is None else run.model,
        "threshold": None if run is None else run.threshold,
        "format": plan.format,
        "files": files,
        "images": plan.options.images,
        "images_root": "." if plan.options.images == "copy" else plan.dataset.root,
        "counts": counts,
        "options": asdict(plan.options),
    }


# ------------------------------------------------------------------------------------------ atomicity
def clean_stale_exports(parent_dir: str | Path) -> list[Path]:
    """Remove the temporary folders in `parent_dir` left by exports whose process is gone; returns them."""
    parent = Path(parent_dir)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        m = _TEMP.match(entry.name)
        if m and entry.is_dir() and not pid_alive(int(m.group(2))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _held_data(store: Store, folder: Path) -> str | None:
    """What of the store's own data `folder` holds, which replacing it would delete: its database, a dataset's
    whole image folder, or any image of a dataset whose folder holds `folder` (None when nothing)."""
    if Path(store.path).resolve().is_relative_to(folder):
        return f"the database {store.path}"
    for name in store.dataset_names():
        dataset = store.dataset(name)
        root = Path(dataset.root).expanduser().resolve()
        if root.is_relative_to(folder):
            return f"the images of dataset {name!r} ({root})"
        if folder.is_relative_to(root):
            inside = folder.relative_to(root).as_posix() + "/"
            if store.has_images_under(dataset.id, inside):
                return f"images of dataset {name!r}"
    return None


def write_export(store: Store, plan: ExportPlan, out_dir: str | Path,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Write `plan` into `out_dir` atomically; returns the manifest. Refuses a non-empty `out_dir` unless the plan's
    options say `overwrite` and it holds an earlier export (never one holding the store's own data, `_held_data`)."""
    progress = progress or Progress()
    out = Path(out_dir).expanduser().resolve()    # a link to a folder: the export goes where it points
    if out.exists() and not out.is_dir():
        raise ConcordError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not plan.options.overwrite:
            raise ConcordError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        held = _held_data(store, out)
        if held:
            raise ConcordError(f"--overwrite would delete {out}, which holds {held}; choose another folder")
        from core.importers.locate import export_manifest     # only here: the importers are not light to load
        if export_manifest(out) is None:
            raise ConcordError(f"{out} is not empty and holds no Concord export ({MANIFEST}); --overwrite replaces "
                               "only an earlier export: choose an empty or new folder")
    tmp = out.parent / f".{out.name}.concord-tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.concord-old-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_exports(out.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else exc.strerror or str(exc)
        raise ConcordError(f"cannot create the export folder {out}: {reason}") from None
    try:
        with store.export_snapshot(*plan.source()) as snap:
            written = snap.summary()       # as written, whatever was decided since the plan
            if plan.options.images == "copy":
                _copy_images(snap, plan, written["images"], tmp, progress)
            progress.start("writing files", 3)
            files = _WRITERS[plan.format](snap, plan, tmp)
            progress.advance()
            store.copy_decision_log(plan.dataset.id, tmp / DECISIONS)
            progress.advance()
        manifest = _manifest(plan, files, written["counts"])
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        progress.advance()
        progress.check()
        if out.is_dir():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def export_dataset(store: Store, name: str, out_dir: str | Path, options: ExportOptions = ExportOptions(),
                   progress: Progress | None = None) -> dict[str, Any]:
    """Plan and write an export of dataset `name` into `out_dir`; returns the manifest."""
    return write_export(store, plan_export(store, name, options), out_dir, progress)


def folder_size(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def zip_folder(folder: str | Path) -> bytes:
    """An export folder as zip bytes (entries under the folder's name), for downloads of small exports."""
    root = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, (Path(root.name) / path.relative_to(root)).as_posix())
    return buffer.getvalue()
