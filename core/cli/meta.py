"""`meta NAME list|add|remove|flip|import|seed|search`: curate the meta-data (MSCN's trusted set).

Entries are matched (label 1, positives) or mismatched (label 0, negatives) pairs with a source: `seed`,
`decision`, `import` or `manual`. `add` takes pair keys (the ids in the imported file; numeric store ids
with `--store-ids`); `remove` and `flip` take entry ids as `list` shows them. `import --csv FILE` reads
columns `pair_id,label` (1 or 0), all or nothing, bad rows named by file and line. `import --split S`
adds every pair of a trusted split; `seed` draws a fraction of the training size from one (default
`val`, 2%, as the MSCN paper). The training split is never accepted as trusted.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from core import metadata
from core.store import META_SOURCES


def _parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, help_: str,
            json_flag: bool = False) -> argparse.ArgumentParser:
    p = sub.add_parser(name, parents=[common], help=help_, description=help_)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")
    return p


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("meta", parents=[common], help="curate the meta-data (MSCN's trusted pairs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="dataset name")
    actions = p.add_subparsers(dest="meta_action", metavar="ACTION")
    actions.required = True

    a = _parser(actions, common, "list", "counts, balance, warnings and the active entries", json_flag=True)
    a.add_argument("--source", choices=META_SOURCES, help="only entries of this source")
    a.add_argument("--label", type=int, choices=(0, 1), help="only positives (1) or negatives (0)")
    a.add_argument("--limit", type=int, default=50, help="entries to print (default 50; --json prints all)")
    a.set_defaults(handler=run_list)

    a = _parser(actions, common, "add", "add pairs as positives or negatives (source manual)")
    a.add_argument("pairs", nargs="+", help="pair keys (numeric store ids with --store-ids)")
    a.add_argument("--label", type=int, choices=(0, 1), required=True, help="1 matched, 0 mismatched")
    a.add_argument("--store-ids", action="store_true", help="pairs are numeric store ids, not pair keys")
    a.set_defaults(handler=run_add)

    a = _parser(actions, common, "remove", "remove entries")
    a.add_argument("entries", nargs="+", type=int, help="entry ids (see list)")
    a.set_defaults(handler=run_remove)

    a = _parser(actions, common, "flip", "flip the label of entries (they become manual entries)")
    a.add_argument("entries", nargs="+", type=int, help="entry ids (see list)")
    a.set_defaults(handler=run_flip)

    a = _parser(actions, common, "import", "import a trusted split or a CSV of pair ids and labels")
    what = a.add_mutually_exclusive_group(required=True)
    what.add_argument("--split", help="add every pair of this trusted split")
    what.add_argument("--csv", type=Path, help="CSV with columns pair_id, label (1 or 0)")
    a.add_argument("--label", type=int, choices=(0, 1), default=1, help="with --split: the label (default 1)")
    a.add_argument("--store-ids", action="store_true", help="with --csv: pair_id holds numeric store ids")
    a.set_defaults(handler=run_import)

    a = _parser(actions, common, "seed", "add seed positives drawn from a clean split")
    a.add_argument("--split", default="val", help="the clean split to draw from (default val)")
    a.add_argument("--fraction", type=float, default=0.02,
                   help="how many, as a fraction of the training split's pairs (default 0.02)")
    a.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    a.set_defaults(handler=run_seed)

    a = _parser(actions, common, "search", "find pairs by caption text (or key) to add", json_flag=True)
    a.add_argument("text", help="text the caption contains (case-insensitive), or a pair key")
    a.add_argument("--split", help="only pairs of this split")
    a.add_argument("--limit", type=int, default=20, help="at most this many pairs (default 20)")
    a.set_defaults(handler=run_search)


def _print_summary(summary: dict) -> None:
    balance = "n/a" if summary["balance"] is None else f"{summary['balance']:.0%} positive"
    sources = ", ".join(f"{s} {c['positives']}+/{c['negatives']}-" for s, c in summary["by_source"].items()
                        if c["positives"] or c["negatives"])
    print(f"{summary['positives']} positives, {summary['negatives']} negatives ({balance})"
          + (f"; by source: {sources}" if sources else ""))
    for w in summary["warnings"]:
        print(f"warning: {w}")


def _records(frame: pd.DataFrame) -> list[dict]:
    frame = frame.astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


def run_list(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    summary = metadata.meta_summary(store, ds.id)
    entries = store.meta_frame(ds.id)
    if args.source:
        entries = entries[entries["source"] == args.source]
    if args.label is not None:
        entries = entries[entries["label"] == args.label]
    if args.json:
        ctx.print_json({"summary": summary, "entries": _records(entries)})
        return 0
    _print_summary(summary)
    if entries.empty:
        print("no entries" + (" match" if args.source or args.label is not None else ""))
        return 0
    print(f"{'entry':>7} {'label':>5} {'source':<8} {'pair':>8} {'split':<6}  caption")
    for e in entries.head(args.limit).itertuples():
        pair = "-" if pd.isna(e.pair_id) else str(int(e.pair_id))
        split = "-" if pd.isna(e.split) else e.split
        print(f"{e.entry_id:>7} {e.label:>5} {e.source:<8} {pair:>8} {split:<6}  {e.caption}")
    if len(entries) > args.limit:
        print(f"… {len(entries) - args.limit} more (--limit)")
    return 0


def run_add(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    pair_ids = metadata.resolve_pairs(store, ds.id, args.pairs, args.store_ids)
    ids = metadata.add_pairs(store, ds.id, pair_ids, args.label)
    print(f"added {len(ids)} {'positive' if args.label == 1 else 'negative'}(s)")
    _print_summary(metadata.meta_summary(store, ds.id))
    return 0


def run_remove(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    print(f"removed {metadata.remove_entries(store, ds.id, args.entries)} entr(ies)")
    _print_summary(metadata.meta_summary(store, ds.id))
    return 0


def run_flip(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    new = metadata.flip_entries(store, ds.id, args.entries)
    print(f"flipped {len(new)} entr(ies); new entry ids: {', '.join(map(str, new))}")
    _print_summary(metadata.meta_summary(store, ds.id))
    return 0


def run_import(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    if args.csv is not None:
        n = metadata.import_csv(store, ds.id, args.csv, store_ids=args.store_ids)
        print(f"imported {n} entr(ies) from {args.csv}")
    else:
        n = metadata.import_split(store, ds.id, args.split, args.label)
        print(f"imported {n} pair(s) of split {args.split!r} with label {args.label} "
              "(pairs already in the meta-data kept their entry)")
    _print_summary(metadata.meta_summary(store, ds.id))
    return 0


def run_seed(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    n = metadata.seed_from_split(store, ds.id, args.split, args.fraction, args.seed)
    print(f"seeded {n} positive(s) from split {args.split!r}")
    _print_summary(metadata.meta_summary(store, ds.id))
    return 0


def run_search(args: argparse.Namespace, ctx) -> int:
    store = ctx.store
    ds = store.dataset(args.name)
    found = metadata.search_pairs(store, ds.id, args.text, split=args.split, limit=args.limit)
    if args.json:
        ctx.print_json(_records(found))
        return 0
    if found.empty:
        print("no pair matches")
        return 0
    print(f"{'key':>10} {'split':<6} {'meta':>5}  caption")
    for r in found.itertuples():
        label = "-" if pd.isna(r.meta_label) else str(int(r.meta_label))
        print(f"{r.key:>10} {r.split:<6} {label:>5}  {r.caption}")
    return 0
