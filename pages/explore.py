"""Explore page: the map of a run's pairs, a box or lasso selection to review, score histograms, the threshold."""
import streamlit as st

from core import artifacts
from core.errors import ConcordError
from core.explore import (CATEGORIES, TABLE_ROWS, MapSettings, add_extra, colour_options, extra_columns,
                          has_ground_truth, histogram_figure, map_figure, map_points, no_value_note, order_selection,
                          projection_job_key, run_frame, run_frame_version, selected_pairs, selection_table,
                          threshold_summary)
from core.projection import ProjectionSettings, cached_projection, pca_run, project_run
from pages.common import current_dataset, finished_run, get_store, job_manager, through_app

LAYOUTS = ("UMAP", "PCA")


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


@st.fragment(run_every=2.0)
def umap_status(key: str) -> None:
    """The UMAP job's progress, polled; the whole page redraws once it has ended."""
    job = job_manager().latest(key)
    if job is None or not job.active:
        st.rerun(scope="app")
    c1, c2 = st.columns([5, 1])
    c1.progress(job.progress.fraction or 0.0,
                text=f"UMAP {job.state}: {job.progress.message or 'waiting'} — the PCA view is shown meanwhile")
    if c2.button("Cancel", key="explore_umap_cancel"):
        job_manager().cancel(job.id)


def umap_coordinates(store, run_id: int, settings: ProjectionSettings):
    """The run's UMAP map if ready (else None), starting or reporting its background job."""
    coords = cached_projection(get_store(), run_id, settings)
    if coords is not None:
        return coords
    manager, key = job_manager(), projection_job_key(run_id, settings)
    job = manager.latest(key)
    if job is not None and job.state == "finished":
        return job.result
    if job is not None and job.state in ("failed", "cancelled"):
        st.warning(f"UMAP {job.state}{': ' + job.error if job.error else ''}. The PCA view is shown.")
        if not st.button("Compute UMAP again", key="explore_umap_retry"):
            return None
    if job is None or not job.active:
        manager.submit("projection", f"UMAP map of run {run_id}",
                       lambda progress: project_run(store, run_id, settings, progress), key=key, device="cpu")
    umap_status(key)
    return None


def current_frame(store, dataset_id: int, run_id: int) -> tuple:
    """(version, frame): the run's `run_frame`, kept in the session while nothing it depends on changed (with the
    extra score columns read for the map so far), so a selection's rerun does not read a million pairs again."""
    version = run_frame_version(store, dataset_id, run_id)
    kept = st.session_state.get("explore_frame")
    if kept is None or kept[0] != version:
        kept = (version, run_frame(store, dataset_id, run_id))
        st.session_state["explore_frame"] = kept
    return kept


def selection_from(event, points, run_id: int, two_sets: bool) -> list[int]:
    """The pairs inside the boxes and lassos drawn on the map: a new shape replaces the kept selection
    (it survives reruns)."""
    drawn = (event or {}).get("selection") or {}
    shapes = {k: list(drawn.get(k) or []) for k in ("box", "lasso")}
    if shapes != st.session_state.get("explore_last_pick", {"box": [], "lasso": []}):
        st.session_state["explore_last_pick"] = shapes
        st.session_state["explore_selection"] = {"run_id": run_id,
                                                 "pair_ids": selected_pairs(points, shapes, two_sets)}
    kept = st.session_state.get("explore_selection") or {}
    return list(kept.get("pair_ids", [])) if kept.get("run_id") == run_id else []


def map_view(coords, shown: str) -> tuple:
    """The map's points and figure, kept in the session while the frame, the colour and the layout are the same
    (a selection's rerun then sends the figure without building it again)."""
    key = (version, settings, shown, projection.key)
    kept = st.session_state.get("explore_view")
    if kept is None or kept[0] != key:
        if colour_by in extra_columns(frame):
            add_extra(store, run.id, frame, colour_by)      # read once, kept with the session's frame
        points = map_points(store, dataset.id, frame, coords, settings)
        kept = (key, points, map_figure(points, settings, revision=f"{run.id}-{shown}-{projection.mode}"))
        st.session_state["explore_view"] = kept
    return kept[1], kept[2]


