"""Review page: decide on suspected pairs one at a time, keyboard first, or several at once in a grid.

Every action is stored the moment it is made (a callback, before the page reruns on the next pair), with
the sidebar's reviewer name. Captions are shown with `st.text`, never as markdown or HTML. A review set
picked on Explore arrives as `st.session_state["review_set"]` (its id).
"""
import pandas as pd
import streamlit as st

from core import review
from core.errors import ConcordError
from core.thumbnails import image_uri
from core.detect.explain import NO_FLAG_FUSED, NO_FLAG_TERMS, explain_pair, fused_summary
from core.detect.method import METHOD as FUSED, submit_refit_if_due
from pages.common import current_dataset, get_store, job_manager, reviewer, through_app

K_SUGGESTIONS = 5
KEYS = "Keys: K keep · X reject · F fix (typed caption, else suggestion 1) · S skip · U undo · 1–5 fix with that suggestion"


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
    if action == "fix":
        st.session_state["review_fix_text"] = ""
    for r in rows:
        st.session_state.pop(f"review_pick_{r['pair_id']}", None)


def on_fix(where: tuple[int, int], row: dict, first_suggestion: str | None) -> None:
    """Fix with the typed caption, or else the first suggestion."""
    on_act(where, "fix", [row], st.session_state.get("review_fix_text", "").strip() or first_suggestion)


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


def show_images(data_root: str, images: pd.DataFrame, size: int, captions: list[str] | None = None,
                large: bool = False) -> None:
    """The images (image_path, image_hash) in one element, inline (no request of their own after the pair)."""
    try:
        uris = [image_uri(data_root, p, h, size, upscale=large) for p, h in zip(images["image_path"], images["image_hash"])]
    except ConcordError as exc:
        st.warning(str(exc))
        return
    if uris:
        st.image(uris, caption=captions, width=size)


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
    return review.QueueSpec(order=order, state=state, split=split, text=text, set_id=set_id,
                            clean_range=None if (low, high) == (0.0, 1.0) else (low, high))


def show_progress(p: review.ReviewProgress) -> None:
    done = p.decided + p.skipped
    pace = "" if p.rate_per_minute is None else f" · {p.rate_per_minute:.1f} per minute"
    eta = "" if p.eta_minutes is None else f" · about {p.eta_minutes:,.0f} min left"
    st.progress(done / p.scope if p.scope else 0.0,
                text=f"{p.decided:,} decided · {p.skipped:,} skipped · {p.remaining:,} left in this queue "
                     f"(of {p.scope:,}){pace}{eta}")


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


