"""What the Explore page shows, computed headless: a run's pairs with scores, the map's sample and figure,
the selection, the score histograms and what a threshold does.

The map draws at most `MapSettings.max_points` points smoothly: above that a stratified sample (by split
and clean-probability band, so every region of the score range keeps its share) stands for the rest, and
the pairs a person cares about (flagged under the run's threshold, or reviewed) are always drawn.
Captions reach plotly escaped: plotly renders a subset of HTML in hover labels, captions are plain text.
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
COLOUR_BY = SCORES + CATEGORIES
UNDECIDED, UNKNOWN = "undecided", "unknown"
STRATA_BANDS = 10  # clean-probability bands of the stratified sample
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
_SCALES = {"clean_prob": (_SUSPECT_SCALE, 0.0, 1.0), "weight": (_SUSPECT_SCALE, 0.0, 1.0),
           "similarity": ("Viridis", None, None)}
_OTHER_COLOURS = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class MapSettings:
    """How the map of a run is drawn."""

    colour_by: str = field(default="clean_prob", metadata={"help": "what the colour of a point shows"})
    max_points: int = field(default=20_000, metadata={
        "help": "above this many pairs the map draws a stratified sample (flagged and reviewed pairs always)"})
    two_sets: bool = field(default=False, metadata={
        "help": "images and captions as two point sets with a line per pair (a mismatch is a long line)"})
    seed: int = field(default=0, metadata={"help": "seed of the sample"})

    def __post_init__(self) -> None:
        if self.colour_by not in COLOUR_BY:
            raise ConcordError(f"cannot colour the map by {self.colour_by!r} (one of {', '.join(COLOUR_BY)})")
        if self.max_points < 1:
            raise ConcordError(f"the map needs at least 1 point, got max_points={self.max_points}")


# ------------------------------------------------------------------------------------------ the run's pairs
def run_frame(store, dataset_id: int, run_id: int) -> pd.DataFrame:
    """The pairs run `run_id` scored, in import order: the store's pair columns (scores, `flagged` under the
    run's saved threshold, current decision) plus `truth` ("noisy", "clean" or "unknown")."""
    frame = store.pairs_frame(dataset_id, run_id)
    frame = frame[frame["clean_prob"].notna()].reset_index(drop=True)
    frame["flagged"] = frame["flagged"].fillna(False).astype(bool)
    frame["truth"] = np.where(frame["is_noisy"].isna(), UNKNOWN,
                              np.where(frame["is_noisy"].fillna(False).astype(bool), "noisy", "clean"))
    return frame


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


# ------------------------------------------------------------------------------------------ sampling
def sample_strata(split: np.ndarray, clean_prob: np.ndarray, bands: int = STRATA_BANDS) -> np.ndarray:
    """A stratum code per pair: its split and its clean-probability band (`bands` equal bands of [0, 1])."""
    _, split_code = np.unique(np.asarray(split, dtype=str), return_inverse=True)
    band = np.clip(np.floor(np.nan_to_num(np.asarray(clean_prob, dtype=np.float64)) * bands), 0, bands - 1)
    return split_code.astype(np.int64) * bands + band.astype(np.int64)


