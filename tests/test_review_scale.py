"""The review queue at scale: the queue kept as ordered ids (`core.review.queue_order`) gives, page after
page and through decisions, skips and undos, exactly the pairs and order its definition gives (each order,
with filters, ties and unscored pairs), computed here independently from the store's frames."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.review import STATES, QueueSpec, act, build_queue, queue_order, undo

N = 30_000


@pytest.fixture
def big(store):
    rng = np.random.default_rng(7)
    rows = pd.DataFrame({"image_path": [f"img{i}.png" for i in range(N)],
                         "image_hash": [f"h{i}" for i in range(N)], "width": 8, "height": 8, "nbytes": 100,
                         "caption": [f"caption {i % 977} {'blue' if i % 5 == 0 else 'red'}" for i in range(N)],
                         "split": rng.choice(["train", "val", "test"], size=N, p=[0.8, 0.1, 0.1]),
                         "key": [f"k{i}" for i in range(N)]})
    ds = store.write_dataset("big", "/nowhere", "csv", rows)["dataset_id"]
    pairs = store.pairs_frame(ds)
    run = store.create_run(ds, "b1", "concord-tiny", seed=0, threshold=0.4)
    scored = pairs["pair_id"].to_numpy()[rng.random(N) < 0.97]            # some pairs unscored
    clean = np.round(rng.random(len(scored)), 3)                          # many ties
    store.write_scores(run, scored, clean, clean, clean)
    store.update_run(run, state="finished")
    return ds, store.run(run), pairs


def expected(store, ds: int, run, spec: QueueSpec, opened_at: int | None) -> list[int]:
    """The queue by its definition (core.review's docstring), from pairs_frame and current_decisions."""
    f = store.pairs_frame(ds, run.id)
    cur = store.current_decisions(ds).set_index("pair_id")
    f["decision"] = cur["action"].reindex(f["pair_id"]).to_numpy()
    f["decision_id"] = cur["decision_id"].reindex(f["pair_id"]).to_numpy()
    if spec.set_id is not None:
        members = store.review_set_pair_ids(spec.set_id)
        f = f[f["pair_id"].isin(members)].assign(
            set_position=lambda x: x["pair_id"].map({p: i for i, p in enumerate(members)}))
    if spec.split is not None:
        f = f[f["split"] == spec.split]
    if spec.text.strip():
        t = spec.text.strip()
        f = f[f["caption"].str.lower().str.contains(spec.text.lower(), regex=False) | (f["key"] == t)]
    if spec.clean_range is not None:
        f = f[f["clean_prob"].between(*spec.clean_range)]
    state = f["decision"].fillna("none").isin(STATES[spec.state])
    if opened_at is not None:
        state &= f["decision_id"].isna() | (f["decision_id"] <= opened_at)
    f = f[state]
    by = {"suspicious": f["clean_prob"], "uncertain": (f["clean_prob"] - run.threshold).abs(),
          "position": f["position"], "set": f.get("set_position")}[spec.order]
    f = f.assign(_k=by.to_numpy(), _null=by.isna().to_numpy()).sort_values(
        ["_null", "_k", "position"], kind="stable")
    return f["pair_id"].astype(int).tolist()


def got(store, ds: int, run, spec: QueueSpec, opened_at: int | None, limit: int, offset: int = 0) -> list[int]:
    return build_queue(store, ds, run, spec, reviewer="ann", opened_at=opened_at, limit=limit,
                       offset=offset).head["pair_id"].astype(int).tolist()


def test_every_order_and_filter_matches_the_definition_through_decisions(store, big):
    ds, run, pairs = big
    ids = pairs["pair_id"].to_numpy()
    set_id = store.create_review_set(ds, "look", ids[::-37][:500].tolist())
    specs = [QueueSpec(), QueueSpec(order="uncertain"), QueueSpec(order="position"),
             QueueSpec(order="set", set_id=set_id), QueueSpec(set_id=set_id), QueueSpec(split="val"),
             QueueSpec(text="BLUE"), QueueSpec(text=" k123 "), QueueSpec(clean_range=(0.2, 0.3), split="train"),
             QueueSpec(state="skipped"), QueueSpec(state="any", order="uncertain")]
    rng = np.random.default_rng(1)
    # decisions before the queue opens: keeps, rejects, skips on random pairs (and on the heads of the queues)
    for action in ("keep", "reject", "skip", "skip"):
        chosen = rng.choice(ids, size=300, replace=False).tolist()
        store.decide(ds, chosen, action, "ann")
    opened = store.last_decision_id(ds)
    for spec in specs:
        want = expected(store, ds, run, spec, opened)
        assert got(store, ds, run, spec, opened, limit=len(want) + 5) == want, spec
        assert got(store, ds, run, spec, opened, limit=7, offset=3) == want[3:10], spec
    # after the queue opened: the head decided one by one, a skip revisited, an undo
    spec = QueueSpec(order="uncertain")
    for _ in range(5):
        head = build_queue(store, ds, run, spec, reviewer="ann", opened_at=opened, limit=1).head
        act(store, ds, run.id, "ann", "keep", head)
    skipped = build_queue(store, ds, run, QueueSpec(state="skipped"), reviewer="ann", opened_at=opened).head
    act(store, ds, run.id, "ann", "reject", skipped)
    undo(store, ds, "ann")          # the reject: the skipped pair is back among the skipped
    undo(store, ds, "ann")          # the fifth keep: that pair is back at the head
    for spec in specs:
        want = expected(store, ds, run, spec, opened)
        assert got(store, ds, run, spec, opened, limit=len(want) + 5) == want, spec
    q = build_queue(store, ds, run, QueueSpec(), reviewer="ann", opened_at=opened, limit=0)
    assert q.progress.scope == N and q.progress.remaining == len(expected(store, ds, run, QueueSpec(), opened))


def test_the_order_is_computed_once_per_queue(store, big, monkeypatch):
    ds, run, _ = big
    calls = []
    real = store.review_scope
    monkeypatch.setattr(store, "review_scope", lambda *a, **k: calls.append(k) or real(*a, **k))
    spec = QueueSpec(split="test")
    first = queue_order(store, ds, run, spec)
    for _ in range(3):                        # key presses, with a decision between them
        head = build_queue(store, ds, run, spec, reviewer="ann", limit=1).head
        act(store, ds, run.id, "ann", "keep", head)
    assert len(calls) == 1 and queue_order(store, ds, run, spec) is first
    store.set_threshold(run.id, 0.7)          # another threshold: the uncertain order is another queue
    queue_order(store, ds, store.run(run.id), QueueSpec(order="uncertain"))
    queue_order(store, ds, store.run(run.id), QueueSpec(order="uncertain"))
    assert len(calls) == 2
