"""Generated datasets (the demo, the offline real sets): their images live in a folder of their
database's own (`paths.generated_dir`: CONCORD_HOME/datasets/<db>-<hash>/NAME/), so the demo of one
database never overwrites the files another database's pairs point to.

`create_generated` is the one entry point of `python -m core demo` and the Datasets page: it writes the
images into a temporary folder, swaps it in place of the old one only once the records are stored, and
puts the old folder back if storing fails. Noise copies share their parent's folder, so a folder still
used by another dataset is never replaced or removed; `delete_dataset` removes a generated dataset's
folder with it when no other dataset uses it (folders of another database, or the shared
CONCORD_HOME/datasets/NAME/ of earlier versions, are never removed).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from core import artifacts, paths
from core.demo import DemoConfig, write_demo
from core.errors import ConcordError
from core.noise import DEFAULT_K, KINDS, TextEncoder, inject_noise
from core.progress import Progress
from core.runs import in_progress

SOURCES = ("demo", "fashion-mnist", "emoji")
SOURCE_FORMAT = "generated"
CAPTIONS = 5
"""Captions every source writes per image (the demo's five template families, the offline sets' five templates)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class GenerateOptions:
    """A generated dataset: `source` (demo | fashion-mnist | emoji), how many images of what size, how many
    `captions` each (the first of its five: 1 makes a set like Conceptual Captions, where no image has siblings),
    the seed, and noise of `noise_kind` at ratio `noise` injected into its train split."""

    source: str = "demo"
    images: int = 1000
    image_size: int = 64
    captions: int = CAPTIONS
    seed: int = 0
    noise: float = 0.3           # the default: the demo arrives with mistakes to find
    noise_kind: str = "ncr"
    k: int = DEFAULT_K


def _writer(source: str) -> Callable[[Path, GenerateOptions, Progress], pd.DataFrame]:
    if source == "demo":
        return lambda folder, o, p: write_demo(folder, DemoConfig(images=o.images, image_size=o.image_size,
                                                                  seed=o.seed), p)
    from core import offline_sets
    if source == "fashion-mnist":
        return lambda folder, o, p: offline_sets.write_fashion_mnist(folder, o.images, o.image_size, o.seed, p)
    if source == "emoji":
        return lambda folder, o, p: offline_sets.write_emoji(folder, o.images, o.image_size, o.seed, p)
    raise ConcordError(f"unknown source {source!r} (choose one of {', '.join(SOURCES)})")


def dataset_folder(store, name: str) -> Path:
    """Where generated dataset `name` of `store`'s database keeps its images; refuses names that are not
    plain folder names."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ConcordError(f"dataset name {name!r} cannot name a folder: use letters, digits, '.', '_' and '-'")
    return paths.generated_dir(store.path) / name


def _sharing(store, root: str, name: str) -> list[str]:
    """Other datasets whose images live in `root`."""
    return [n for n in store.dataset_names() if n != name and store.dataset(n).root == root]


def create_generated(store, name: str, options: GenerateOptions = GenerateOptions(), *, replace: bool = False,
                     encoder: TextEncoder | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Generate dataset `name` from `options.source` and store it (see the module docstring)."""
    progress = progress or Progress()
    if options.images < 2:
        raise ConcordError(f"a generated dataset needs at least 2 images, got {options.images}")
    if not 16 <= options.image_size <= 1024:
        raise ConcordError(f"image size must be within 16..1024 pixels, got {options.image_size}")
    if not 1 <= options.captions <= CAPTIONS:
        raise ConcordError(f"captions per image must be within 1..{CAPTIONS}, got {options.captions}")
    if options.noise_kind not in KINDS:
        raise ConcordError(f"unknown noise kind {options.noise_kind!r} (choose one of {', '.join(KINDS)})")
    if not 0.0 <= options.noise <= 1.0:
        raise ConcordError(f"noise ratio must be within [0, 1], got {options.noise}")
    writer = _writer(options.source)
    folder = dataset_folder(store, name)
    if store.has_dataset(name):
        if not replace:
            raise ConcordError(f"dataset {name!r} already exists; pass --replace to replace it "
                               "(decisions on pairs that still exist are kept)")
        sharing = _sharing(store, store.dataset(name).root, name)
        if sharing:
            raise ConcordError(f"dataset {name!r} shares its images with {', '.join(sharing)}; "
                               "delete those first or choose another name")
    if _sharing(store, str(folder), name):
        raise ConcordError(f"folder {folder} holds the images of {', '.join(_sharing(store, str(folder), name))}; "
                           "choose another name")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{name}.new-{os.getpid()}"
    old = folder.parent / f".{name}.old-{os.getpid()}"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        records = first_captions(writer(tmp, options, progress), options.captions)
        if options.noise > 0:
            progress.start("noise", None, message=f"injecting {options.noise_kind} noise")
            records = inject_noise(records, options.noise, options.noise_kind, options.seed, k=options.k,
                                   encoder=encoder)
        else:
            records = records.assign(is_noisy=False, original_caption=None)
        progress.check()
        progress.start("writing", None, message=f"writing {len(records):,} pairs")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        info = {"generator": asdict(options) | {"k": options.k if options.noise_kind == "hard" else None}}
        try:
            counts = store.write_dataset(name, folder, SOURCE_FORMAT, records, info=info, replace=replace)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            if old.exists():
                old.rename(folder)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    splits = records.groupby("split", sort=True)
    return counts | {
        "name": name, "root": str(folder), "source": options.source, "noisy": int(records["is_noisy"].sum()),
        "splits": {str(s): {"images": int(g["image_hash"].nunique()), "pairs": int(len(g))} for s, g in splits},
    }


