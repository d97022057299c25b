"""The review queue (core/review.py, Store.review_scope / review_rows): orders, filters, decided pairs leaving, progress
and pace, suggestions under a run's embeddings, and the actions with their meta-data effect.

`review_run` builds a 6-pair dataset and a finished run with hand-picked scores and embeddings; the page
and browser tests use it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import artifacts
from core.errors import ConcordError, NotFound
from core.hashing import file_hash
from core.review import QueueSpec, ReviewProgress, act, build_queue, decision_rate, suggestions, undo
from core.thumbnails import image_uri

SCRIPT = "<script>alert(1)</script> **x**"
# key, image, caption, split, clean_prob, caption embedding (images: a=(1,0,0), b=(0,1,0), c=(0,0,1))
PAIRS = [
    ("k1", "a", "a red circle", "train", 0.85, (1, 0, 0)),
    ("k2", "a", SCRIPT, "train", 0.1, (0.6, 0, 0.8)),
    ("k3", "b", "a blue square", "train", 0.45, (0, 1, 0)),
    ("k4", "b", "a green star", "val", 0.3, (0.8, 0.6, 0)),
    ("k5", "c", "a blue square on white", "test", 0.6, (0, 0.6, 0.8)),
    ("k6", "c", "two yellow hearts", "train", None, (0, 0, 1)),
]
IMAGES = {"a": (1, 0, 0), "b": (0, 1, 0), "c": (0, 0, 1)}


@dataclass(frozen=True)
class ReviewRun:
    dataset_id: int
    run_id: int
    pair: dict[str, int]      # key -> pair id
    caption: dict[str, int]   # text -> caption id
    image: dict[str, int]     # a/b/c -> image id


def review_run(store, root: Path, name: str = "rv", threshold: float = 0.5, embeddings: bool = True) -> ReviewRun:
    """Dataset `name` of PAIRS (three 8×8 PNGs under `root`) and a finished run with their scores, the
    threshold and (unless `embeddings` is False) the hand-picked embeddings."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (key, img, cap, split, _, _) in enumerate(PAIRS):
        path = root / f"{img}.png"
        if not path.exists():
            Image.new("RGB", (8, 8), (60 * "abc".index(img), 120, 200)).save(path)
        rows.append({"image_path": path.name, "image_hash": file_hash(path), "width": 8, "height": 8,
                     "nbytes": path.stat().st_size, "caption": cap, "split": split, "key": key})
    ds_id = store.write_dataset(name, root, "csv", pd.DataFrame(rows))["dataset_id"]
    pairs = store.pairs_frame(ds_id)
    pair = dict(zip(pairs["key"], pairs["pair_id"].astype(int)))
    caption = dict(zip(pairs["caption"], pairs["caption_id"].astype(int)))
    image = {p[0]: int(i) for p, i in zip(pairs["image_path"], pairs["image_id"])}
    run_id = store.create_run(ds_id, "npc", "concord-tiny", seed=0, threshold=threshold)
    scored = [p for p in PAIRS if p[4] is not None]
    store.write_scores(run_id, np.array([pair[p[0]] for p in scored]), np.zeros(len(scored)),
                       np.array([p[4] for p in scored]), np.ones(len(scored)))
    store.update_run(run_id, state="finished")
    if embeddings:
        artifacts.save_embeddings(store.run(run_id), artifacts.RunEmbeddings(
            np.array([image[k] for k in IMAGES]), np.array(list(IMAGES.values()), np.float32),
            np.array([caption[p[2]] for p in PAIRS]), np.array([p[5] for p in PAIRS], np.float32)))
    return ReviewRun(ds_id, run_id, pair, caption, image)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ids restart at 1 in every test database: give each test its own cache of run embeddings."""
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def rv(store, tmp_path) -> ReviewRun:
    return review_run(store, tmp_path / "data")


def keys(store, rv: ReviewRun, spec: QueueSpec = QueueSpec(), **kw) -> list[str]:
    return list(build_queue(store, rv.dataset_id, store.run(rv.run_id), spec, reviewer="ann", limit=10, **kw)
                .head["key"])


# ------------------------------------------------------------------------------------------ order and filters
def test_orders(store, rv):
    assert keys(store, rv) == ["k2", "k4", "k3", "k5", "k1", "k6"]           # by clean_prob, unscored last
    assert keys(store, rv, QueueSpec(order="uncertain")) == ["k3", "k5", "k4", "k1", "k2", "k6"]  # |p - 0.5|
    assert keys(store, rv, QueueSpec(order="position")) == ["k1", "k2", "k3", "k4", "k5", "k6"]
    set_id = store.create_review_set(rv.dataset_id, "look", [rv.pair["k5"], rv.pair["k1"], rv.pair["k3"]])
    assert keys(store, rv, QueueSpec(order="set", set_id=set_id)) == ["k5", "k1", "k3"]
    assert keys(store, rv, QueueSpec(set_id=set_id)) == ["k3", "k5", "k1"]    # the set, most suspicious first


def test_filters(store, rv):
    assert keys(store, rv, QueueSpec(split="val")) == ["k4"]
    assert keys(store, rv, QueueSpec(text="BLUE square")) == ["k3", "k5"]
    assert keys(store, rv, QueueSpec(text=" k6 ")) == ["k6"]                   # a pair key
    assert keys(store, rv, QueueSpec(text="**x**")) == ["k2"]                  # literal text, no pattern
    assert keys(store, rv, QueueSpec(clean_range=(0.3, 0.6))) == ["k4", "k3", "k5"]   # inclusive, scored only
    assert keys(store, rv, QueueSpec(split="train", clean_range=(0.0, 0.5))) == ["k2", "k3"]


def test_head_row_has_what_the_page_shows(store, rv):
    q = build_queue(store, rv.dataset_id, store.run(rv.run_id), QueueSpec(), reviewer="ann")
    row = q.head.iloc[0]
    assert len(q.head) == 1
    assert (row["key"], row["caption"], row["image_path"], row["split"], row["clean_prob"]) == \
        ("k2", SCRIPT, "a.png", "train", 0.1)
    assert row["pair_id"] == rv.pair["k2"] and row["image_id"] == rv.image["a"]
    second = build_queue(store, rv.dataset_id, store.run(rv.run_id), QueueSpec(), reviewer="ann", offset=1)
    assert list(second.head["key"]) == ["k4"]


def test_the_rows_kept_by_the_queue_follow_a_reimport(store, rv, tmp_path):
    """The queue keeps the rows it read (no query per key press); re-importing the dataset (a pair's key and split
    changed, same image and caption) makes it read them again."""
    run = store.run(rv.run_id)
    assert build_queue(store, rv.dataset_id, run, QueueSpec(), reviewer="ann").head["key"].tolist() == ["k2"]
    records = store.dataset_records(rv.dataset_id)
    records.loc[records["key"] == "k2", ["key", "split"]] = ["k2-renamed", "val"]
    store.write_dataset("rv", tmp_path / "data", "csv", records, replace=True)
    head = build_queue(store, rv.dataset_id, run, QueueSpec(), reviewer="ann").head
    assert (head["pair_id"].iloc[0], head["key"].iloc[0], head["split"].iloc[0]) == (rv.pair["k2"], "k2-renamed", "val")


def test_the_queue_reads_rows_a_window_ahead_and_keeps_only_that(store, rv, monkeypatch):
    from core import review
    monkeypatch.setattr(review, "ROWS_AHEAD", 2)
    reads = []
    real = store.review_rows
    monkeypatch.setattr(store, "review_rows", lambda ds, run_id, ids: reads.append(list(ids)) or real(ds, run_id, ids))
    run, spec = store.run(rv.run_id), QueueSpec()
    shown = []
    for _ in range(3):
        head = build_queue(store, rv.dataset_id, run, spec, reviewer="ann").head
        shown.append(head["key"].iloc[0])
        act(store, rv.dataset_id, rv.run_id, "ann", "keep", head)
    assert shown == ["k2", "k4", "k3"]                          # most suspicious first, as without the window
    assert reads == [[rv.pair["k2"], rv.pair["k4"]], [rv.pair["k3"], rv.pair["k5"]]]   # k4 came from the window
    assert set(review.queue_order(store, rv.dataset_id, run, spec).rows) == {rv.pair["k3"], rv.pair["k5"]}


def test_bad_specs_are_refused_with_the_reason():
    with pytest.raises(ConcordError, match="unknown queue order 'random'"):
        QueueSpec(order="random")
    with pytest.raises(ConcordError, match="unknown decision state 'maybe'"):
        QueueSpec(state="maybe")
    with pytest.raises(ConcordError, match="review-set order needs a review set"):
        QueueSpec(order="set")
    with pytest.raises(ConcordError, match="0 <= low <= high <= 1"):
        QueueSpec(clean_range=(0.7, 0.2))


# ------------------------------------------------------------------------------------------ decided pairs leave
def test_decided_pairs_leave_and_undo_brings_them_back(store, rv):
    run = store.run(rv.run_id)
    assert act(store, rv.dataset_id, run.id, "ann", "keep", frame(store, rv, "k2")) == "Kept pair k2"
    assert act(store, rv.dataset_id, run.id, "ann", "skip", frame(store, rv, "k4")) == "Skipped pair k4"
    q = build_queue(store, rv.dataset_id, run, QueueSpec(), reviewer="ann", limit=10)
    assert list(q.head["key"]) == ["k3", "k5", "k1", "k6"]
    assert (q.progress.scope, q.progress.decided, q.progress.skipped, q.progress.remaining) == (6, 1, 1, 4)
    # revisiting skipped pairs: a pair decided after the queue was opened leaves it, whatever the action
    opened = store.last_decision_id(rv.dataset_id)
    assert keys(store, rv, QueueSpec(state="skipped"), opened_at=opened) == ["k4"]
    act(store, rv.dataset_id, run.id, "ann", "skip", frame(store, rv, "k4"))
    assert keys(store, rv, QueueSpec(state="skipped"), opened_at=opened) == []
    assert keys(store, rv, QueueSpec(state="skipped")) == ["k4"]              # without opened_at it stays
    assert keys(store, rv, QueueSpec(state="kept")) == ["k2"]
    assert keys(store, rv, QueueSpec(state="any"), opened_at=opened) == ["k2", "k3", "k5", "k1", "k6"]
    assert undo(store, rv.dataset_id, "ann") == "Undid skip of pair k4"
    assert keys(store, rv, QueueSpec(state="skipped"), opened_at=opened) == ["k4"]
    assert undo(store, rv.dataset_id, "ann") == "Undid skip of pair k4"
    assert undo(store, rv.dataset_id, "ann") == "Undid keep of pair k2"
    assert undo(store, rv.dataset_id, "ann") == "Nothing to undo for reviewer 'ann'"
    assert keys(store, rv) == ["k2", "k4", "k3", "k5", "k1", "k6"]
    assert store.meta_frame(rv.dataset_id).empty


def test_queue_exhausted_keeps_its_counts(store, rv):
    run = store.run(rv.run_id)
    act(store, rv.dataset_id, run.id, "ann", "reject", frame(store, rv, "k4"))
    q = build_queue(store, rv.dataset_id, run, QueueSpec(split="val"), reviewer="ann")
    assert q.head.empty
    assert (q.progress.scope, q.progress.decided, q.progress.skipped, q.progress.remaining) == (1, 1, 0, 0)


# ------------------------------------------------------------------------------------------ pace
def test_decision_rate_over_the_latest_stretch():
    t0 = datetime(2024, 1, 1, 12, 0, 0)
    at = lambda *s: [t0 + timedelta(seconds=x) for x in s]  # noqa: E731
    assert decision_rate(at(0, 10, 20, 30)) == pytest.approx(6.0)            # 3 intervals in 30 s
    assert decision_rate(at(0, 1000, 1010, 1040)) == pytest.approx(3.0)      # 2 in 40 s after a 1000 s pause
    assert decision_rate(at(0, 400)) is None                                 # one decision per stretch
    assert decision_rate(at(5, 5, 5)) is None                                # a bulk action: no time between
    assert decision_rate(at(0, 10, 10, 10, 10, 20)) == pytest.approx(6.0)    # a bulk of four is one step of the pace
    assert decision_rate(at(0)) is None and decision_rate([]) is None
    assert ReviewProgress(10, 2, 0, 30, 6.0).eta_minutes == pytest.approx(5.0)
    assert ReviewProgress(10, 2, 0, 30, None).eta_minutes is None


def test_rate_comes_from_this_reviewers_decisions(store, rv):
    run = store.run(rv.run_id)
    assert build_queue(store, rv.dataset_id, run, QueueSpec(), reviewer="ann").progress.rate_per_minute is None
    for key in ("k2", "k4", "k3"):
        act(store, rv.dataset_id, run.id, "ann", "keep", frame(store, rv, key))
    times = store.decision_times(rv.dataset_id, "ann")
    rate = build_queue(store, rv.dataset_id, run, QueueSpec(), reviewer="ann").progress.rate_per_minute
    assert len(times) == 3 and rate == pytest.approx(decision_rate(times))
    assert store.decision_times(rv.dataset_id, "bob") == []


# ------------------------------------------------------------------------------------------ suggestions
def test_suggested_captions_agree_with_the_images_other_captions(store, rv):
    s = suggestions(store, rv.run_id, rv.image["a"], rv.caption[SCRIPT], k=5)
    # image a's other caption k1 = (1,0,0): k4 (0.8) first, then k3, k5, k6 (0.0 each); a's own captions k1
    # and k2 are never suggested
    assert s.caption_basis == "agreement with the image's other captions"
    assert s.captions["caption"].iloc[0] == "a green star"
    assert set(s.captions["caption"].iloc[1:]) == {"a blue square", "a blue square on white", "two yellow hearts"}
    assert np.allclose(s.captions["similarity"], [0.8, 0.0, 0.0, 0.0])
    # caption k2 = (0.6,0,0.8): images c (0.8), its own image a (0.6, left out), b (0.0)
    assert list(s.images["image_path"]) == ["c.png", "b.png"]
    assert np.allclose(s.images["similarity"], [0.8, 0.0])
    assert s.images["image_hash"].notna().all()


def test_a_rejected_sibling_does_not_count_and_without_siblings_the_image_decides(store, rv):
    act(store, rv.dataset_id, rv.run_id, "ann", "reject", frame(store, rv, "k1"))
    s = suggestions(store, rv.run_id, rv.image["a"], rv.caption[SCRIPT], k=1)
    # k1 rejected: image a has no agreeing caption, so the captions nearest to a = (1,0,0): k1 (1.0) and
    # k2 (0.6) are its own; k4 (0.8) is the best other
    assert s.caption_basis == "similarity to the image"
    assert list(s.captions["caption"]) == ["a green star"] and np.allclose(s.captions["similarity"], [0.8])


def test_a_fixed_caption_is_a_sibling(store, rv):
    act(store, rv.dataset_id, rv.run_id, "ann", "fix", frame(store, rv, "k4"), caption="two yellow hearts")
    s = suggestions(store, rv.run_id, rv.image["b"], rv.caption["a blue square"], k=5)
    # image b's agreeing captions: only the fix's "two yellow hearts" (0,0,1) (k4 was replaced, k3 is the
    # pair's own); the others: k5 and k2 (0.8 each), k1 (0.0); the fix's caption is b's now, never suggested
    assert s.caption_basis == "agreement with the image's other captions"
    assert set(s.captions["caption"].iloc[:2]) == {"a blue square on white", SCRIPT}
    assert list(s.captions["caption"].iloc[2:]) == ["a red circle"]
    assert np.allclose(s.captions["similarity"], [0.8, 0.8, 0.0])


def test_suggestions_without_embeddings(store, rv, tmp_path):
    act(store, rv.dataset_id, rv.run_id, "ann", "fix", frame(store, rv, "k3"), caption="a typed caption")
    typed = store.caption_id(rv.dataset_id, "a typed caption", create=False)
    s = suggestions(store, rv.run_id, rv.image["b"], typed, k=1)     # the typed caption has no embedding
    # image b's agreeing caption k4 = (0.8,0.6,0) (k3 was replaced; the typed fix has no embedding):
    # k1 (0.8) is the nearest caption that is not b's
    assert s.images.empty and list(s.captions["caption"]) == ["a red circle"]
    assert np.allclose(s.captions["similarity"], [0.8])
    bare = review_run(store, tmp_path / "other", name="bare", embeddings=False)
    with pytest.raises(NotFound, match="no embeddings"):
        suggestions(store, bare.run_id, bare.image["a"], bare.caption[SCRIPT])



def test_pair_view_is_what_the_card_draws(store, rv, tmp_path):
    from core import review
    root = store.dataset_by_id(rv.dataset_id).root
    view = review.pair_view(store, rv.run_id, frame(store, rv, "k2").iloc[0], root, 5)
    assert (view["key"], view["split"], view["caption"]) == ("k2", "train", SCRIPT)
    assert view["scores"].startswith("clean probability 0.100 · similarity ")
    # as `suggestions` gives them (test above), similarities as the card shows them
    assert [(c["caption"], c["similarity"]) for c in view["captions"]][0] == ("a green star", "0.800")
    assert [c["similarity"] for c in view["captions"]] == ["0.800", "0.000", "0.000", "0.000"]
    assert [i["similarity"] for i in view["images"]] == ["0.800", "0.000"]
    assert view["image"] == image_uri(root, "a.png", frame(store, rv, "k2").iloc[0]["image_hash"],
                                      review.PAIR_IMAGE_SIZE, upscale=True)
    assert all(i["uri"].startswith("data:image/png;base64,") for i in view["images"])
    assert view["image_error"] is view["images_error"] is view["suggestions_error"] is None
    (tmp_path / "data" / "c.png").unlink()    # its file gone (never shown large): the view says so, and has the rest
    gone = review.pair_view(store, rv.run_id, frame(store, rv, "k5").iloc[0], root, 5)
    assert gone["image"] is None and "c.png" in gone["image_error"] and gone["captions"]
    unscored = review.pair_view(store, rv.run_id, frame(store, rv, "k6").iloc[0], root, 5)
    assert unscored["scores"] == "clean probability – · similarity – · weight –"
    bare = review_run(store, tmp_path / "other", name="bare", embeddings=False)
    made = review.pair_view(store, bare.run_id, frame(store, bare, "k1").iloc[0],
                            store.dataset_by_id(bare.dataset_id).root)
    assert "no embeddings" in made["suggestions_error"] and made["captions"] == [] and made["image"]


def test_suggestions_are_kept_per_image_decisions_and_prefetched(store, rv, tmp_path, monkeypatch):
    """Asked twice, a pair's suggestions are made once; a decision on its image's other pair makes them again; a
    prefetched pair's are ready when the page asks; a prefetch that fails leaves the page's call to raise."""
    from core import review
    made = []
    real = review._suggest
    monkeypatch.setattr(review, "_suggest", lambda *args: made.append(args[3:5]) or real(*args))
    first = suggestions(store, rv.run_id, rv.image["a"], rv.caption[SCRIPT], k=5)
    assert suggestions(store, rv.run_id, rv.image["a"], rv.caption[SCRIPT], k=5) is first and len(made) == 1
    act(store, rv.dataset_id, rv.run_id, "ann", "reject", frame(store, rv, "k1"))
    again = suggestions(store, rv.run_id, rv.image["a"], rv.caption[SCRIPT], k=5)
    assert again.caption_basis == "similarity to the image" and len(made) == 2
    image_uri.cache_clear()
    root = store.dataset_by_id(rv.dataset_id).root
    review.prefetch_pair(store, rv.run_id, frame(store, rv, "k3").iloc[0], root, 5).result(timeout=60)
    assert made[-1] == (rv.image["b"], rv.caption["a blue square"])
    shown = suggestions(store, rv.run_id, rv.image["b"], rv.caption["a blue square"], k=5)
    assert len(made) == 3 and shown.caption_basis == "agreement with the image's other captions"
    # the pair's own image at the Review size and its suggested images (a and c) were made with it
    assert image_uri.cache_info().currsize == 1 + len(shown.images) == 3
    bare = review_run(store, tmp_path / "other", name="bare", embeddings=False)
    assert review.prefetch_pair(store, bare.run_id, frame(store, bare, "k1").iloc[0],
                                store.dataset_by_id(bare.dataset_id).root).result(60) is None
    with pytest.raises(NotFound, match="no embeddings"):
        suggestions(store, bare.run_id, bare.image["a"], bare.caption[SCRIPT])

# ------------------------------------------------------------------------------------------ actions
def frame(store, rv: ReviewRun, *keys_: str) -> pd.DataFrame:
    """Queue rows of these pair keys."""
    head = store.review_rows(rv.dataset_id, rv.run_id, list(rv.pair.values()))
    return head[head["key"].isin(keys_)]


def test_fix_reject_and_bulk_with_their_meta_data(store, rv):
    with pytest.raises(ConcordError, match="the image already has this caption as pair k1"):    # it would repeat k1
        act(store, rv.dataset_id, rv.run_id, "ann", "fix", frame(store, rv, "k2"), caption="a red circle")
    assert act(store, rv.dataset_id, rv.run_id, "ann", "fix", frame(store, rv, "k2"), caption="  a red disc ") == \
        "Fixed pair k2 with the caption: a red disc"
    assert act(store, rv.dataset_id, rv.run_id, "bob", "reject", frame(store, rv, "k4")) == "Rejected pair k4"
    assert act(store, rv.dataset_id, rv.run_id, "bob", "keep", frame(store, rv, "k3", "k5")) == "Kept 2 pairs"
    log = store.decisions_frame(rv.dataset_id)
    assert list(zip(log["pair_key"], log["action"], log["reviewer"], log["new_caption"].fillna(""))) == [
        ("k2", "fix", "ann", "a red disc"), ("k4", "reject", "bob", ""), ("k3", "keep", "bob", ""),
        ("k5", "keep", "bob", "")]
    assert set(log["run_id"]) == {rv.run_id}
    assert log["created_at"].iloc[2] == log["created_at"].iloc[3]              # one transaction
    meta = store.meta_frame(rv.dataset_id)
    assert sorted(zip(meta["image_path"], meta["caption"], meta["label"])) == [
        ("a.png", SCRIPT, 0), ("a.png", "a red disc", 1), ("b.png", "a blue square", 1),
        ("b.png", "a green star", 0), ("c.png", "a blue square on white", 1)]


def test_bad_actions_store_nothing(store, rv):
    with pytest.raises(ConcordError, match="a fix needs the new caption"):
        act(store, rv.dataset_id, rv.run_id, "ann", "fix", frame(store, rv, "k2"), caption="   ")
    with pytest.raises(ConcordError, match=r"the pair's own caption \(pair k2\): use Keep"):
        act(store, rv.dataset_id, rv.run_id, "ann", "fix", frame(store, rv, "k2"), caption=SCRIPT)
    with pytest.raises(ConcordError, match="no pair selected"):
        act(store, rv.dataset_id, rv.run_id, "ann", "keep", frame(store, rv))
    with pytest.raises(ConcordError, match="decision needs a reviewer"):
        act(store, rv.dataset_id, rv.run_id, " ", "keep", frame(store, rv, "k1", "k2"))
    assert store.decisions_frame(rv.dataset_id).empty and store.meta_frame(rv.dataset_id).empty


# ------------------------------------------------------------------------------------------ benchmark
def test_bench_review_runs_in_a_temporary_home(capsys, concord_env):
    import json

    from core.cli import main
    assert main(["bench", "review", "--demo-images", "0", "--synthetic", "40", "--steps", "3", "--no-docs",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["synthetic"]
    assert result["pairs"] == 40 and result["steps"] == 3
    assert set(result["ms_p50_p95"]) == {"decision", "page_reads", "queue", "suggestions", "images", "total"}
    assert not (concord_env / "concord.duckdb").exists()          # the user's home was not touched
