"""Curating the meta-data: the trusted set of matched (1) and mismatched (0) pairs MSCN learns from.

Entries come from four sources: `seed` (drawn from a split the user names as clean, methods.md §3.3; see
`core.meta_seed`, which training also uses, so that this module and `core.training` do not import each other),
`decision` (Keep / Reject / Fix in Review; the store keeps these in step with decisions and undo),
`import` (a whole trusted split, or a CSV of pair ids and labels) and `manual` (added or flipped here).
Every function works through the store's methods; the table they change is the one every method reads.

The CSV of labels has a header with columns `pair_id` and `label` (1 matched, 0 mismatched). `pair_id` is
the pair's key (its id in the imported file, as in `decide --csv`), or with `store_ids` the numeric store
id. A file is checked as a whole: the first bad row is refused with its file and line, and nothing is stored.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pandas as pd

from core.errors import ConcordError, NotFound
from core.meta_seed import (TRAIN_SPLIT, ensure_seed, seed_from_split,  # noqa: F401  (curated here too)
                            split_sizes, trusted_split, unclaimed_pairs)
from core.store import META_SOURCES, Run, Store

T = TypeVar("T")

RETRAIN_DEFAULT_METHOD = "mscn"
"""The method a retrain starts when the dataset has no run to copy: the one that learns from the meta-data."""


@dataclass(frozen=True)
class MetaThresholds:
    """When the meta-data is too small or too unbalanced for MSCN to learn a reliable correction from."""

    min_positives: int = 50
    """Fewer positives than this is too small, whatever the dataset's size."""
    min_fraction: float = 0.01
    """Fewer positives than this fraction of the training pairs is too small (the paper uses 2%)."""
    max_negative_ratio: float = 3.0
    """More negatives than this many times the positives is unbalanced."""


def import_split(store: Store, dataset_id: int, split: str, label: int = 1) -> int:
    """Add every pair of a trusted split with `label` (source `import`); pairs already in the meta-data keep
    their entry. Returns how many entries were added."""
    label = _check_label(label)
    trusted_split(store, dataset_id, split)
    pool = unclaimed_pairs(store, dataset_id, split)
    return len(store.add_meta(dataset_id, list(zip(pool["image_id"], pool["caption_id"], [label] * len(pool))),
                              "import"))


def _check_label(label: Any) -> int:
    if str(label).strip() not in ("0", "1"):
        raise ConcordError(f"a label is 1 (matched) or 0 (mismatched), got {label!r}")
    return int(str(label).strip())


def resolve_pair(lookup: dict[str, int | None], ident: str) -> int:
    """The store id a pair identifier names, or ConcordError saying why none."""
    ident = ident.strip()
    if ident not in lookup:
        raise ConcordError(f"no pair {ident!r} in this dataset")
    pid = lookup[ident]
    if pid is None:
        raise ConcordError(f"pair key {ident!r} names several pairs; use store ids")
    return pid


def resolve_pairs(store: Store, dataset_id: int, idents: Sequence[str], store_ids: bool = False) -> list[int]:
    """Store ids of pairs named by key (or, with `store_ids`, by numeric store id)."""
    lookup = store.pair_lookup(dataset_id, store_ids)
    return [resolve_pair(lookup, str(i)) for i in idents]


_LINE_BREAK = re.compile("\r\n|\r|\n")
"""A line break as the csv module counts lines."""


