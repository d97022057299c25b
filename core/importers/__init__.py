"""Importing a dataset: read a data file (CSV / JSONL / Parquet / MS-COCO / Karpathy), check every row
(caption, image path within the root, image decodable in full), then write all good pairs in one
transaction — or refuse the whole import, changing nothing, when any row is bad and `skip_bad` is off.

`import_dataset` is the one entry point (CLI `python -m core import`, the Datasets page, round-trip
tests of exports). It takes a data file or a folder (a Concord export, or a folder with one data file;
see `core.importers.locate`), so an export imports back as it was with no flags.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from core import paths
from core.errors import ConcordError
from core.importers.formats import FORMATS, read_source
from core.importers.locate import locate
from core.importers.source import Source
from core.importers.staging import PAIRS, Staging
from core.importers.tabular import ColumnNames
from core.importers.validation import (PathMemo, Problem, caption_problem, check_images, normalise_caption,
                                      normalise_path, resolve_image_path)
from core.progress import Progress

__all__ = ["FORMATS", "ColumnNames", "ImportReport", "Problem", "import_dataset"]

_SHOWN_PROBLEMS = 5
SHOWN_SKIPPED = 100


@dataclass(frozen=True)
class ImportReport:
    """What an import did: counts (total and per split), the rows it skipped and where they are listed."""

    name: str
    dataset_id: int
    format: str
    source_path: str
    root: str
    rows: int
    images: int
    captions: int
    pairs: int
    splits: dict[str, dict[str, int]]
    merged_duplicates: int
    skipped: tuple[Problem, ...] = ()
    """The first `SHOWN_SKIPPED` rows skipped; the report at `report_path` lists all `skipped_count`."""
    skipped_count: int = 0
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("skipped", "skipped_count")} | {
            "skipped": self.skipped_count, "skipped_rows": [p.__dict__ for p in self.skipped]}

    def summary_lines(self) -> list[str]:
        """What the import did, as the CLI prints it and the Datasets page shows it."""
        lines = [f"imported {self.name!r} ({self.format}): {self.images:,} images, {self.captions:,} captions, "
                 f"{self.pairs:,} pairs from {self.rows:,} rows"]
        lines += [f"  {split}: {c['images']:,} images, {c['captions']:,} captions, {c['pairs']:,} pairs"
                  for split, c in self.splits.items()]
        if self.merged_duplicates:
            lines.append(f"  {self.merged_duplicates:,} rows repeating an earlier (image, caption) were merged")
        if self.skipped_count:
            lines.append(f"skipped {self.skipped_count:,} bad rows, listed in {self.report_path}")
        return lines


def _write_problem_report(name: str, problems: Iterable[tuple[Problem, Any, Any]]) -> Path:
    """List refused rows as CSV under CONCORD_HOME/import-reports/NAME-<UTC time>.csv."""
    folder = paths.home() / "import-reports"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    out = folder / f"{safe}-{stamp}.csv"
    with out.open("w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "location", "reason", "image", "caption"])
        for p, image, caption in problems:
            w.writerow([p.file, p.where, p.reason, "" if image is None else image, "" if caption is None else caption])
    return out


_PER_IMAGE = (("coco", "image_ids"), ("karpathy", "images"))
"""Where a format's info keeps something per image (COCO ids, Karpathy fields), keyed by the image's path as
`normalise_path` writes it: a re-export looks each up by the pair's stored image path."""


def _merged_info(sources: list[Source], respelled: dict[str, str]) -> dict[str, Any]:
    """What a re-export needs of one dataset's files (a COCO export has one per split), read once their rows are:
    the first file's, with every file's per-image entries, each under the image's stored path (`respelled`: the
    paths whose spelling on disk differs from the file's in Unicode form only)."""
    info = dict(sources[0].info)
    for fmt, field in _PER_IMAGE:
        if fmt in info:
            entries = {respelled.get(path, path): value for s in sources
                       for path, value in ((s.info.get(fmt) or {}).get(field) or {}).items()}
            info[fmt] = {**info[fmt], field: entries}
    return info


