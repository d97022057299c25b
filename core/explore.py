"""What the Explore page shows, computed headless: a run's pairs with scores (and the run's extra score
columns), the map's figure, the selection, the score histograms and what a threshold does.

The map shows every pair. Up to `MapSettings.points_up_to` pairs each is a WebGL marker whose hover label
gives its caption (float32 typed arrays, base64 in plotly's JSON). Above, the map is a density image
computed here (`density_cells`): a grid of cells, each coloured by the mean of the colour's value over the
pairs in it (a category: the one drawn on top), so the browser receives a fixed-size grid whatever the
number of pairs and draws it without WebGL. Either way a box or lasso selection is computed here, exactly,
from the shapes the person drew and the points' coordinates (`points_in_polygon`), not from the points the
browser reports. Captions reach plotly escaped: plotly renders a subset of HTML in hover labels, captions
are plain text.
"""
from __future__ import annotations

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
from core.thumbnails import png_data_uri, thumbnail

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
    points_up_to: int = field(default=20_000, metadata={
        "help": "up to this many pairs each is a marker whose hover label shows its caption; above, the map is a "
                "density image of every pair (markers and captions would be most of what the browser receives "
                "and draws)"})
    density_grid: tuple[int, int] = field(default=(400, 600), metadata={
        "help": "rows and columns of the density image's cells, about one cell per screen pixel of the map"})

    def __post_init__(self) -> None:
        if self.points_up_to < 0:
            raise ConcordError(f"points_up_to cannot be negative, got {self.points_up_to}")
        if len(self.density_grid) != 2 or min(self.density_grid) < 1:
            raise ConcordError(f"density_grid needs two positive sizes (rows, columns), got {self.density_grid}")


# ------------------------------------------------------------------------------------------ the run's pairs
def run_frame(store, dataset_id: int, run_id: int) -> pd.DataFrame:
    """The pairs run `run_id` scored, in import order, without their text (`Store.scored_pairs`: scores, `flagged`
    under the run's saved threshold, current decision), with `truth` ("noisy", "clean" or "unknown"). The run's
    extra score columns are named in `extra_columns` and read one at a time by `add_extra` (the map shows one);
    keys, captions and images by `pair_texts`, for the pairs shown. `attrs["run_id"]` names the run."""
    frame = store.scored_pairs(dataset_id, run_id)
    noisy = frame.pop("is_noisy").to_numpy(np.float64)
    frame["truth"] = np.where(np.isnan(noisy), UNKNOWN, np.where(noisy > 0, "noisy", "clean"))
    frame.attrs["extras"] = store.extra_names(run_id)
    frame.attrs["run_id"] = int(run_id)
    return frame


def add_extra(store, run_id: int, frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """`frame` (a `run_frame`) with the run's extra score column `name` added in place (NaN for a pair
    without one); a column already there is kept."""
    if name not in frame.columns:
        ids, values = store.extra_values(run_id, name)
        pos = pd.Index(ids).get_indexer(frame["pair_id"].to_numpy(np.int64))
        frame[name] = np.where(pos >= 0, values[np.maximum(pos, 0)] if len(values) else np.nan, np.nan)
    return frame


def pair_texts(store, dataset_id: int, run_id: int, pair_ids: Iterable[int]) -> pd.DataFrame:
    """The key, caption and image (`image_path`, `image_hash`) of each of `pair_ids`, in that order: the rows
    Review reads (`Store.review_rows`, each table narrowed to these pairs first)."""
    rows = store.review_rows(dataset_id, run_id, [int(p) for p in pair_ids])
    return rows[["pair_id", "key", "caption", "image_path", "image_hash"]]


def map_points(store, dataset_id: int, frame: pd.DataFrame, coords: pd.DataFrame,
               settings: MapSettings) -> pd.DataFrame:
    """The rows of `frame` that have map coordinates (`coords`: pair_id, x, y[, x2, y2]), with their keys and
    captions when the map is small enough to show them on hover (`MapSettings.points_up_to`)."""
    points = frame.merge(coords, on="pair_id", how="inner")
    if len(points) <= settings.points_up_to:
        texts = pair_texts(store, dataset_id, frame.attrs["run_id"], points["pair_id"])
        points = points.assign(key=texts["key"].to_numpy(), caption=texts["caption"].to_numpy())
    return points


def run_frame_version(store, dataset_id: int, run_id: int) -> tuple:
    """What `run_frame` depends on, cheaply (a few small queries): the database, the run's threshold and
    end, its scores' fingerprint, the dataset's newest decision (decisions and undos only append) and whether
    an attached set's shards can be read (its terms come from them), so a page may keep a frame across reruns
    while this stays equal."""
    run = store.run(run_id)
    return (str(store.path), int(dataset_id), int(run_id), run.threshold, run.finished_at,
            store.scores_version(run_id), store.last_decision_id(dataset_id), store.extras_unavailable(run_id))


def extra_columns(frame: pd.DataFrame) -> list[str]:
    """The names of the run's extra score columns (`frame` a `run_frame`), e.g. concord's siblings or b1's loss."""
    return list(frame.attrs.get("extras", []))


def colour_options(frame: pd.DataFrame) -> list[str]:
    """What the map of this run can be coloured by: its scores, its extra score columns, the categories."""
    return [*SCORES, *extra_columns(frame), *CATEGORIES]


def no_value_note(points: pd.DataFrame, by: str) -> str:
    """Why every point is grey where the map is coloured by an extra score column no pair has ('' where some pair
    has one): e.g. the sibling terms on a set whose images have one caption each."""
    if by in SCORES or by in CATEGORIES or by not in points.columns or points[by].notna().any():
        return ""
    why = ("no image has a second caption" if "sibling" in by or by == "similarity_margin"
           else "no caption text belongs to more than one image" if by.endswith("caption_images")
           else "the run gives it for none of them")
    return f"No pair has a value of {by}: {why}, so every point is grey."


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


def map_figure(points: pd.DataFrame, settings: MapSettings, *, revision: str = "map") -> go.Figure:
    """The map of every row of `points` (run_frame rows with `x`, `y`, and `x2`, `y2` for two point sets),
    coloured by a score or extra score column (a continuous scale; pairs without a value in grey) or by a
    category: a WebGL scatter up to `settings.points_up_to` rows (`scatter_figure`), a density image above
    (`density_figure`)."""
    by = settings.colour_by
    if by not in CATEGORIES and by not in points.columns:
        raise ConcordError(f"cannot colour the map by {by!r} (one of {', '.join(colour_options(points))})")
    fig = scatter_figure(points, settings) if len(points) <= settings.points_up_to else density_figure(points, settings)
    fig.update_layout(dragmode="select", uirevision=revision, height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"title": {"text": by}}, xaxis={"showticklabels": False, "title": None},
                      yaxis={"showticklabels": False, "title": None})
    return fig


