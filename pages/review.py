"""Review page: decide on suspected pairs one at a time, keyboard first, or several at once in a grid.

One pair at a time is the card (`pages/review_card.py`): the browser shows the next pair the moment a key goes
down and the server stores each decision as the card's log reaches it, with the sidebar's reviewer name. The grid
stores its actions in a callback. Captions are shown as text, never as markdown or HTML. A review set picked on
Explore arrives as `st.session_state["review_set"]` (its id).
"""
import secrets

import pandas as pd
import streamlit as st

from core import review
from core.errors import ConcordError
from core.thumbnails import image_uri
from core.detect.explain import NO_FLAG_FUSED, NO_FLAG_TERMS, context_summary, explain_pair, fused_summary
from core.detect.method import METHOD as FUSED, submit_refit_if_due
from pages.common import current_dataset, finished_run, get_store, job_manager, reviewer, through_app
from pages.review_card import mount as review_card, pending_entries

K_SUGGESTIONS = 5
WINDOW = 4   # queue pairs the card holds (the one on show and those after it): shown at once on a key press
KEYS = ("Keys: K keep · X reject · F fix (typed caption, else suggestion 1) · S skip · U undo · "
        "1–5 fix with that suggestion")


def notify(kind: str, text: str) -> None:
    st.session_state["review_notice"] = (kind, text)


def on_act(where: tuple[int, int], action: str, rows: list[dict], caption: str | None = None) -> None:
    """Store `action` on `rows`: the pairs shown, under the (dataset id, run id) shown, when the button was drawn."""
    try:
        notify("done", review.act(get_store(), where[0], where[1], reviewer(), action, pd.DataFrame(rows), caption))
    except ConcordError as exc:
        notify("error", str(exc))
        return
    submit_refit_if_due(get_store(), job_manager(), where[1])   # a fused run reorders the queue as you review
    for r in rows:
        st.session_state.pop(f"review_pick_{r['pair_id']}", None)


def apply_card_log() -> None:
    """Store the card's decisions this session has not stored yet, each once, in the order made (the card's
    callback; the fragment calls it too, for a state set without the browser, as tests do)."""
    token = st.session_state.setdefault("review_token", secrets.token_hex(8))
    for e in pending_entries(st.session_state.get("review_card") or {}, token,
                             st.session_state.get("review_applied", 0)):
        st.session_state["review_applied"] = e["seq"]     # first: an entry is never stored twice
        where = (int(e["where"][0]), int(e["where"][1]))
        if e["action"] == "undo":
            on_undo(where[0])
        else:
            pair = e["pair"]
            on_act(where, e["action"], [{"pair_id": int(pair["pair_id"]), "key": str(pair["key"]),
                                         "caption": str(pair["caption"])}], e.get("caption"))


def on_undo(dataset_id: int) -> None:
    try:
        notify("done", review.undo(get_store(), dataset_id, reviewer()))
    except ConcordError as exc:
        notify("error", str(exc))


def on_bulk(where: tuple[int, int], action: str, rows: list[dict]) -> None:
    on_act(where, action, [r for r in rows if st.session_state.get(f"review_pick_{r['pair_id']}")])


def on_select_all(rows: list[dict], value: bool) -> None:
    for r in rows:
        st.session_state[f"review_pick_{r['pair_id']}"] = value


def show_images(data_root: str, images: pd.DataFrame, size: int) -> None:
    """The images (image_path, image_hash) in one element, inline (no request of their own after the grid)."""
    try:
        uris = [image_uri(data_root, p, h, size) for p, h in zip(images["image_path"], images["image_hash"])]
    except ConcordError as exc:
        st.warning(str(exc))
        return
    if uris:
        st.image(uris, width=size)


NO_SET = ("The review-set order needs a review set: pick one under Review set (Explore makes them from a box or "
          "lasso on its map; a set asked for that no longer exists is not offered).")