def one_pair(pair: pd.Series, decisions: pd.DataFrame) -> None:
    """The pair, its actions and the suggestions, in few elements: each one costs the browser time on a key press."""
    row = {"pair_id": int(pair["pair_id"]), "key": pair["key"], "caption": pair["caption"]}
    left, right = st.columns([3, 2])
    with left:
        show_images(dataset.root, pair.to_frame().T, review.PAIR_IMAGE_SIZE, large=True)
        st.text(pair["caption"])
        st.text(f"pair {pair['key']} · split {pair['split']}")
        fmt = lambda v: "–" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
        st.text(f"clean probability {fmt(pair['clean_prob'])} · similarity {fmt(pair['similarity'])} · "
                f"weight {fmt(pair['weight'])}")
        line = flag_line(int(pair["pair_id"]))
        if line is not None:
            st.text(line)
    try:
        sugg = review.suggestions(store, run.id, int(pair["image_id"]), int(pair["caption_id"]), K_SUGGESTIONS,
                                  decisions)
    except ConcordError as exc:
        sugg = None
        right.warning(str(exc))
    first = None if sugg is None or sugg.captions.empty else sugg.captions["caption"].iloc[0]
    with right:
        b = st.container(horizontal=True, wrap=True)  # buttons as wide as their labels, wrapping, never cut
        b.button("Keep", key="review_keep", shortcut="K", type="primary", on_click=on_act,
                 args=(where, "keep", [row]))
        b.button("Reject", key="review_reject", shortcut="X", on_click=on_act, args=(where, "reject", [row]))
        b.button("Fix", key="review_fix", shortcut="F", on_click=on_fix, args=(where, row, first))
        b.button("Skip", key="review_skip", shortcut="S", on_click=on_act, args=(where, "skip", [row]))
        b.button("Undo", key="review_undo", shortcut="U", on_click=on_undo, args=(dataset.id,))
        st.text_input("Fix with this caption", key="review_fix_text",
                      placeholder="type a caption, or press 1–5 to use a suggestion")
        st.caption(KEYS)
        if sugg is not None:
            st.subheader("Best-matching captions for this image")
            st.caption(f"From elsewhere in the dataset, by {sugg.caption_basis} under this run.")
            if sugg.captions.empty:
                st.caption("None: this image has no embedding under this run.")
            else:
                use = st.container(horizontal=True, wrap=True)
                for i, s in enumerate(sugg.captions.itertuples()):
                    use.button("Use", key=f"review_use_{i}", shortcut=str(i + 1),      # its key shows the number
                               help="Fix: re-pair the image with this caption", on_click=on_act,
                               args=(where, "fix", [row], s.caption))
                st.text("\n".join(f"{i + 1}  {s.similarity:.3f}  {s.caption}"
                                   for i, s in enumerate(sugg.captions.itertuples())))
            st.subheader("Best-matching images for this caption")
            if sugg.images.empty:
                st.caption("None: this caption has no embedding under this run.")
            show_images(dataset.root, sugg.images, review.SUGGESTED_IMAGE_SIZE,
                        captions=[f"{v:.3f}" for v in sugg.images["similarity"]])


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
st.title("Review")
dataset = current_dataset()
if dataset is None:
    st.stop()
store = get_store()
runs = store.runs(dataset.id, state="finished")
if not runs:
    st.info("No finished run for this dataset yet: score its pairs on the Train page, then review them here.")
    st.stop()

incoming = st.session_state.pop("review_set", None)   # a review set sent from Explore
if incoming is not None:
    st.session_state["review_order"] = "set"
    st.session_state["review_set_id"] = int(incoming)

by_id = {r.id: r for r in runs}
if st.session_state.get("review_run") not in by_id:
    st.session_state["review_run"] = runs[0].id
run = by_id[st.selectbox("Run", list(by_id), format_func=lambda i: review.run_label(by_id[i]), key="review_run")]
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
    """The queue's head, its progress and the actions on it. A decision reruns only this fragment: a key press
    redraws the next pair, not the rest of the page (sidebar, run and queue controls stay as they are)."""
    opened = st.session_state.get("review_opened")
    if opened is None or opened[0] != (dataset.id, run.id, spec):   # a new queue: decisions from now on take pairs out
        opened = ((dataset.id, run.id, spec), store.last_decision_id(dataset.id))
        st.session_state["review_opened"] = opened
    current = store.run(run.id)            # a refit since the page ran reorders the queue
    if current.method == FUSED and current.metrics.get("fused"):
        st.caption(fused_summary(current.metrics["fused"]))
    queue = review.build_queue(store, dataset.id, current, spec, reviewer=reviewer(), opened_at=opened[1],
                               limit=n if mode == "Bulk grid" else 2)      # one pair: and the next, to prefetch
    notice = st.session_state.pop("review_notice", None)
    if notice is not None:
        (st.error if notice[0] == "error" else st.text)(notice[1])
    show_progress(queue.progress)
    if queue.head.empty:
        st.info("Nothing left in this queue. Pick another order or filter above, or undo the last decision.")
        st.button("Undo", key="review_undo", shortcut="U", on_click=on_undo, args=(dataset.id,))
    elif mode == "Bulk grid":
        bulk(queue.head)
    else:
        one_pair(queue.head.iloc[0], queue.decisions)
        if len(queue.head) > 1:    # while the person looks at this pair, the next one's suggestions are made
            review.prefetch_pair(store, run.id, queue.head.iloc[1], dataset.root, K_SUGGESTIONS, queue.decisions)


decide_on_queue(spec, n, mode)