def scatter_figure(points: pd.DataFrame, settings: MapSettings) -> go.Figure:
    """Every row of `points` as a WebGL marker carrying its pair id as `customdata` and its caption in the
    hover label. With two point sets, images are circles, captions diamonds, and a grey line joins the two
    points of each pair."""
    by = settings.colour_by
    fig = go.Figure()
    two = settings.two_sets and "x2" in points
    hover = np.array(hover_text(points), dtype=object)
    ids = points["pair_id"].to_numpy(np.int32)
    if two:
        nan = np.full(len(points), np.nan)
        xs = np.column_stack([points["x"], points["x2"], nan]).ravel()
        ys = np.column_stack([points["y"], points["y2"], nan]).ravel()
        fig.add_trace(go.Scattergl(x=_array(xs), y=_array(ys), mode="lines", hoverinfo="skip", showlegend=False,
                                   line={"width": 0.5, "color": "rgba(120,120,120,0.35)"}, name="pairs"))
    sets = [("", "x", "y", "circle")] + ([(" (captions)", "x2", "y2", "diamond")] if two else [])
    size = 8 if len(points) <= 2_000 else 5

    def trace(mask: np.ndarray, xc: str, yc: str, name: str, marker: dict, **kw) -> go.Scattergl:
        return go.Scattergl(x=_array(points[xc].to_numpy()[mask]), y=_array(points[yc].to_numpy()[mask]),
                            mode="markers", name=name, marker=marker, customdata=ids[mask], hovertext=hover[mask],
                            hoverinfo="text", **kw)

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
    return fig


# ------------------------------------------------------------------------------------------ the density image
def density_extent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """The box (x_lo, x_hi, y_lo, y_hi) the density grid spans: the points' range with 1% margins (a unit
    span where every point has the same coordinate)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = []
    for v in (x, y):
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)
        pad = (hi - lo) * 0.01 if hi > lo else 0.5
        out += [lo - pad, hi + pad]
    return out[0], out[1], out[2], out[3]


def density_cells(x: np.ndarray, y: np.ndarray, extent: tuple[float, float, float, float],
                  grid: tuple[int, int]) -> np.ndarray:
    """Each point's cell in a `grid` (rows, columns) laid over `extent`, numbered row by row from the
    bottom-left (row = y, column = x); a point on the extent's top or right edge falls in the last cell."""
    (x_lo, x_hi, y_lo, y_hi), (rows, cols) = extent, grid
    col = np.floor((np.asarray(x, dtype=np.float64) - x_lo) / (x_hi - x_lo) * cols).astype(np.int64)
    row = np.floor((np.asarray(y, dtype=np.float64) - y_lo) / (y_hi - y_lo) * rows).astype(np.int64)
    return np.clip(row, 0, rows - 1) * cols + np.clip(col, 0, cols - 1)


