"""What the Explore page shows, computed headless: a run's pairs with scores (and the run's extra score
columns), the map's figure, the selection, the score histograms and what a threshold does.

The map draws every pair. Its arrays reach the browser as typed arrays (float32, base64 in plotly's JSON,
about 12 bytes a point) and WebGL draws them; per-point hover captions, the one part that grows with the
text, are sent only up to `MapSettings.hover_captions` points. A box or lasso selection is computed here,
exactly, from the shapes the person drew and the points' coordinates (`points_in_polygon`), not from the
points the browser reports. Captions reach plotly escaped: plotly renders a subset of HTML in hover labels,
captions are plain text.
"""
from __future__ import annotations

import base64
import html
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.errors import ConcordError
from core.projection import ProjectionSettings
from core.thresholds import detection_at_threshold, flagged_mask
from core.thumbnails import thumbnail

SCORES = ("clean_prob", "weight", "similarity")
CATEGORIES = ("decision", "split", "ground truth")
UNDECIDED, UNKNOWN = "undecided", "unknown"
NO_VALUE = "no value"  # the grey trace of pairs whose extra score is missing
HOVER_CHARS = 160  # a caption longer than this is cut in the hover label
HISTOGRAM_BINS = 40
TABLE_ROWS = 200  # selected pairs listed with thumbnails (all of them go into a review set)

# fixed colours, so a category keeps its colour whatever else is on the map
_COLOURS = {
    "decision": {UNDECIDED: "#c7c7c7", "keep": "#2ca02c", "reject": "#d62728", "fix": "#1f77b4", "skip": "#9467bd"},
    "ground truth": {UNKNOWN: "#c7c7c7", "clean": "#2ca02c", "noisy": "#d62728"},
    "split": {"train": "#1f77b4", "val": "#ff7f0e", "test": "#9467bd"},
}
_SUSPECT_SCALE = [[0.0, "#d62728"], [0.5, "#a0a0a0"], [1.0, "#1f77b4"]]  # low (suspect) red, high blue
_SCALES = {"clean_prob": (_SUSPECT_SCALE, 0.0, 1.0), "weight": (_SUSPECT_SCALE, 0.0, 1.0)}
_CONTINUOUS = ("Viridis", None, None)  # similarity and every extra score column: the range of its values
_OTHER_COLOURS = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class MapSettings:
    """How the map of a run is drawn."""

    colour_by: str = field(default="clean_prob", metadata={
        "help": "what the colour of a point shows: a score, an extra score column of the run, or a category"})
    two_sets: bool = field(default=False, metadata={
        "help": "images and captions as two point sets with a line per pair (a mismatch is a long line)"})
    hover_captions: int = field(default=20_000, metadata={
        "help": "up to this many pairs a point's hover label shows its caption; above, only the colour's value "
                "(captions would be most of what the browser receives)"})

    def __post_init__(self) -> None:
        if self.hover_captions < 0:
            raise ConcordError(f"hover_captions cannot be negative, got {self.hover_captions}")


# ------------------------------------------------------------------------------------------ the run's pairs
def run_frame(store, dataset_id: int, run_id: int) -> pd.DataFrame:
    """The pairs run `run_id` scored, in import order: the store's pair columns (scores, `flagged` under the
    run's saved threshold, current decision), `truth` ("noisy", "clean" or "unknown"), and the run's extra
    score columns (NaN for a pair without one), whose names `extra_columns` gives."""
    frame = store.pairs_frame(dataset_id, run_id)
    frame = frame[frame["clean_prob"].notna()].reset_index(drop=True)
    frame["flagged"] = frame["flagged"].fillna(False).astype(bool)
    frame["truth"] = np.where(frame["is_noisy"].isna(), UNKNOWN,
                              np.where(frame["is_noisy"].fillna(False).astype(bool), "noisy", "clean"))
    scores = store.scores_frame(run_id)
    extras = [c for c in scores.columns if c not in frame.columns]
    if extras:
        frame = frame.merge(scores[["pair_id", *extras]], on="pair_id", how="left")
    frame.attrs["extras"] = extras
    return frame


