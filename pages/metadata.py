"""Meta-data page: the trusted pairs MSCN learns from; add, remove, flip, import; retrain and compare."""
import pandas as pd
import streamlit as st

from core import metadata
from core.errors import ConcordError
from core.jobs import run_key
from core.methods import METHODS, spec
from core.progress import format_eta
from pages.common import current_dataset, get_store, job_manager, submit_new_run, through_app

SHOWN = 1000  # entries drawn in the table at once; filter to reach the rest
SEARCH_LIMIT = 50
LABELS = {1: "positive", 0: "negative"}


def done(message: str) -> None:
    """Show `message` after a rerun with fresh tables (so no selection points at rows that moved)."""
    st.session_state["meta_notice"] = message
    st.session_state["meta_version"] = st.session_state.get("meta_version", 0) + 1
    st.rerun()


def act(action, message) -> None:
    """Run a curation call; report its ConcordError on the page, else rerun with `message(result)`."""
    try:
        result = action()
    except ConcordError as exc:
        st.error(str(exc))
        return
    done(message(result))


def selected(event, frame: pd.DataFrame, column: str) -> list[int]:
    return [int(v) for v in frame.iloc[list(event.selection.rows)][column]]


def entries_tab(store, dataset, entries: pd.DataFrame, version: int) -> None:
    if entries.empty:
        st.info("No meta-data yet. Add pairs found by caption, import a trusted split or a CSV of labels, or keep "
                "and reject pairs in **Review**. Training NPC or MSCN also seeds positives from the `val` split.")
        return
    c1, c2 = st.columns(2)
    show = c1.radio("Show", ["all", "positives", "negatives"], horizontal=True, key="meta_show")
    sources = c2.multiselect("Sources", sorted(entries["source"].unique()), key="meta_sources",
                             placeholder="all sources")
    view = entries
    if show != "all":
        view = view[view["label"] == (1 if show == "positives" else 0)]
    if sources:
        view = view[view["source"].isin(sources)]
    table = pd.DataFrame({"entry": view["entry_id"], "label": view["label"].map(LABELS), "source": view["source"],
                          "pair": view["pair_id"], "split": view["split"], "caption": view["caption"],
                          "image": view["image_path"]}).head(SHOWN).reset_index(drop=True)
    if len(view) > SHOWN:
        st.caption(f"Showing the first {SHOWN:,} of {len(view):,} entries; filter to reach the others.")
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="multi-row",
                         key=f"meta_entries_{version}")
    chosen = selected(event, table, "entry")
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Flip label", disabled=not chosen, key="meta_flip",
                 help="Positives become negatives and back; the entries become manual ones."):
        act(lambda: metadata.flip_entries(store, dataset.id, chosen), lambda new: f"Flipped {len(new)} entries.")
    if c2.button("Remove", disabled=not chosen, key="meta_remove"):
        act(lambda: metadata.remove_entries(store, dataset.id, chosen), lambda n: f"Removed {n} entries.")


def add_tab(store, dataset, splits: list[str], version: int) -> None:
    c1, c2 = st.columns([3, 1])
    text = c1.text_input("Find pairs", key="meta_search", placeholder="words of the caption, or a pair key")
    split = c2.selectbox("Split", ["all splits", *splits], key="meta_search_split")
    if not text.strip():
        return
    found = metadata.search_pairs(store, dataset.id, text, split=None if split == "all splits" else split,
                                  limit=SEARCH_LIMIT)
    if found.empty:
        st.caption("No pair matches.")
        return
    table = pd.DataFrame({"pair": found["pair_id"], "key": found["key"], "split": found["split"],
                          "caption": found["caption"], "now": found["meta_label"].map(LABELS).fillna("—"),
                          "image": found["image_path"]})
    if len(found) == SEARCH_LIMIT:
        st.caption(f"The first {SEARCH_LIMIT} matches; refine the words to see others.")
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="multi-row",
                         key=f"meta_found_{version}")
    chosen = selected(event, table, "pair")
    c1, c2, _ = st.columns([1, 1, 4])
    for col, label in ((c1, 1), (c2, 0)):
        if col.button(f"Add as {LABELS[label]}", disabled=not chosen, key=f"meta_add_{label}"):
            act(lambda: metadata.add_pairs(store, dataset.id, chosen, label),
                lambda ids: f"Added {len(ids)} {LABELS[label]}{'' if len(ids) == 1 else 's'}.")