def stratified_sample(strata: np.ndarray, keep: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a sample of about `size` rows: every `keep` row, and the remaining room filled
    from the other rows with each stratum's share proportional to its size (largest remainders round).

    Everything when there are at most `size` rows; only the `keep` rows when they alone reach `size`."""
    strata = np.asarray(strata)
    keep = np.asarray(keep, dtype=bool)
    n = len(strata)
    if n <= size:
        return np.arange(n)
    kept = np.flatnonzero(keep)
    room = size - len(kept)
    if room <= 0:
        return kept
    rest = np.flatnonzero(~keep)
    codes, inverse, counts = np.unique(strata[rest], return_inverse=True, return_counts=True)
    exact = counts * room / len(rest)
    quota = np.floor(exact).astype(np.int64)
    short = room - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(rest[inverse == k], quota[k], replace=False) for k in range(len(codes)) if quota[k]]
    return np.sort(np.concatenate([kept, *chosen]))


def map_sample(frame: pd.DataFrame, settings: MapSettings) -> np.ndarray:
    """Row indices of `frame` (a `run_frame`) the map draws: flagged and reviewed pairs always."""
    keep = frame["flagged"].to_numpy(bool) | frame["decision"].notna().to_numpy()
    return stratified_sample(sample_strata(frame["split"].to_numpy(), frame["clean_prob"].to_numpy()), keep,
                             settings.max_points, settings.seed)


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


def map_figure(points: pd.DataFrame, settings: MapSettings, *, revision: str = "map") -> go.Figure:
    """The WebGL scatter of `points` (run_frame rows with `x`, `y`, and `x2`, `y2` for two point sets).

    Each point carries its pair id as `customdata` (what a box or lasso selection returns). With two point
    sets, images are circles, captions diamonds, and a grey line joins the two points of each pair."""
    fig = go.Figure()
    two = settings.two_sets and "x2" in points
    hover = np.array(hover_text(points), dtype=object)
    ids = points["pair_id"].to_numpy(np.int64)
    if two:
        xs = np.column_stack([points["x"], points["x2"], np.full(len(points), np.nan)]).ravel()
        ys = np.column_stack([points["y"], points["y2"], np.full(len(points), np.nan)]).ravel()
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", line={"width": 0.5, "color": "rgba(120,120,120,0.35)"},
                                   hoverinfo="skip", showlegend=False, name="pairs"))
    sets = [("", "x", "y", "circle")] + ([(" (captions)", "x2", "y2", "diamond")] if two else [])
    by = settings.colour_by
    size = 8 if len(points) <= 2_000 else 5 if len(points) <= 20_000 else 3
    if by in SCORES:
        scale, lo, hi = _SCALES[by]
        for suffix, xc, yc, symbol in sets:
            fig.add_trace(go.Scattergl(
                x=points[xc], y=points[yc], mode="markers", customdata=ids, hovertext=hover, hoverinfo="text",
                name="captions" if suffix else "images" if two else "pairs", showlegend=two,
                marker={"color": points[by], "colorscale": scale, "cmin": lo, "cmax": hi, "size": size,
                        "symbol": symbol, "showscale": not suffix, "colorbar": {"title": {"text": by}}}))
    else:
        cats = labels(points, by).to_numpy()
        order = category_order(by, cats)
        colours = category_colours(by, order)
        for suffix, xc, yc, symbol in sets:
            for cat in order:
                m = cats == cat
                fig.add_trace(go.Scattergl(
                    x=points[xc].to_numpy()[m], y=points[yc].to_numpy()[m], mode="markers", customdata=ids[m],
                    hovertext=hover[m], hoverinfo="text", name=f"{cat}{suffix}", legendgroup=cat,
                    marker={"color": colours[cat], "size": size, "symbol": symbol}))
    fig.update_layout(dragmode="select", uirevision=revision, height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"title": {"text": by}}, xaxis={"showticklabels": False, "title": None},
                      yaxis={"showticklabels": False, "title": None})
    return fig


def selected_pair_ids(selection: Any) -> list[int]:
    """The pair ids of the selected points (a plotly_chart selection's `points`), each once, in order.

    Points without a pair id (the lines between two point sets) are ignored."""
    points = (selection or {}).get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
    seen: dict[int, None] = {}
    for point in points or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None:
            seen.setdefault(int(data), None)
    return list(seen)


# ------------------------------------------------------------------------------------------ the selection
def order_selection(frame: pd.DataFrame, pair_ids: Iterable[int]) -> list[int]:
    """The selected pairs of `frame`, most suspicious (lowest clean_prob) first, the order of a review set."""
    wanted = frame[frame["pair_id"].isin([int(p) for p in pair_ids])]
    return [int(p) for p in wanted.sort_values(["clean_prob", "pair_id"], kind="stable")["pair_id"]]


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
    rows = frame.set_index("pair_id").loc[[int(p) for p in pair_ids[:limit]]].reset_index()
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