def run_frame_version(store, dataset_id: int, run_id: int) -> tuple:
    """What `run_frame` depends on, cheaply (a few small queries): the database, the run's threshold and
    end, its scores' fingerprint, the dataset's newest decision (decisions and undos only append) and whether
    an attached set's shards can be read (its terms come from them), so a page may keep a frame across reruns
    while this stays equal."""
    run = store.run(run_id)
    return (str(store.path), int(dataset_id), int(run_id), run.threshold, run.finished_at,
            store.scores_version(run_id), store.last_decision_id(dataset_id), store.extras_unavailable(run_id))


def extra_columns(frame: pd.DataFrame) -> list[str]:
    """The run's extra score columns in `frame` (a `run_frame`), e.g. concord's siblings or b1's loss."""
    return [c for c in frame.attrs.get("extras", []) if c in frame.columns]


def colour_options(frame: pd.DataFrame) -> list[str]:
    """What the map of this run can be coloured by: its scores, its extra score columns, the categories."""
    return [*SCORES, *extra_columns(frame), *CATEGORIES]


def has_ground_truth(frame: pd.DataFrame) -> bool:
    """Whether some pair's ground truth (injected noise) is known."""
    return bool((frame["truth"] != UNKNOWN).any())


def labels(frame: pd.DataFrame, by: str) -> pd.Series:
    """Each pair's category under `by` ("decision", "split" or "ground truth")."""
    if by == "decision":
        return frame["decision"].fillna(UNDECIDED).astype(str)
    if by == "split":
        return frame["split"].astype(str)
    if by == "ground truth":
        return frame["truth"].astype(str)
    raise ConcordError(f"no categories for {by!r} (one of {', '.join(CATEGORIES)})")


def category_order(by: str, present: Iterable[str]) -> list[str]:
    """The categories present, in a fixed order (the grey 'none' category first, so it is drawn below)."""
    known = list(_COLOURS.get(by, {}))
    present = set(present)
    return [c for c in known if c in present] + sorted(present - set(known))


def category_colours(by: str, order: list[str]) -> dict[str, str]:
    fixed = _COLOURS.get(by, {})
    extra = itertools.cycle(_OTHER_COLOURS)
    return {c: fixed[c] if c in fixed else next(extra) for c in order}


# ------------------------------------------------------------------------------------------ the map
def hover_text(frame: pd.DataFrame) -> list[str]:
    """Each pair's hover label: its caption as plain text (escaped, cut at `HOVER_CHARS`), then its scores."""
    out = []
    for cap, key, cp, w, s, dec in zip(frame["caption"], frame["key"], frame["clean_prob"], frame["weight"],
                                       frame["similarity"], frame["decision"]):
        cap = str(cap)
        if len(cap) > HOVER_CHARS:
            cap = cap[:HOVER_CHARS - 1] + "…"
        line = f"clean_prob {cp:.3f} · weight {w:.3f} · similarity {s:.3f}"
        tail = "" if dec is None or (isinstance(dec, float) and np.isnan(dec)) else f" · {html.escape(str(dec))}"
        out.append(f"{html.escape(cap, quote=False)}<br>{line}<br>pair {html.escape(str(key), quote=False)}{tail}")
    return out


def _array(values: Any) -> np.ndarray:
    """A float32 copy of `values`: what plotly sends as a compact typed array (base64 `bdata`)."""
    return np.asarray(values, dtype=np.float32)


def _hover_template(by: str) -> str:
    """The hover label of a point on a map too large for per-point captions: the colour's value only."""
    return f"{by} %{{marker.color:.3f}}<extra></extra>" if by not in CATEGORIES else "%{fullData.name}<extra></extra>"