def queue_controls(sets: pd.DataFrame, splits: list[str]) -> review.QueueSpec:
    """The order and filter widgets; returns the queue they describe."""
    with st.expander("Queue: order and filter", expanded=st.session_state.get("review_order") == "set"):
        c1, c2, c3 = st.columns(3)
        order = c1.selectbox("Order", list(review.ORDERS), format_func=review.ORDERS.get, key="review_order")
        set_names = dict(zip(sets["set_id"].astype(int), sets["name"]))
        for key, known in (("review_set_id", set_names), ("review_split", splits)):
            if st.session_state.get(key) not in known:   # gone, or of another dataset
                st.session_state[key] = None
        set_id = c2.selectbox("Review set", [None, *set_names], key="review_set_id",
                              format_func=lambda s: "All pairs" if s is None else f"{set_names[s]} (set {s})")
        state = c3.selectbox("Decision state", list(review.STATES), key="review_state",
                             help="undecided: not yet decided. Other states revisit earlier decisions; "
                                  "a pair decided again leaves the queue.")
        c1, c2, c3 = st.columns(3)
        split = c1.selectbox("Split", [None, *splits], key="review_split", format_func=lambda s: s or "Every split")
        text = c2.text_input("Caption contains (or pair key)", key="review_text")
        low, high = c3.slider("Clean probability", 0.0, 1.0, (0.0, 1.0), 0.01, key="review_range")
        if order == "set" and set_id is None:
            st.info(f"{NO_SET} Meanwhile the queue is most suspicious first.")
            order = "suspicious"
    return review.QueueSpec(order=order, state=state, split=split, text=text, set_id=set_id,
                            clean_range=None if (low, high) == (0.0, 1.0) else (low, high))


def pace(p: review.ReviewProgress) -> str:
    """The progress line's end: this reviewer's pace and the time left at it, where known."""
    rate = "" if p.rate_per_minute is None else f" · {p.rate_per_minute:.1f} per minute"
    return rate + ("" if p.eta_minutes is None else f" · about {p.eta_minutes:,.0f} min left")


def show_progress(p: review.ReviewProgress) -> None:
    done = p.decided + p.skipped
    st.progress(done / p.scope if p.scope else 0.0,
                text=f"{p.decided:,} decided · {p.skipped:,} skipped · {p.remaining:,} left in this queue "
                     f"(of {p.scope:,}){pace(p)}")


def flag_line(pair_id: int) -> str | None:
    """Which signals flag the pair: under a fused run, or an attached set whose shards carry consensus terms
    (their `signal_lows` recorded at attach); or why an attached set's terms cannot be read now. None for a run
    without signals."""
    lows = run.metrics.get("signal_lows", {})
    if run.method != FUSED and not lows:
        return None
    missing = store.extras_unavailable(run.id)
    if missing is not None:
        return missing
    none = NO_FLAG_FUSED if run.method == FUSED else NO_FLAG_TERMS
    return explain_pair(store.pair_extras(run.id, pair_id), lows, none)


def card(queue: review.Queue, state: str) -> None:
    """The card over the queue's first `WINDOW` pairs; the pair after them is made in the background meanwhile."""
    views = [{**review.pair_view(store, run.id, row, dataset.root, K_SUGGESTIONS, queue.decisions),
              "flag": flag_line(int(row["pair_id"]))} for _, row in queue.head.iloc[:WINDOW].iterrows()]
    p = queue.progress
    notice = st.session_state.pop("review_notice", None)
    review_card(key="review_card", on_log_change=apply_card_log, default={"log": []}, data={
        "token": st.session_state["review_token"], "acked": st.session_state.get("review_applied", 0),
        "where": [dataset.id, run.id], "pairs": views, "notice": None if notice is None else list(notice),
        "keys": KEYS, "progress": {"scope": p.scope, "decided": p.decided, "skipped": p.skipped,
                                   "remaining": p.remaining, "pace": pace(p), "exact": state == "undecided"}})
    if len(queue.head) > WINDOW:
        review.prefetch_pair(store, run.id, queue.head.iloc[WINDOW], dataset.root, K_SUGGESTIONS, queue.decisions)