def first_captions(records: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each image's first `n` caption rows (in the writer's order), so fewer captions keep the same images."""
    return records[records.groupby("image_path", sort=False).cumcount() < n].reset_index(drop=True)


def deletion_summary(store, name: str) -> dict[str, Any]:
    """What deleting `name` loses: pairs, decisions, meta-data entries, runs, and its image folder if no
    other dataset uses it."""
    ds = store.dataset(name)
    summary = store.dataset_summary(ds.id)
    folder = _own_folder(store, name)
    return {"name": name, "pairs": summary["pairs"], "decisions": len(store.decisions_frame(ds.id)),
            "meta_entries": len(store.meta_frame(ds.id)), "runs": len(store.runs(ds.id)),
            "folder": None if folder is None else str(folder)}


def describe_deletion(summary: dict[str, Any]) -> str:
    """One sentence saying what a deletion loses (the CLI's refusal, the page's confirmation)."""
    text = (f"deleting {summary['name']!r} also deletes its {summary['pairs']:,} pairs, its {summary['decisions']:,} "
            f"decisions, its {summary['meta_entries']:,} meta-data entries and its {summary['runs']:,} runs "
            "with their scores")
    if summary["folder"]:
        text += f", and its generated images in {summary['folder']}"
    return text


def _own_folder(store, name: str) -> Path | None:
    """The generated image folder of `name` when no other dataset uses it."""
    ds = store.dataset(name)
    folder = Path(ds.root)
    if ds.source_format != SOURCE_FORMAT or folder.parent != paths.generated_dir(store.path) \
            or _sharing(store, ds.root, name):
        return None
    return folder


def delete_dataset(store, name: str, live_runs: set[int] | frozenset[int] = frozenset()) -> dict[str, Any]:
    """Delete dataset `name` with everything that belongs to it (its runs' cached checkpoints and embeddings,
    and its generated images when no other dataset uses them); returns what was deleted. Refused while one of
    its runs is running or is a live job of the caller's (`live_runs`): the job would go on writing scores for
    a dataset that is gone."""
    summary = deletion_summary(store, name)
    runs = store.runs(store.dataset(name).id)
    busy = [run.id for run in runs if in_progress(run, run.id in live_runs)]
    if busy:
        listed = ", ".join(str(i) for i in busy)
        raise ConcordError(f"dataset {name!r} has run(s) {listed} in progress; cancel them before deleting it")
    store.delete_dataset(name)
    for run in runs:
        artifacts.clear_run(run)
    if summary["folder"]:
        shutil.rmtree(summary["folder"], ignore_errors=True)
    return summary