def map_figure(points: pd.DataFrame, settings: MapSettings, *, revision: str = "map") -> go.Figure:
    """The WebGL scatter of every row of `points` (run_frame rows with `x`, `y`, and `x2`, `y2` for two
    point sets), coloured by a score or extra score column (a continuous scale; pairs without a value in
    a grey trace of their own) or by a category (one trace per category).

    Up to `settings.hover_captions` points each carries its pair id as `customdata` and its caption in the
    hover label; above, only the colour's value, so what the browser receives stays about 12 bytes a point.
    With two point sets, images are circles, captions diamonds, and a grey line joins the two points of
    each pair."""
    by = settings.colour_by
    if by not in CATEGORIES and by not in points.columns:
        raise ConcordError(f"cannot colour the map by {by!r} (one of {', '.join(colour_options(points))})")
    fig = go.Figure()
    two = settings.two_sets and "x2" in points
    captions = len(points) <= settings.hover_captions
    hover = np.array(hover_text(points), dtype=object) if captions else None
    ids = points["pair_id"].to_numpy(np.int32) if captions else None
    if two:
        nan = np.full(len(points), np.nan)
        xs = np.column_stack([points["x"], points["x2"], nan]).ravel()
        ys = np.column_stack([points["y"], points["y2"], nan]).ravel()
        fig.add_trace(go.Scattergl(x=_array(xs), y=_array(ys), mode="lines", hoverinfo="skip", showlegend=False,
                                   line={"width": 0.5, "color": "rgba(120,120,120,0.35)"}, name="pairs"))
    sets = [("", "x", "y", "circle")] + ([(" (captions)", "x2", "y2", "diamond")] if two else [])
    size = 8 if len(points) <= 2_000 else 5 if len(points) <= 20_000 else 3 if len(points) <= 200_000 else 2

    def trace(mask: np.ndarray, xc: str, yc: str, name: str, marker: dict, **kw) -> go.Scattergl:
        extra = ({"customdata": ids[mask], "hovertext": hover[mask], "hoverinfo": "text"} if captions
                 else {"hovertemplate": _hover_template(by)})
        return go.Scattergl(x=_array(points[xc].to_numpy()[mask]), y=_array(points[yc].to_numpy()[mask]),
                            mode="markers", name=name, marker=marker, **extra, **kw)

    if by in CATEGORIES:
        cats = labels(points, by).to_numpy()
        order = category_order(by, cats)
        colours = category_colours(by, order)
        for suffix, xc, yc, symbol in sets:
            for cat in order:
                fig.add_trace(trace(cats == cat, xc, yc, f"{cat}{suffix}", legendgroup=cat,
                                    marker={"color": colours[cat], "size": size, "symbol": symbol}))
    else:
        scale, lo, hi = _SCALES.get(by, _CONTINUOUS)
        values = points[by].to_numpy(np.float64)
        known = ~np.isnan(values)
        for suffix, xc, yc, symbol in sets:
            if not known.all():
                fig.add_trace(trace(~known, xc, yc, f"{NO_VALUE}{suffix}", legendgroup=NO_VALUE,
                                    marker={"color": "#c7c7c7", "size": size, "symbol": symbol}))
            fig.add_trace(trace(known, xc, yc, "captions" if suffix else "images" if two else "pairs",
                                showlegend=two or not known.all(),
                                marker={"color": _array(values[known]), "colorscale": scale, "cmin": lo, "cmax": hi,
                                        "size": size, "symbol": symbol, "showscale": not suffix,
                                        "colorbar": {"title": {"text": by}}}))
    fig.update_layout(dragmode="select", uirevision=revision, height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"title": {"text": by}}, xaxis={"showticklabels": False, "title": None},
                      yaxis={"showticklabels": False, "title": None})
    return fig