def draw_map() -> list[int]:
    """The map of the run's pairs; returns the pairs selected on it (kept across reruns)."""
    if not artifacts.has_embeddings(run):
        st.warning(f"Run {run.id} has no embeddings in the cache (cleared?), so there is no map. "
                   "Run it again to draw one; the distributions below need only its scores.")
        return []
    try:
        coords = umap_coordinates(store, run.id, projection) if layout == "UMAP" else None
        shown = "UMAP" if coords is not None else "PCA"
        if coords is None:
            coords = pca_run(store, run.id, projection.mode)
    except ConcordError as exc:
        st.error(str(exc))
        return []
    points, figure = map_view(coords, shown)
    cell = (f"the {colour_by} of its pairs that comes last in the legend (a decided pair shows over undecided ones)"
            if colour_by in CATEGORIES else f"the mean {colour_by} of its pairs")
    drawn = " Hover a point for its caption." if len(points) <= settings.points_up_to else (
        f" Above {settings.points_up_to:,} pairs the map is a density image: each cell shows {cell}; the table "
        "below lists the captions.")
    st.caption(f"{shown} map of all {len(points):,} pairs. Drag a box or lasso (toolbar) to select pairs; "
               f"the selection is exact.{drawn} {no_value_note(points, colour_by)}".rstrip())
    event = st.plotly_chart(figure, on_select="rerun", selection_mode=("box", "lasso"), key="explore_map")
    return selection_from(event, points, run.id, settings.two_sets)


def show_selection(selected: list[int]) -> None:
    """The selected pairs, most suspicious first, and the button that sends them to review."""
    st.subheader("Selection")
    if not selected:
        st.caption("Nothing selected: draw a box or a lasso on the map to list its pairs here.")
        return
    ordered = order_selection(frame, selected)
    more = f" (the {TABLE_ROWS} most suspicious listed; all go into a review set)" if len(ordered) > TABLE_ROWS else ""
    st.write(f"**{len(ordered):,} pairs selected**{more}")
    st.dataframe(selection_table(store, dataset.id, frame, ordered, dataset.root), hide_index=True, key="explore_table",
                 column_config={"image": st.column_config.ImageColumn("image", width="small"),
                                "caption": st.column_config.TextColumn("caption", width="large"),
                                "pair_id": None,
                                **{c: st.column_config.NumberColumn(c, format="%.3f")
                                   for c in ("clean_prob", "weight", "similarity")}})
    c1, c2 = st.columns([3, 1])
    name = c1.text_input("Review set name", value=f"map selection · run {run.id} · {len(ordered)} pairs",
                         key="explore_set_name")
    if c2.button("Review these", type="primary", key="explore_review", disabled=not name.strip()):
        st.session_state["review_set"] = store.create_review_set(dataset.id, name.strip(), ordered)
        st.rerun(scope="app")     # the full run makes the page switch (see the top of the page)


@st.fragment
def map_and_selection() -> None:
    """A box or lasso drawn on the map reruns only the map and its selection, not the distributions below
    (their histograms take most of a second at 1M pairs)."""
    show_selection(draw_map())


through_app()
if "review_set" in st.session_state:
    # a set from "Review these" (inside the map's fragment), which the Review page takes over: a switch made from
    # the fragment's own run left the Review page blank twice in full browser-test runs, so a full run makes it
    st.switch_page("pages/review.py")
st.title("Explore")
dataset = current_dataset()
if dataset is None:
    st.stop()
store = get_store()
run = finished_run(store, dataset, "explore_run",
                   f"No finished run for {dataset.name!r} yet. Score its pairs on the **Train** page first.")