def bulk(head: pd.DataFrame) -> None:
    rows = [{"pair_id": int(r.pair_id), "key": r.key, "caption": r.caption} for r in head.itertuples()]
    b = st.container(horizontal=True, wrap=True)  # buttons as wide as their labels, wrapping, never cut
    b.button("Keep selected", key="review_bulk_keep", type="primary", on_click=on_bulk, args=(where, "keep", rows))
    b.button("Reject selected", key="review_bulk_reject", on_click=on_bulk, args=(where, "reject", rows))
    b.button("Select all", key="review_bulk_all", on_click=on_select_all, args=(rows, True))
    b.button("Select none", key="review_bulk_none", on_click=on_select_all, args=(rows, False))
    b.button("Undo", key="review_undo", shortcut="U", on_click=on_undo, args=(dataset.id,))
    cols = st.columns(4)
    for i, r in enumerate(head.itertuples()):
        with cols[i % 4]:
            show_images(dataset.root, head.iloc[[i]], 128)
            st.text(r.caption)
            clean = "–" if pd.isna(r.clean_prob) else f"{r.clean_prob:.3f}"
            st.checkbox(f"Select · clean {clean}", key=f"review_pick_{int(r.pair_id)}")


through_app()
# a review set sent from Explore, taken before any early stop: left in the session, it would send Explore back here
incoming = st.session_state.pop("review_set", None)
st.title("Review")
dataset = current_dataset()
if dataset is None:
    st.stop()
store = get_store()
run = finished_run(store, dataset, "review_run",
                   "No finished run for this dataset yet: score its pairs on the Train page, then review them here.")

if incoming is not None:
    st.session_state["review_order"] = "set"
    st.session_state["review_set_id"] = int(incoming)
try:
    spec = queue_controls(store.review_sets(dataset.id), store.split_names(dataset.id))
except ConcordError as exc:
    st.error(str(exc))
    st.stop()
mode = st.radio("Mode", ["One pair", "Bulk grid"], horizontal=True, key="review_mode", label_visibility="collapsed")
n = 1
if mode == "Bulk grid":
    n = st.select_slider("Pairs in the grid", [8, 12, 24, 48], value=12, key="review_bulk_n")

where = (dataset.id, run.id)


@st.fragment
def decide_on_queue(spec: review.QueueSpec, n: int, mode: str) -> None:
    """The queue's head, its progress and the actions on it. A decision reruns only this fragment: the rest of
    the page (sidebar, run and queue controls) stays as it is."""
    apply_card_log()
    opened = st.session_state.get("review_opened")
    if opened is None or opened[0] != (dataset.id, run.id, spec):   # a new queue: decisions from now on take pairs out
        opened = ((dataset.id, run.id, spec), store.last_decision_id(dataset.id))
        st.session_state["review_opened"] = opened
    current = store.run(run.id)            # a refit since the page ran reorders the queue
    if current.method == FUSED and current.metrics.get("fused"):
        st.caption(" ".join(filter(None, [fused_summary(current.metrics["fused"]),
                                          context_summary(current.metrics.get("context", {}))])))
    queue = review.build_queue(store, dataset.id, current, spec, reviewer=reviewer(), opened_at=opened[1],
                               limit=n if mode == "Bulk grid" else WINDOW + 1)   # one pair: the card's window
    if mode != "Bulk grid":
        card(queue, spec.state)
        return
    notice = st.session_state.pop("review_notice", None)
    if notice is not None:
        (st.error if notice[0] == "error" else st.text)(notice[1])
    show_progress(queue.progress)
    if queue.head.empty:
        st.info("Nothing left in this queue. Pick another order or filter above, or undo the last decision.")
        st.button("Undo", key="review_undo", shortcut="U", on_click=on_undo, args=(dataset.id,))
    else:
        bulk(queue.head)


decide_on_queue(spec, n, mode)