# ------------------------------------------------------------------------------------------ selecting on the map
def points_in_box(x: np.ndarray, y: np.ndarray, xs: tuple[float, float], ys: tuple[float, float]) -> np.ndarray:
    """Whether each point (x, y) lies in the box spanned by the corners `xs` and `ys`, edges included."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return (x >= min(xs)) & (x <= max(xs)) & (y >= min(ys)) & (y <= max(ys))


def points_in_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Whether each point (x, y) lies inside `polygon` (k x 2 vertices, closed implicitly; concave and
    self-crossing shapes by the even-odd rule, as a lasso is drawn).

    Ray casting to the right, each edge taking the points whose y is in its half-open span [min, max): a point
    on a horizontal edge's line counts once. Points are sorted by y once, so an edge touches only the points
    of its y band (a lasso of many short edges costs about a pass over the points in its bounding box)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    inside = np.zeros(len(x), dtype=bool)
    if len(poly) < 3 or not len(x):
        return inside
    (x_lo, y_lo), (x_hi, y_hi) = poly.min(axis=0), poly.max(axis=0)
    cand = np.flatnonzero((x >= x_lo) & (x <= x_hi) & (y >= y_lo) & (y <= y_hi))
    order = cand[np.argsort(y[cand], kind="stable")]
    px, py = x[order], y[order]
    odd = np.zeros(len(order), dtype=bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        if y1 == y2:
            continue  # a horizontal edge: no crossing with a horizontal ray
        lo, hi = np.searchsorted(py, min(y1, y2), "left"), np.searchsorted(py, max(y1, y2), "left")
        if lo == hi:
            continue
        at = x1 + (py[lo:hi] - y1) * (x2 - x1) / (y2 - y1)
        odd[lo:hi] ^= px[lo:hi] < at
    inside[order] = odd
    return inside


def selection_shapes(selection: Any) -> tuple[list[tuple[tuple[float, float], tuple[float, float]]],
                                             list[np.ndarray]]:
    """The boxes ((x0, x1), (y0, y1)) and lasso polygons (k x 2) of a plotly_chart selection, in data
    coordinates; shapes with too few corners are left out."""
    get = selection.get if isinstance(selection, dict) else lambda k, d=None: getattr(selection, k, d)
    boxes, lassos = [], []
    for box in (get("box", None) or []) if selection else []:
        if len(box.get("x") or []) == 2 and len(box.get("y") or []) == 2:
            boxes.append((tuple(map(float, box["x"])), tuple(map(float, box["y"]))))
    for lasso in (get("lasso", None) or []) if selection else []:
        xs, ys = lasso.get("x") or [], lasso.get("y") or []
        if len(xs) == len(ys) >= 3:
            lassos.append(np.column_stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)]))
    return boxes, lassos


def selected_pairs(points: pd.DataFrame, selection: Any, two_sets: bool = False) -> list[int]:
    """The pair ids of `points` (with `x`, `y`, and `x2`, `y2` for two point sets) inside any box or lasso
    of `selection`, in the order of `points`: with two point sets, a pair whose image or caption is inside."""
    boxes, lassos = selection_shapes(selection)
    if not boxes and not lassos:
        return []
    sets = [("x", "y")] + ([("x2", "y2")] if two_sets and "x2" in points else [])
    hit = np.zeros(len(points), dtype=bool)
    for xc, yc in sets:
        x, y = points[xc].to_numpy(np.float64), points[yc].to_numpy(np.float64)
        for xs, ys in boxes:
            hit |= points_in_box(x, y, xs, ys)
        for poly in lassos:
            hit |= points_in_polygon(x, y, poly)
    return points["pair_id"].to_numpy(np.int64)[hit].tolist()


# ------------------------------------------------------------------------------------------ the selection
def order_selection(frame: pd.DataFrame, pair_ids: Iterable[int]) -> list[int]:
    """The selected pairs of `frame`, most suspicious (lowest clean_prob) first, the order of a review set."""
    ids = frame["pair_id"].to_numpy(np.int64)
    keep = np.isin(ids, np.fromiter((int(p) for p in pair_ids), np.int64))
    ids, prob = ids[keep], frame["clean_prob"].to_numpy(np.float64)[keep]
    return ids[np.lexsort((ids, prob))].tolist()        # NaN clean_prob last, as sort_values puts it


def thumbnail_uri(root: str, rel_path: str, image_hash: str, size: int = 64) -> str | None:
    """A PNG data URI of the image's thumbnail (for an image column), None when it cannot be read."""
    try:
        data = thumbnail(root, rel_path, image_hash, size, upscale=True)
    except ConcordError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def selection_table(frame: pd.DataFrame, pair_ids: list[int], root: str, limit: int = TABLE_ROWS) -> pd.DataFrame:
    """The first `limit` of `pair_ids` (in that order) as table rows: thumbnail, key, caption, scores,
    decision, split and ground truth."""
    pos = pd.Index(frame["pair_id"].to_numpy(np.int64)).get_indexer([int(p) for p in pair_ids[:limit]])
    if (pos < 0).any():
        raise KeyError(f"pair {pair_ids[int(np.flatnonzero(pos < 0)[0])]} is not in the frame")
    rows = frame.iloc[pos].reset_index(drop=True)
    return pd.DataFrame({
        "image": [thumbnail_uri(root, p, h) for p, h in zip(rows["image_path"], rows["image_hash"])],
        "key": rows["key"].astype(str), "caption": rows["caption"].astype(str),
        "clean_prob": rows["clean_prob"], "weight": rows["weight"], "similarity": rows["similarity"],
        "flagged": rows["flagged"], "decision": rows["decision"].fillna(UNDECIDED), "split": rows["split"],
        "truth": rows["truth"], "pair_id": rows["pair_id"],
    })


