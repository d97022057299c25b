"""`decide NAME`: record review decisions from the command line, one pair or a CSV of them, or undo.

The CSV has a header with columns `pair_id`, `action` (keep / reject / fix / skip) and `caption` (fixes
only). `pair_id` is the pair's user-visible key (the id in the imported file); with `--store-ids` it is
the numeric store id instead. A caption may span lines when quoted. Every row is checked first (a fix's
caption as an import checks captions; a pair listed twice is refused); any bad row is refused with its file
and line and nothing is stored. Good files are stored in one transaction, each decision with its meta-data
effect.
"""
from __future__ import annotations

import argparse
import getpass
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConcordError
from core.metadata import read_pair_csv, resolve_pair
from core.store import ACTIONS, Store, fix_caption


@dataclass(frozen=True)
class DecisionRow:
    """One checked decision: the store's pair id, the action, (for a fix) the new caption, and where it was
    read (`FILE line N`, for the store's refusals)."""

    pair_id: int
    action: str
    caption: str | None
    where: str = ""


def check_action(action: str, caption: str | None) -> tuple[str, str | None]:
    """A validated action with (for a fix) its new caption as it will be stored, or ConcordError saying what is
    wrong with them."""
    action = action.strip().lower()
    if action not in ACTIONS:
        raise ConcordError(f"unknown action {action!r} (choose one of {', '.join(ACTIONS)})")
    caption = caption if caption and caption.strip() else None
    if action == "fix" and caption is None:
        raise ConcordError("a fix needs the new caption")
    if action != "fix" and caption is not None:
        raise ConcordError(f"only a fix takes a caption, not {action}")
    return action, None if caption is None else fix_caption(caption)


def read_decisions_csv(path: Path, lookup: dict[str, int | None]) -> list[DecisionRow]:
    """Every row of a decisions CSV, checked; the first bad row (or a pair listed twice) is refused with its file
    and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConcordError(f"{path}: cannot read the file ({exc})") from None
    rows = read_pair_csv(text, str(path), "decisions", ("action",), lookup,
                         lambda row: check_action(row.get("action") or "", row.get("caption")))
    return [DecisionRow(pid, action, caption, f"{path} line {line}") for pid, (action, caption), line in rows]


def store_decisions(store: Store, dataset_id: int, rows: list[DecisionRow], reviewer: str,
                    run_id: int | None) -> list[int]:
    """Store all rows in one transaction (each with its meta-data effect); returns the decision ids."""
    ids: list[int] = []
    with store.transaction():
        for r in rows:
            try:
                ids += store.decide(dataset_id, [r.pair_id], r.action, reviewer, new_caption=r.caption,
                                    run_id=run_id)
            except ConcordError as exc:
                if not r.where:
                    raise
                raise ConcordError(f"{r.where}: {exc}; nothing was stored") from None
    return ids


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("decide", parents=[common], help="record review decisions (one pair, a CSV, or undo)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="dataset name")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pair", help="the pair's key (or numeric store id with --store-ids)")
    what.add_argument("--csv", type=Path, help="CSV with columns pair_id, action, caption")
    what.add_argument("--undo", action="store_true", help="revert the reviewer's latest decision")
    p.add_argument("--action", choices=ACTIONS, help="with --pair: the decision")
    p.add_argument("--caption", help="with --action fix: the new caption")
    p.add_argument("--store-ids", action="store_true", help="pair ids are numeric store ids, not pair keys")
    p.add_argument("--reviewer", default=None, help="reviewer name stored with each decision (default: your login)")
    p.add_argument("--run", type=int, default=None, help="run the decisions were made under (default: latest finished)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    reviewer = (args.reviewer or getpass.getuser() or "cli").strip()
    if args.undo:
        reverted = store.undo(ds.id, reviewer)
        print(f"undid decision(s) {', '.join(map(str, reverted))}" if reverted
              else f"nothing to undo for reviewer {reviewer!r}")
        return 0
    if args.run is not None:
        if store.run(args.run).dataset_id != ds.id:
            raise ConcordError(f"run {args.run} belongs to another dataset, not {args.name!r}")
        run_id = args.run
    else:
        latest = store.latest_finished_run(ds.id)
        run_id = None if latest is None else latest.id
    lookup = store.pair_lookup(ds.id, args.store_ids)
    if args.csv is not None:
        rows = read_decisions_csv(args.csv, lookup)
    else:
        if args.action is None:
            raise ConcordError("--pair needs --action (keep, reject, fix or skip)")
        action, caption = check_action(args.action, args.caption)
        rows = [DecisionRow(resolve_pair(lookup, args.pair), action, caption)]
    ids = store_decisions(store, ds.id, rows, reviewer, run_id)
    counts = {a: sum(r.action == a for r in rows) for a in ACTIONS if any(r.action == a for r in rows)}
    print(f"stored {len(ids)} decision(s) by {reviewer!r}: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    return 0