def read_pair_csv(text: str, name: str, what: str, columns: tuple[str, ...], lookup: dict[str, int | None],
                  check: Callable[[dict[str, str | None]], T]) -> list[tuple[int, T, int]]:
    """(store pair id, checked row, line) for every row of a CSV of `what` (labels, decisions) with a `pair_id`
    column and `columns`, each row checked by `check`; the first bad row, or a pair listed twice, is refused with `name`
    and the line its record starts on. Records split at line breaks only, so a quoted value may span lines and
    hold any other character (U+2028, form feed)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in ("pair_id", *columns) if c not in (reader.fieldnames or [])]
    if missing:
        raise ConcordError(f"{name} line 1: missing column(s) {', '.join(missing)} "
                           f"(needs {', '.join(('pair_id', *columns))})")
    rows: list[tuple[int, T, int]] = []
    lines: dict[int, int] = {}
    for row in reader:
        values = [v for v in row.values() if isinstance(v, str)] + list(row.get(None) or [])   # extra fields too
        line = reader.line_num - sum(len(_LINE_BREAK.findall(v)) for v in values)
        ident = (row.get("pair_id") or "").strip()
        try:
            if None in row:         # more fields than the header: a value holds an unquoted comma, and was cut
                raise ConcordError(f"row has {len(reader.fieldnames) + len(row[None])} fields, the header has "
                                   f"{len(reader.fieldnames)} (quote a value that holds a comma)")
            checked = check(row)
            pid = resolve_pair(lookup, ident)
            if pid in lines:
                raise ConcordError(f"pair {ident!r} is already listed on line {lines[pid]}")
        except ConcordError as exc:
            raise ConcordError(f"{name} line {line}: {exc}; nothing was stored") from None
        lines[pid] = line
        rows.append((pid, checked, line))
    if not rows:
        raise ConcordError(f"{name}: no {what} in the file")
    return rows


def read_labels_csv(text: str, name: str, lookup: dict[str, int | None]) -> dict[int, int]:
    """Store pair id → label for every row of a labels CSV, checked (`read_pair_csv`)."""
    return {pid: label for pid, label, _ in read_pair_csv(text, name, "labels", ("label",), lookup,
                                                           lambda row: _check_label(row.get("label") or ""))}


def import_csv_text(store: Store, dataset_id: int, text: str, name: str, store_ids: bool = False) -> int:
    """Import a labels CSV given as text (an upload), all or nothing; returns how many entries were stored."""
    labels = read_labels_csv(text, name, store.pair_lookup(dataset_id, store_ids))
    by_label: dict[int, list[int]] = {1: [], 0: []}
    for pid, label in labels.items():
        by_label[label].append(pid)
    with store.transaction():
        return sum(len(add_pairs(store, dataset_id, pids, label, source="import"))
                   for label, pids in by_label.items() if pids)


def import_csv(store: Store, dataset_id: int, path: str | Path, store_ids: bool = False) -> int:
    """Import a labels CSV file (see the module docs), all or nothing; returns how many entries were stored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConcordError(f"{path}: cannot read the file ({exc})") from None
    return import_csv_text(store, dataset_id, text, str(path), store_ids)


def add_pairs(store: Store, dataset_id: int, pair_ids: Sequence[int], label: int, source: str = "manual") -> list[int]:
    """Make the given pairs meta-data entries with `label` (replacing their current entry); returns entry ids."""
    label = _check_label(label)
    ids = [int(p) for p in pair_ids]
    pairs = store.pairs_frame(dataset_id, pair_ids=ids).set_index("pair_id")
    missing = [p for p in ids if p not in pairs.index]
    if missing:
        raise NotFound(f"no pair {missing[0]} in this dataset")
    return store.add_meta(dataset_id, [(int(pairs.at[p, "image_id"]), int(pairs.at[p, "caption_id"]), label)
                                       for p in ids], source)


def _check_active(store: Store, dataset_id: int, entry_ids: Sequence[int]) -> list[int]:
    ids = [int(e) for e in entry_ids]
    if not ids:
        raise ConcordError("no meta-data entries given")
    active = set(store.meta_frame(dataset_id)["entry_id"].astype(int))
    gone = [e for e in ids if e not in active]
    if gone:
        raise NotFound(f"no active meta-data entry {gone[0]} in this dataset")
    return ids


def remove_entries(store: Store, dataset_id: int, entry_ids: Sequence[int]) -> int:
    """Remove active entries (all named ids must be active); returns how many were removed."""
    return store.remove_meta(dataset_id, _check_active(store, dataset_id, entry_ids))


def flip_entries(store: Store, dataset_id: int, entry_ids: Sequence[int]) -> list[int]:
    """Flip the label of active entries (they become `manual` entries); returns the new entry ids."""
    return store.flip_meta(dataset_id, _check_active(store, dataset_id, entry_ids))