# ------------------------------------------------------------------------------------------ distributions
def histogram_counts(values: np.ndarray, groups: np.ndarray, bins: int = HISTOGRAM_BINS,
                     value_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """Counts of `values` in `bins` equal bins over `value_range` (default: their min and max), per group:
    DataFrame(group, left, right, count), bins in order within each group. NaN values are left out."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    ok = ~np.isnan(values)
    values, groups = values[ok], groups[ok]
    if value_range is None:
        value_range = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    lo, hi = value_range
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    parts = []
    for g in pd.unique(groups):
        counts, _ = np.histogram(values[groups == g], bins=edges)
        parts.append(pd.DataFrame({"group": g, "left": edges[:-1], "right": edges[1:], "count": counts}))
    if not parts:
        return pd.DataFrame({"group": [], "left": [], "right": [], "count": []})
    return pd.concat(parts, ignore_index=True)


def histogram_figure(frame: pd.DataFrame, column: str, split_by: str | None = None,
                     threshold: float | None = None) -> go.Figure:
    """Overlaid bars of `column`'s distribution, one colour per category of `split_by` (None: one group),
    with a dashed line at `threshold`."""
    if column not in SCORES:
        raise ConcordError(f"no histogram of {column!r} (one of {', '.join(SCORES)})")
    groups = labels(frame, split_by).to_numpy() if split_by else np.full(len(frame), "all pairs", dtype=object)
    value_range = None if column == "similarity" else (0.0, 1.0)
    counts = histogram_counts(frame[column].to_numpy(), groups, value_range=value_range)
    order = category_order(split_by, counts["group"]) if split_by else ["all pairs"]
    colours = category_colours(split_by, order) if split_by else {"all pairs": "#1f77b4"}
    fig = go.Figure()
    for g in order:
        part = counts[counts["group"] == g]
        fig.add_trace(go.Bar(x=(part["left"] + part["right"]) / 2, y=part["count"], width=part["right"] - part["left"],
                             name=str(g), marker={"color": colours[g]}, opacity=0.65))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="black")
    fig.update_layout(barmode="overlay", height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title={"text": column}, showlegend=bool(split_by), bargap=0)
    return fig


def threshold_summary(frame: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """What flagging at `threshold` does to the run's pairs: `flagged` (count over all pairs) and, on the
    `known` pairs with ground truth (0 when none), `precision`, `recall` and `f1` (None when undefined)."""
    flagged = int(flagged_mask(frame["clean_prob"].to_numpy(), threshold).sum())
    known = frame["truth"] != UNKNOWN
    out: dict[str, Any] = {"flagged": flagged, "known": int(known.sum()), "precision": None, "recall": None,
                           "f1": None}
    if known.any():
        sub = frame[known]
        got = detection_at_threshold((sub["truth"] == "noisy").to_numpy(), sub["clean_prob"].to_numpy(), threshold)
        out.update(precision=got["precision"], recall=got["recall"], f1=got["f1"])
    return out


def projection_job_key(run_id: int, settings: ProjectionSettings) -> str:
    """The job key of a run's UMAP map under `settings` (one live job per run and settings)."""
    return f"projection:{int(run_id)}:{settings.key}"