def import_dataset(store, path: str | Path, name: str | None = None, *, fmt: str = "auto",
                   images_root: str | Path | None = None, replace: bool = False, skip_bad: bool = False,
                   columns: ColumnNames = ColumnNames(), split: str | None = None, progress: Progress | None = None,
                   workers: int = 2) -> ImportReport:
    """Import the data file or folder `path` as dataset `name`, all or nothing (see the module docstring).

    `name` defaults to an export's dataset name, else the file's stem (the folder's name);
    `images_root` (default: the data file's folder, or where an export's manifest says) is what image
    paths are relative to; `split` names the split of rows whose file gives none (for COCO it overrides
    the guess from file names); `skip_bad` imports the good rows and lists the others in a CSV report
    instead of refusing. The rows are streamed through `core.importers.staging`, so memory does not grow
    with the file (COCO and Karpathy JSON excepted: each is one JSON document, parsed whole)."""
    progress = progress or Progress()
    path = Path(path).expanduser()
    located = locate(path, images_root)
    name = located.name if name is None else name
    if not name or not name.strip():
        raise ConcordError("a dataset needs a name (--name)")
    if not replace and store.has_dataset(name):
        raise ConcordError(f"dataset {name!r} already exists; pass --replace to replace it "
                           "(decisions on pairs that still exist are kept)")
    root = located.root

    progress.start("reading", None, message=f"reading {path.name}")
    sources = [read_source(f, fmt, columns, split) for f in located.files]
    formats = {s.format for s in sources}
    if len(formats) > 1:
        raise ConcordError(f"the data files are in different formats ({', '.join(sorted(formats))})")
    source_format = sources[0].format
    respelled: dict[str, str] = {}
    with Staging(store) as staging:

        def resolved_images() -> Iterator[str | None]:
            """Check each row, stage it, and yield its image file, to be checked meanwhile (None for a refused
            row, so that the progress counts every row)."""
            memo, i = PathMemo(), 0
            for file, source in zip(located.files, sources):
                per_image = any(fmt in source.info for fmt, _ in _PER_IMAGE)
                for row in source.rows:
                    caption = normalise_caption(row.caption)
                    late = row.problem is None
                    reason = row.problem or caption_problem(caption)
                    resolved = None if reason else resolve_image_path(root, row.image, memo)
                    if isinstance(resolved, str):
                        reason = resolved
                    if reason:
                        staging.add_row(i, str(file), row.where, row.key, row.image, row.caption, row.split, None,
                                        reason, late)
                        yield None
                    else:
                        rel, target = resolved
                        if per_image and rel != normalise_path(row.image):
                            respelled[normalise_path(row.image)] = rel
                        staging.add_row(i, str(file), row.where, row.key, rel, caption, row.split, target, None)
                        yield target
                    i += 1

        check_images(resolved_images(), progress, sum(s.expected for s in sources), staging.add_images, workers)
        staging.finish(several_files=len(located.files) > 1)
        n_rows, n_bad = staging.counts()
        if n_bad and not skip_bad:
            report = _write_problem_report(name, staging.problems())
            first = [p for p, _, _ in staging.problems(_SHOWN_PROBLEMS)]
            shown = "; ".join(str(p) for p in first)
            raise ConcordError(f"import of {name!r} refused, nothing changed: {n_bad} bad row(s) of "
                               f"{n_rows}: {shown}{'; …' if n_bad > _SHOWN_PROBLEMS else ''} "
                               f"(all listed in {report}; fix them or pass --skip-bad to import the good rows)")
        if n_bad == n_rows:
            first = next(staging.problems(1))[0]
            raise ConcordError(f"{path}: nothing to import, all {n_rows} rows are bad (first: {first})")

        progress.check()
        progress.start("writing", None, message=f"writing {n_rows - n_bad:,} pairs")
        source_path = str(path.resolve())
        counts = store.write_dataset(name, root, source_format, PAIRS, source_path=source_path,
                                     info=_merged_info(sources, respelled), replace=replace)
        report_path = _write_problem_report(name, staging.problems()) if n_bad else None
        skipped = tuple(p for p, _, _ in staging.problems(SHOWN_SKIPPED))
    splits = store.split_sizes(counts["dataset_id"])
    return ImportReport(name=name, dataset_id=counts["dataset_id"], format=source_format,
                        source_path=source_path, root=str(root), rows=n_rows,
                        images=counts["images"], captions=counts["captions"], pairs=counts["pairs"],
                        splits=splits, merged_duplicates=counts["merged_duplicates"],
                        skipped=skipped, skipped_count=n_bad,
                        report_path=None if report_path is None else str(report_path))