def import_tab(store, dataset, splits: list[str], version: int) -> None:
    st.subheader("A trusted split")
    trusted = [s for s in splits if s != metadata.TRAIN_SPLIT]
    if trusted:
        c1, c2 = st.columns(2)
        split = c1.selectbox("Split", trusted, key="meta_import_split")
        label = c2.radio("As", [1, 0], format_func=lambda v: LABELS[v] + "s", horizontal=True,
                         key="meta_import_label")
        if st.button("Import split", key="meta_import_split_go"):
            act(lambda: metadata.import_split(store, dataset.id, split, label),
                lambda n: f"Imported {n} pairs of split {split!r} as {LABELS[label]}s "
                          "(pairs already in the meta-data kept their entry).")
    else:
        st.caption(f"The dataset has no split besides {metadata.TRAIN_SPLIT!r}, the noisy one being cleaned.")
    st.subheader("A CSV of labels")
    upload = st.file_uploader("CSV with columns pair_id, label (1 matched, 0 mismatched)", type=["csv"],
                              key=f"meta_csv_{version}")
    store_ids = st.checkbox("pair_id holds store ids (not the keys of the imported file)", key="meta_csv_store_ids")
    if st.button("Import CSV", disabled=upload is None, key="meta_import_csv"):
        try:
            text = upload.getvalue().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            st.error(f"{upload.name}: not UTF-8 text ({exc}); nothing was stored")
            return
        act(lambda: metadata.import_csv_text(store, dataset.id, text, upload.name, store_ids),
            lambda n: f"Imported {n} {'entry' if n == 1 else 'entries'} from {upload.name}.")


@st.fragment(run_every=1.0)
def retrain_progress(run_id: int) -> None:
    """The retrain's live progress; a full rerun once it has ended, to show its agreement."""
    job = job_manager().find(run_key(run_id))
    if job is None:
        st.rerun(scope="app")
    p = job.progress
    st.progress(p.fraction or 0.0, text=f"Run {run_id} {job.state}: {p.message or p.stage} · "
                                        f"ETA {format_eta(p.eta)}")


def agreement(store, dataset) -> None:
    history = metadata.agreement_history(store, dataset.id)
    if not history:
        st.caption("No finished run yet.")
        return
    new = history[0]
    fmt = lambda a: "–" if a["rate"] is None else f"{a['agree']} of {a['total']} ({a['rate']:.0%})"  # noqa: E731
    if new["total"] == 0:
        st.caption("No decisions yet: keep, reject or fix pairs in **Review** to see which runs agree with you.")
    cols = st.columns(len(history))
    for col, a, prev in zip(cols, history, history[1:] + [None]):
        delta = (None if prev is None or a["rate"] is None
                 else f"{a['agree'] - prev['agree']:+d} vs run {prev['run_id']}")
        col.metric(f"Run {a['run_id']} · {a['method']} agrees with", fmt(a), delta=delta)
        col.caption("AUROC on the other pairs: " + ("–" if a["auroc"] is None else f"{a['auroc']:.3f}"))


def retrain_section(store, dataset) -> None:
    base = metadata.retrain_base(store, dataset.id)
    names = list(METHODS)
    default = base.method if base is not None else metadata.RETRAIN_DEFAULT_METHOD
    method = st.selectbox("Method", names, index=names.index(default), format_func=lambda m: METHODS[m].title,
                          key="meta_retrain_method")
    if base is not None:
        same = "its settings, " if method == base.method else ""
        st.caption(f"Like run {base.id} ({base.method} · {base.model} · {base.regime}): {same}model, regime, "
                   "device, seed and threshold, with the meta-data as it is now.")
    if not spec(method).uses_meta:
        st.caption(f"{method} does not read the meta-data: its scores will not respond to these entries.")
    run_id = st.session_state.get("meta_retrain_run")
    running = run_id is not None and job_manager().find(run_key(run_id)) is not None
    if st.button("Retrain", type="primary", disabled=running, key="meta_retrain"):
        submit_new_run(lambda: metadata.start_retrain(store, dataset.name, method), "meta_retrain_run")
    if running:
        retrain_progress(run_id)
    elif run_id is not None:
        run = store.run(run_id)
        if run.state == "finished":
            st.success(f"Run {run_id} finished.")
        else:
            st.error(f"Run {run_id} {run.state}" + (f": {run.error.splitlines()[0]}" if run.error else "."))
    agreement(store, dataset)


through_app()
st.title("Meta-data")
dataset = current_dataset()
if dataset is not None:
    store = get_store()
    version = st.session_state.get("meta_version", 0)
    notice = st.session_state.pop("meta_notice", None)
    if notice:
        st.success(notice)
    summary = metadata.meta_summary(store, dataset.id)
    c1, c2, c3 = st.columns(3)
    c1.metric("Positives", summary["positives"])
    c2.metric("Negatives", summary["negatives"])
    c3.metric("Balance", "–" if summary["balance"] is None else f"{summary['balance']:.0%} positive")
    sources = [f"{s}: {c['positives']} + / {c['negatives']} −" for s, c in summary["by_source"].items()
               if c["positives"] or c["negatives"]]
    if sources:
        st.caption(" · ".join(sources))
    for warning in summary["warnings"]:
        st.warning(warning)
    splits = list(store.dataset_summary(dataset.id)["splits"])
    entries_t, add_t, import_t, retrain_t = st.tabs(["Entries", "Add pairs", "Import", "Retrain"])
    with entries_t:
        entries_tab(store, dataset, store.meta_frame(dataset.id), version)
    with add_t:
        add_tab(store, dataset, splits, version)
    with import_t:
        import_tab(store, dataset, splits, version)
    with retrain_t:
        retrain_section(store, dataset)