unavailable = store.extras_unavailable(run.id)     # e.g. an attached set whose shards folder was moved away
if unavailable is not None:
    st.info(unavailable)
version, frame = current_frame(store, dataset.id, run.id)
if frame.empty:
    st.info(f"Run {run.id} scored no pairs of {dataset.name!r}.")
    st.stop()
truth = has_ground_truth(frame)

# ------------------------------------------------------------------------------------------------ the map
st.subheader("Map")
c1, c2, c3 = st.columns([2, 2, 2])
options = colour_options(frame)
if st.session_state.get("explore_colour") not in options:
    st.session_state["explore_colour"] = MapSettings.colour_by
colour_by = c1.selectbox("Colour by", options, key="explore_colour",
                         help="A score, an extra score column of this run, or a category.")
layout = c2.radio("Layout", LAYOUTS, horizontal=True, key="explore_layout",
                  help="UMAP is computed in the background (cached per run and settings); PCA is immediate.")
two_sets = c3.toggle("Images and captions apart", key="explore_two_sets",
                     help=MapSettings.__dataclass_fields__["two_sets"].metadata["help"])
with st.expander("UMAP settings"):
    u1, u2 = st.columns(2)
    defaults = ProjectionSettings()
    neighbours = u1.number_input("Neighbours", 2, 200, defaults.n_neighbors, key="explore_neighbors",
                                 help="Larger shows more global structure, smaller more local detail.")
    min_dist = u2.number_input("Minimum distance", 0.0, 1.0, defaults.min_dist, step=0.05, key="explore_min_dist",
                               help="How tightly UMAP packs the points of one cluster.")
settings = MapSettings(colour_by=colour_by, two_sets=two_sets)
projection = ProjectionSettings(mode="two-sets" if two_sets else "pairs", n_neighbors=int(neighbours),
                                min_dist=float(min_dist))


map_and_selection()

# ------------------------------------------------------------------------------------------------ distributions
st.subheader("Distributions and threshold")
split_options = (["ground truth"] if truth else []) + (["decision"] if frame["decision"].notna().any() else [])
split_by = st.radio("Split by", ["none"] + split_options, horizontal=True, key="explore_split_by",
                    index=1 if split_options else 0)
threshold = st.slider("Threshold on clean_prob (a pair below it is flagged)", 0.0, 1.0, float(run.threshold),
                      step=0.01, key=f"explore_threshold_{run.id}")
for col, column in zip(st.columns(3), ("clean_prob", "weight", "similarity")):
    col.plotly_chart(histogram_figure(frame, column, None if split_by == "none" else split_by,
                                      threshold if column == "clean_prob" else None),
                     key=f"explore_hist_{column}")
summary = threshold_summary(frame, threshold)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Flagged", f"{summary['flagged']:,}", help=f"of {len(frame):,} scored pairs, every split (the Train "
                                                     "page's table counts the training split outside the meta-data)")
if summary["known"]:
    m2.metric("Precision", percent(summary["precision"]), help="injected noise among the flagged pairs")
    m3.metric("Recall", percent(summary["recall"]), help="flagged pairs among those with injected noise")
    m4.metric("F1", percent(summary["f1"]), help="over the pairs of every split with ground truth; the Train "
                                                  "page's F1 is the training split's outside the meta-data")
else:
    m2.caption("No ground truth for this dataset: precision and recall need injected noise.")
saved = abs(threshold - run.threshold) < 1e-9
if st.button("Save threshold", key="explore_save_threshold", disabled=saved,
             help="Store it with the run: flagged pairs everywhere (Review, Export, the CLI) follow it."):
    store.set_threshold(run.id, threshold)
    st.session_state["explore_notice"] = f"Saved threshold {threshold:.2f} for run {run.id}."
    st.rerun()
notice = st.session_state.pop("explore_notice", None)
if notice:
    st.success(notice)
elif saved:
    st.caption(f"Run {run.id}'s saved threshold ({run.threshold:.2f}).")
