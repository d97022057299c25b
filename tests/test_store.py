"""The store: schema and migrations, atomic transactions, concurrent writers, identity across re-imports."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.errors import ConcordError, DatabaseLocked
from core.store import SCHEMA_VERSION, Store


def records(n: int, captions: list[str] | None = None, split: str = "train") -> pd.DataFrame:
    caps = captions or [f"caption {i} é 猫" for i in range(n)]
    return pd.DataFrame({
        "image_path": [f"img/{i // 2}.png" for i in range(n)],
        "image_hash": [f"h{i // 2}" for i in range(n)],
        "width": 8, "height": 8, "nbytes": 100,
        "caption": caps, "split": split, "key": [str(i) for i in range(n)],
    })


def test_fresh_database_has_latest_schema(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert store.list_datasets() == []


def test_migration_from_version_1_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = Store.open(path, migrate=False)
    old.migrate(target=1)
    assert old.schema_version() == 1
    with old.transaction() as cur:  # a version-1 database with one dataset of 4 pairs, written as v1 did
        cur.execute("INSERT INTO datasets VALUES (1, 'd', '/root', 'csv', NULL, NULL, '{}', now()::TIMESTAMP)")
        cur.execute("INSERT INTO images VALUES (1, 1, 'a.png', 'h', 8, 8, 100)")
        for i in range(4):
            cur.execute("INSERT INTO captions VALUES (?, 1, ?, ?)", [i + 1, f"c{i}", f"h{i}"])
            cur.execute("INSERT INTO pairs VALUES (?, 1, 1, ?, 'train', ?, ?, NULL, NULL, ?)",
                        [i + 1, i + 1, str(i), f"u{i}", i])
    with pytest.raises(duckdb.CatalogException):
        old.review_sets(1)
    old.close()

    new = Store.open(path)
    assert new.schema_version() == SCHEMA_VERSION
    assert new.dataset_summary(1)["pairs"] == 4
    set_id = new.create_review_set(1, "look", [1, 2])
    assert new.review_set_pair_ids(set_id) == [1, 2]
    new.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    s = Store.open(path)
    with s.transaction() as cur:
        cur.execute("UPDATE schema_version SET version = 99")
    s.close()
    with pytest.raises(ConcordError, match="newer than this Concord"):
        Store.open(path)


def test_failed_transaction_leaves_nothing(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(4))
    before = store.decisions_frame(1)
    with pytest.raises(RuntimeError):
        with store.transaction() as cur:
            cur.execute("INSERT INTO decisions VALUES (999, 1, 1, 'keep', 'x', now()::TIMESTAMP, NULL, NULL, NULL)")
            raise RuntimeError("boom")
    assert store.decisions_frame(1).equals(before)
    # a decision on a missing pair fails as a whole: the valid pair before it is not stored either
    with pytest.raises(ConcordError, match="no pair 12345"):
        store.decide(1, [1, 12345], "keep", "ann")
    assert store.decisions_frame(1).empty and store.meta_frame(1).empty


def test_failed_import_changes_nothing(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(4))
    with pytest.raises(ConcordError, match="already exists"):
        store.write_dataset("d", "/root", "csv", records(6))
    assert store.dataset_summary(1)["pairs"] == 4


def test_eight_threads_writing_1000_decisions_each_lose_none(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(40))
    pair_ids = store.pairs_frame(1)["pair_id"].tolist()
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(1000):
                store.decide(1, [pair_ids[(t * 5 + i) % len(pair_ids)]], ("keep", "reject", "skip")[i % 3], f"r{t}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    log = store.decisions_frame(1)
    assert len(log) == 8000
    assert log["decision_id"].is_unique
    assert sorted(log.groupby("reviewer").size().tolist()) == [1000] * 8


def test_decision_meta_effects_and_undo(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(4))
    p = store.pairs_frame(1)
    store.decide(1, [p.pair_id[0]], "keep", "ann")
    store.decide(1, [p.pair_id[1]], "reject", "ann")
    store.decide(1, [p.pair_id[2]], "fix", "ann", new_caption="a better caption")
    meta = store.meta_frame(1)
    assert sorted(zip(meta.caption, meta.label)) == sorted([
        (p.caption[0], 1), (p.caption[1], 0), ("a better caption", 1), (p.caption[2], 0)])
    assert len(store.undo(1, "ann")) == 1  # reverts the fix
    meta = store.meta_frame(1)
    assert sorted(zip(meta.caption, meta.label)) == sorted([(p.caption[0], 1), (p.caption[1], 0)])
    assert store.undo(1, "bob") == []  # bob decided nothing
    state = store.pairs_frame(1).set_index("pair_id")["decision"]
    assert state[p.pair_id[0]] == "keep" and state[p.pair_id[1]] == "reject" and pd.isna(state[p.pair_id[2]])
    log = store.decisions_frame(1)
    assert log.action.tolist() == ["keep", "reject", "fix", "undo"]


def test_undo_restores_the_entry_a_decision_replaced(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(2))
    p = store.pairs_frame(1)
    store.add_meta(1, [(p.image_id[0], p.caption_id[0], 1)], "seed")
    store.decide(1, [p.pair_id[0]], "reject", "ann")
    assert store.meta_frame(1)[["label", "source"]].values.tolist() == [[0, "decision"]]
    store.undo(1, "ann")
    assert store.meta_frame(1)[["label", "source"]].values.tolist() == [[1, "seed"]]


def test_bad_decisions_are_refused(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(2))
    with pytest.raises(ConcordError, match="unknown action"):
        store.decide(1, [1], "maybe", "ann")
    with pytest.raises(ConcordError, match="needs the new caption"):
        store.decide(1, [1], "fix", "ann", new_caption="  ")
    with pytest.raises(ConcordError, match="reviewer"):
        store.decide(1, [1], "keep", " ")
    assert store.decisions_frame(1).empty


def test_replace_keeps_decisions_of_pairs_that_still_exist(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(4))
    p = store.pairs_frame(1)
    store.decide(1, [p.pair_id[0], p.pair_id[3]], "reject", "ann")
    changed = records(4)
    changed.loc[3, "caption"] = "a new caption"
    store.write_dataset("d", "/root", "csv", changed, replace=True)
    after = store.pairs_frame(1)
    assert after.pair_id[0] == p.pair_id[0] and after.decision[0] == "reject"
    assert pd.isna(after.decision[3]) and after.caption[3] == "a new caption"
    assert len(store.decisions_frame(1)) == 1


def test_caption_text_round_trips_byte_identical(store: Store) -> None:
    caps = ["naïve café", "猫が座っている", "🐱 on a mat", "שלום", "tab\tand \"quotes\""]
    store.write_dataset("d", "/root", "jsonl", records(5, caps))
    assert store.pairs_frame(1)["caption"].tolist() == caps


def test_scores_threshold_and_flagged(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(4))
    ids = store.pairs_frame(1)["pair_id"].to_numpy()
    run = store.create_run(1, "b1", "concord-tiny")
    store.write_scores(run, ids, np.zeros(4), np.array([0.1, 0.4, 0.6, 0.9]), np.ones(4), {"r": np.arange(4.0)})
    store.update_run(run, state="finished")
    assert store.scores_frame(run)["flagged"].tolist() == [True, True, False, False]
    assert store.scores_frame(run)["r"].tolist() == [0.0, 1.0, 2.0, 3.0]
    store.set_threshold(run, 0.5)
    assert store.dataset_summary(1)["flagged"] == 2
    store.set_threshold(run, 0.95)
    assert store.pairs_frame(1, run)["flagged"].sum() == 4
    with pytest.raises(ConcordError, match="threshold"):
        store.set_threshold(run, 1.5)


def test_scores_frame_pivots_every_extra_in_name_order(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(3))
    ids = store.pairs_frame(1)["pair_id"].to_numpy()
    run = store.create_run(1, "concord", "concord-tiny")
    store.write_scores(run, ids[::-1], np.full(3, 0.5), np.array([0.9, 0.2, 0.7]), np.ones(3),
                       {"z": np.array([1.0, np.nan, 3.0]), 'odd "name"': np.array([-1.0, -2.0, -3.0])})
    got = store.scores_frame(run)
    assert list(got.columns) == ["pair_id", "similarity", "clean_prob", "weight", "flagged", 'odd "name"', "z"]
    assert got["pair_id"].tolist() == sorted(ids.tolist())            # by pair, whatever order they were written in
    assert got["clean_prob"].tolist() == [0.7, 0.2, 0.9] and got['odd "name"'].tolist() == [-3.0, -2.0, -1.0]
    assert got["z"].iloc[0] == 3.0 and np.isnan(got["z"].iloc[1]) and got["z"].iloc[2] == 1.0
    assert list(store.scores_frame(run, extras=False).columns) == ["pair_id", "similarity", "clean_prob", "weight",
                                                                   "flagged"]
    plain = store.create_run(1, "b1", "concord-tiny")
    store.write_scores(plain, ids, np.zeros(3), np.zeros(3), np.zeros(3))
    assert len(store.scores_frame(plain).columns) == 5


def test_second_process_is_told_who_holds_the_database(store: Store) -> None:
    result = subprocess.run([sys.executable, "-m", "core", "datasets", "--json"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert store.path in lines[0] and "process" in lines[0]
    import os
    assert str(os.getpid()) in lines[0]


def active_meta(store: Store, ds: int = 1) -> list[tuple[str, int, str, int | None]]:
    """The active meta-data entries as (caption, label, source, decision id), in entry order."""
    meta = store.meta_frame(ds)
    return [(c, int(l), s, None if pd.isna(d) else int(d))
            for c, l, s, d in zip(meta.caption, meta.label, meta.source, meta.decision_id)]


@pytest.mark.parametrize("undo_order", [("ann", "bob"), ("bob", "ann")])
def test_undo_across_reviewers_brings_back_only_decisions_in_effect(store: Store, undo_order) -> None:
    store.write_dataset("d", "/root", "csv", records(2))
    p = store.pairs_frame(1)
    cap = p.caption[0]
    store.add_meta(1, [(p.image_id[0], p.caption_id[0], 0)], "import")
    keep = store.decide(1, [p.pair_id[0]], "keep", "ann")[0]
    assert active_meta(store) == [(cap, 1, "decision", keep)]
    reject = store.decide(1, [p.pair_id[0]], "reject", "bob")[0]
    assert active_meta(store) == [(cap, 0, "decision", reject)]
    first, second = undo_order
    store.undo(1, first)
    # the other reviewer's decision is the pair's decision now, and only its entry is active
    assert active_meta(store) == ([(cap, 0, "decision", reject)] if first == "ann" else [(cap, 1, "decision", keep)])
    store.undo(1, second)
    assert active_meta(store) == [(cap, 0, "import", None)]   # as before either decision
    assert store.pairs_frame(1).decision.isna().all()


def test_a_later_decision_withdraws_what_the_earlier_one_put_and_undo_brings_it_back(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(2))
    p = store.pairs_frame(1)
    cap = p.caption[0]
    hearts = store.decide(1, [p.pair_id[0]], "fix", "ann", new_caption="three red hearts")[0]
    assert active_meta(store) == [("three red hearts", 1, "decision", hearts), (cap, 0, "decision", hearts)]
    stars = store.decide(1, [p.pair_id[0]], "fix", "ann", new_caption="two blue stars")[0]
    assert active_meta(store) == [("two blue stars", 1, "decision", stars), (cap, 0, "decision", stars)]
    keep = store.decide(1, [p.pair_id[0]], "keep", "ann")[0]
    assert active_meta(store) == [(cap, 1, "decision", keep)]
    skip = store.decide(1, [p.pair_id[0]], "skip", "ann")[0]
    assert skip and active_meta(store) == []
    store.undo(1, "ann")
    assert active_meta(store) == [(cap, 1, "decision", keep)]
    store.undo(1, "ann")
    assert active_meta(store) == [("two blue stars", 1, "decision", stars), (cap, 0, "decision", stars)]
    store.undo(1, "ann")
    assert active_meta(store) == [("three red hearts", 1, "decision", hearts), (cap, 0, "decision", hearts)]
    store.undo(1, "ann")
    assert active_meta(store) == []


def test_fixes_of_two_siblings_to_one_caption_stack_and_unstack(store: Store) -> None:
    """Pairs 0 and 1 share an image, and both are fixed to one new caption: one meta-data key that two decisions
    put there. Each entry stands while a decision in effect made it; undo walks them back in any order."""
    store.write_dataset("d", "/root", "csv", records(2))
    p = store.pairs_frame(1)
    cap0, cap1, new = p.caption[0], p.caption[1], "one caption for both"
    fix_a = store.decide(1, [p.pair_id[0]], "fix", "ann", new_caption=new)[0]
    fix_b = store.decide(1, [p.pair_id[1]], "fix", "bob", new_caption=new)[0]
    assert sorted(active_meta(store)) == sorted([(cap0, 0, "decision", fix_a), (new, 1, "decision", fix_b),
                                                 (cap1, 0, "decision", fix_b)])
    keep = store.decide(1, [p.pair_id[0]], "keep", "ann")[0]                 # pair 1's fix still stands
    assert sorted(active_meta(store)) == sorted([(new, 1, "decision", fix_b), (cap1, 0, "decision", fix_b),
                                                 (cap0, 1, "decision", keep)])
    store.undo(1, "bob")                                  # no fix in effect puts the new caption there now
    assert active_meta(store) == [(cap0, 1, "decision", keep)]
    store.undo(1, "ann")                                  # pair 0's fix is in effect again
    assert sorted(active_meta(store)) == sorted([(new, 1, "decision", fix_a), (cap0, 0, "decision", fix_a)])
    store.undo(1, "ann")
    assert active_meta(store) == []


def test_undo_does_not_bring_back_what_a_person_removed(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(2))
    p = store.pairs_frame(1)
    store.add_meta(1, [(p.image_id[0], p.caption_id[0], 1)], "seed")
    store.decide(1, [p.pair_id[0]], "reject", "ann")
    store.remove_meta(1, store.meta_frame(1).entry_id.tolist())
    store.undo(1, "ann")
    assert active_meta(store) == []


def test_a_fix_to_the_pairs_own_caption_is_refused(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(2, captions=["two\nlines", "other"]))
    captions = len(store.captions_frame(1))
    for caption in ("two\nlines", "two\r\nlines", "two\rlines"):   # the same caption once normalised as an import does
        with pytest.raises(ConcordError) as err:
            store.decide(1, [1], "fix", "ann", new_caption=caption)
        assert str(err.value) == ("the new caption is the pair's own caption (pair 0): use Keep if it is right, "
                                  "or give another caption")
    assert store.decisions_frame(1).empty and store.meta_frame(1).empty and len(store.captions_frame(1)) == captions


def test_undo_never_restores_an_entry_its_own_decision_replaced(store: Store) -> None:
    """A fix to the pair's own caption stored before it was refused: its positive was replaced by its own
    negative, and undoing it brings back neither but what was there before."""
    store.write_dataset("d", "/root", "csv", records(2))
    p = store.pairs_frame(1)
    img, cap = int(p.image_id[0]), int(p.caption_id[0])
    store.add_meta(1, [(img, cap, 1)], "seed")
    seed = int(store.meta_frame(1).entry_id[0])
    now = pd.Timestamp.now().to_pydatetime()
    store._q("INSERT INTO decisions VALUES (90, 1, ?, 'fix', 'ann', ?, ?, NULL, NULL)", [int(p.pair_id[0]), now, cap])
    store._q("UPDATE meta_entries SET removed_at = ?, removed_by = 90 WHERE id = ?", [now, seed])
    store._q("INSERT INTO meta_entries VALUES (91, 1, ?, ?, 1, 'decision', 90, ?, ?, ?, 90)",
             [img, cap, seed, now, now])
    store._q("INSERT INTO meta_entries VALUES (92, 1, ?, ?, 0, 'decision', 90, 91, ?, NULL, NULL)", [img, cap, now])
    assert active_meta(store) == [(p.caption[0], 0, "decision", 90)]
    assert store.undo(1, "ann") == [90]
    assert active_meta(store) == [(p.caption[0], 1, "seed", None)]


@pytest.mark.parametrize("caption, reason", [
    ("bell\x07", "caption holds the control character U+0007 at character 5"),
    ("form\x0cfeed", "caption holds the control character U+000C at character 5"),
    ("x" * 10_001, "caption is 10,001 characters, over the limit of 10,000"),
])
def test_fix_captions_are_refused_for_what_an_import_refuses(store: Store, caption: str, reason: str) -> None:
    store.write_dataset("d", "/root", "csv", records(2))
    captions = len(store.captions_frame(1))
    with pytest.raises(ConcordError) as err:
        store.decide(1, [1], "fix", "ann", new_caption=caption)
    assert str(err.value) == f"the new caption is refused: {reason}"
    assert store.decisions_frame(1).empty and store.meta_frame(1).empty and len(store.captions_frame(1)) == captions


def test_fix_captions_are_normalised_as_an_import_normalises_them(store: Store) -> None:
    store.write_dataset("d", "/root", "csv", records(3))
    store.decide(1, [1], "fix", "ann", new_caption="a\r\nb\rc")
    store.decide(1, [2], "fix", "ann", new_caption="sep\u2028here " + "y" * 9_985)   # 10,000 characters: allowed
    fixed = store.pairs_frame(1).set_index("pair_id")["fixed_caption"]
    assert fixed[1] == "a\nb\nc" and fixed[2] == "sep\u2028here " + "y" * 9_985


def test_a_replace_that_changes_the_pairs_makes_the_runs_detection_figures_stale(store: Store) -> None:
    from core.runs import run_row

    store.write_dataset("d", "/root", "csv", records(4))
    run = store.create_run(1, "b1", "concord-tiny")
    detection = {"truth": "injected", "auroc": 0.547, "f1": 0.5, "flagged": 2}
    store.update_run(run, state="finished", metrics={"detection": detection, "retrieval": {"rsum": 12.5}})
    store.write_dataset("d", "/root", "csv", records(4), replace=True)          # the same pairs: figures stand
    assert store.run(run).metrics == {"detection": detection, "retrieval": {"rsum": 12.5}}
    changed = records(4)
    changed.loc[3, "caption"] = "a new caption"
    store.write_dataset("d", "/root", "csv", changed, replace=True)
    metrics = store.run(run).metrics
    assert set(metrics) == {"retrieval", "detection_stale"} and metrics["retrieval"] == {"rsum": 12.5}
    assert metrics["detection_stale"]["figures"] == detection
    row = run_row(store.run(run))
    assert (row["auroc"], row["f1"], row["flagged"], row["rsum"]) == (None, None, None, 12.5)
    store.update_run(run, metrics=metrics | {"detection": detection})
    noisy = changed.assign(is_noisy=[False, False, True, False])               # the truth changed
    store.write_dataset("d", "/root", "csv", noisy, replace=True)
    assert "detection" not in store.run(run).metrics


def test_a_bulk_action_is_undone_as_one(store: Store) -> None:
    """One `decide` call on many pairs (Review's bulk grid) is one undo; the decision before it is the next."""
    store.write_dataset("d", "/root", "csv", records(6))
    p = store.pairs_frame(1)
    store.decide(1, [p.pair_id[0]], "keep", "ann")
    bulk = store.decide(1, list(p.pair_id[1:5]), "reject", "ann")
    store.decide(1, [p.pair_id[5]], "reject", "bob")
    assert store.undo(1, "ann") == bulk[::-1]
    assert active_meta(store) == [(p.caption[0], 1, "decision", 1), (p.caption[5], 0, "decision", 6)]
    assert store.undo(1, "ann") == [1] and store.undo(1, "ann") == []
    assert active_meta(store) == [(p.caption[5], 0, "decision", 6)]


def test_a_fix_with_a_caption_its_image_already_has_is_refused(store: Store) -> None:
    """Fixing pair 0 with the caption of pair 1 (the same image) would repeat pair 1 and label it matched whatever
    its own decision says: refused, naming the pair to decide instead; nothing stored."""
    store.write_dataset("d", "/root", "csv", records(4))
    p = store.pairs_frame(1)
    store.decide(1, [p.pair_id[1]], "reject", "ann")
    with pytest.raises(ConcordError, match=r"^the image already has this caption as pair 1: decide on pair 1 instead$"):
        store.decide(1, [p.pair_id[0]], "fix", "ann", new_caption=p.caption[1])
    assert active_meta(store) == [(p.caption[1], 0, "decision", 1)] and len(store.decisions_frame(1)) == 1
    store.decide(1, [p.pair_id[0]], "fix", "ann", new_caption=p.caption[2])    # another image's caption is a fix
    assert sorted(active_meta(store)) == sorted([(p.caption[1], 0, "decision", 1), (p.caption[2], 1, "decision", 2),
                                                 (p.caption[0], 0, "decision", 2)])