def search_pairs(store: Store, dataset_id: int, text: str, split: str | None = None, limit: int = 50) -> pd.DataFrame:
    """Pairs whose caption contains `text` (or whose key is `text`), with their current meta-data label."""
    return store.search_pairs(dataset_id, text, split=split, limit=limit)


def meta_summary(store: Store, dataset_id: int, thresholds: MetaThresholds = MetaThresholds()) -> dict[str, Any]:
    """Counts (positives, negatives, per source), balance (the positives' share) and warnings.

    Too small: fewer positives than max(`min_positives`, `min_fraction` of the training pairs). Unbalanced:
    more than `max_negative_ratio` negatives per positive."""
    meta = store.meta_frame(dataset_id)
    positives = int((meta["label"] == 1).sum())
    negatives = int((meta["label"] == 0).sum())
    by_source = {s: {"positives": int(((meta["source"] == s) & (meta["label"] == 1)).sum()),
                     "negatives": int(((meta["source"] == s) & (meta["label"] == 0)).sum())} for s in META_SOURCES}
    train = split_sizes(store, dataset_id).get(TRAIN_SPLIT, 0)
    needed = max(thresholds.min_positives, math.ceil(thresholds.min_fraction * train))
    warnings = []
    if positives == 0:
        warnings.append("No positives: MSCN learns what a matched pair looks like from the positives. Seed them "
                        "from a clean split, import a trusted split or CSV, or keep pairs in Review.")
    elif positives < needed:
        warnings.append(f"Too small: {positives} positives, fewer than {needed} (at least "
                        f"{thresholds.min_positives}, and {thresholds.min_fraction:.0%} of the {train} training "
                        "pairs). MSCN fits its correction to these few and overfits; add positives.")
    if positives and negatives > thresholds.max_negative_ratio * positives:
        warnings.append(f"Unbalanced: {negatives} negatives for {positives} positives. MSCN balances each meta "
                        "batch 1:1, filling with random negatives, so hard negatives beyond the positives are "
                        "fine, but positives are what it is short of; add positives.")
    return {"positives": positives, "negatives": negatives, "by_source": by_source,
            "balance": positives / (positives + negatives) if positives + negatives else None,
            "warnings": warnings, "needed_positives": needed, "train_pairs": int(train)}


def retrain_base(store: Store, dataset_id: int) -> Run | None:
    """The run a retrain copies: the dataset's newest finished run, else its newest run, else None."""
    return store.latest_finished_run(dataset_id) or next(iter(store.runs(dataset_id)), None)


def start_retrain(store: Store, dataset: str, method: str | None = None) -> int:
    """Record a run like the latest one (`retrain_base`) that reads the current meta-data; returns its id.

    It keeps the base run's model, regime, device, seed and threshold, and its settings when `method` is
    the base's (or None); another method starts from its own defaults. With no run yet, the training
    defaults apply (`method`, else MSCN, the method the meta-data is for)."""
    from core.training import start_run  # the scoring engine: imported only when a run starts

    base = retrain_base(store, store.dataset(dataset).id)
    if base is None:
        return start_run(store, dataset, method or RETRAIN_DEFAULT_METHOD)
    method = method or base.method
    settings = base.config if method == base.method else None
    return start_run(store, dataset, method, model=base.model, regime=base.regime, device=base.device or "auto",
                     seed=base.seed or 0, settings=settings, threshold=base.threshold)


def agreement_history(store: Store, dataset_id: int, runs: int = 2) -> list[dict[str, Any]]:
    """How many of the person's current decisions the newest `runs` finished runs agree with, newest first:
    run id, method, finished time, `decision_agreement`'s counts, and the AUROC now on the pairs outside
    the meta-data (the decided pairs are meta-data, so this is measured on the others; None without truth)."""
    from core.evaluate import decision_agreement, evaluate_run  # the scoring engine: imported only when needed

    out = []
    for run in store.runs(dataset_id, state="finished")[:runs]:
        out.append({"run_id": run.id, "method": run.method, "finished_at": run.finished_at,
                    "auroc": evaluate_run(store, run.id)["auroc"]} | decision_agreement(store, run.id))
    return out