def cell_means(cells: np.ndarray, values: np.ndarray, n_cells: int) -> np.ndarray:
    """The mean of `values` over the points of each cell (NaN values left out; NaN for a cell without any)."""
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    counts = np.bincount(cells[known], minlength=n_cells)
    sums = np.bincount(cells[known], weights=values[known], minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def cell_top(cells: np.ndarray, codes: np.ndarray, n_cells: int) -> np.ndarray:
    """Per cell, the highest category code among its points (-1 for an empty cell): the category a scatter
    would show there, drawing its categories in code order (the grey 'none' category first, below)."""
    top = np.full(n_cells, -1, dtype=np.int64)
    np.maximum.at(top, cells, np.asarray(codes, dtype=np.int64))
    return top


def density_figure(points: pd.DataFrame, settings: MapSettings) -> go.Figure:
    """A heatmap of every row of `points` on a `settings.density_grid`: each cell holds the mean of the colour's
    value over its pairs (a category: the top one, `cell_top`), cells with pairs but no value grey, empty
    cells blank. With two point sets, a pair counts in its image's cell and in its caption's. A transparent
    marker at two corners of the grid makes the box and lasso tools select (the selection is computed from
    their shapes, `selected_pairs`)."""
    by = settings.colour_by
    two = settings.two_sets and "x2" in points
    x = np.concatenate([points["x"].to_numpy(np.float64)] + ([points["x2"].to_numpy(np.float64)] if two else []))
    y = np.concatenate([points["y"].to_numpy(np.float64)] + ([points["y2"].to_numpy(np.float64)] if two else []))
    rows, cols = settings.density_grid
    extent = density_extent(x, y)
    cells = density_cells(x, y, extent, settings.density_grid)
    x_lo, x_hi, y_lo, y_hi = extent
    place = {"x0": x_lo + (x_hi - x_lo) / cols / 2, "dx": (x_hi - x_lo) / cols,
             "y0": y_lo + (y_hi - y_lo) / rows / 2, "dy": (y_hi - y_lo) / rows, "zsmooth": False, "hoverongaps": False}

    def grid(values: np.ndarray) -> np.ndarray:
        return _array(values).reshape(rows, cols)

    fig = go.Figure()
    if by in CATEGORIES:
        names = labels(points, by).to_numpy()
        order = category_order(by, names)
        colours = category_colours(by, order)
        codes = pd.Categorical(names, categories=order).codes.astype(np.int64)
        top = cell_top(cells, np.tile(codes, 2) if two else codes, rows * cols)
        k = len(order)
        scale = [[edge / k, colours[cat]] for i, cat in enumerate(order) for edge in (i, i + 1)]
        fig.add_trace(go.Heatmap(z=grid(np.where(top >= 0, top, np.nan)), colorscale=scale, zmin=-0.5, zmax=k - 0.5,
                                 showscale=False, hoverinfo="skip", name=by, **place))
        for cat in order:  # the legend: one entry per category, no points
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=cat, hoverinfo="skip",
                                     marker={"color": colours[cat], "size": 10, "symbol": "square"}))
    else:
        values = points[by].to_numpy(np.float64)
        values = np.tile(values, 2) if two else values
        if np.isnan(values).any():
            seen = np.bincount(cells, minlength=rows * cols) > 0
            fig.add_trace(go.Heatmap(z=grid(np.where(seen, 0.0, np.nan)), colorscale=[[0, "#c7c7c7"], [1, "#c7c7c7"]],
                                     showscale=False, hovertemplate=f"{NO_VALUE}<extra></extra>", name=NO_VALUE,
                                     **place))
        scale, lo, hi = _SCALES.get(by, _CONTINUOUS)
        fig.add_trace(go.Heatmap(z=grid(cell_means(cells, values, rows * cols)), colorscale=scale, zmin=lo, zmax=hi,
                                 colorbar={"title": {"text": by}}, name=by,
                                 hovertemplate=f"{by} %{{z:.3f}}: the mean of this cell's pairs<extra></extra>",
                                 **place))
    fig.add_trace(go.Scatter(x=[x_lo, x_hi], y=[y_lo, y_hi], mode="markers", marker={"opacity": 0, "size": 1},
                             hoverinfo="skip", showlegend=False, name="extent"))
    fig.update_layout(xaxis={"range": [x_lo, x_hi]}, yaxis={"range": [y_lo, y_hi]})
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
    return png_data_uri(data)


def selection_table(store, dataset_id: int, frame: pd.DataFrame, pair_ids: list[int], root: str,
                    limit: int = TABLE_ROWS) -> pd.DataFrame:
    """The first `limit` of `pair_ids` (in that order) as table rows: thumbnail, key, caption, scores,
    decision, split and ground truth."""
    pos = pd.Index(frame["pair_id"].to_numpy(np.int64)).get_indexer([int(p) for p in pair_ids[:limit]])
    if (pos < 0).any():
        raise KeyError(f"pair {pair_ids[int(np.flatnonzero(pos < 0)[0])]} is not in the frame")
    rows = frame.iloc[pos].reset_index(drop=True)
    texts = pair_texts(store, dataset_id, frame.attrs["run_id"], rows["pair_id"])
    return pd.DataFrame({
        "image": [thumbnail_uri(root, p, h) for p, h in zip(texts["image_path"], texts["image_hash"])],
        "key": texts["key"].astype(str), "caption": texts["caption"].astype(str),
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
