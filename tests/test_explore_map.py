"""The Explore map at scale (core/explore.py): exact box and lasso selection on the coordinates, checked by
hand on a concave polygon and a self-crossing one, and every point drawn as compact typed arrays."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.explore import (MapSettings, map_figure, points_in_box, points_in_polygon, selected_pairs,
                          selection_shapes)

# a "U": two arms (x in [0, 1] and [2, 3], y up to 3) joined by a bottom bar (y in [0, 1]); the notch between
# the arms (1 < x < 2, y > 1) is outside
U_SHAPE = np.array([(0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)], float)


def test_points_on_both_sides_of_a_concave_polygon() -> None:
    points = {  # (x, y): inside?
        (0.5, 2.0): True,    # left arm
        (2.5, 2.5): True,    # right arm
        (1.5, 0.5): True,    # the bar between them
        (2.9, 0.1): True,    # a corner of the bar
        (1.5, 2.0): False,   # the notch: inside the bounding box, outside the shape
        (1.5, 1.2): False,   # just above the bar, in the notch
        (1.01, 2.9): False,  # just right of the left arm
        (1.99, 1.5): False,  # just left of the right arm
        (3.5, 1.0): False,   # right of everything
        (-0.5, 2.0): False,  # left of everything
        (1.5, 3.5): False,   # above the notch
        (0.5, -0.1): False,  # below the bar
    }
    xy = np.array(list(points), float)
    got = points_in_polygon(xy[:, 0], xy[:, 1], U_SHAPE)
    assert got.tolist() == list(points.values())
    # the same shape from another starting vertex and walked the other way round
    turned = np.roll(U_SHAPE, 3, axis=0)[::-1]
    assert points_in_polygon(xy[:, 0], xy[:, 1], turned).tolist() == list(points.values())


def test_a_self_crossing_lasso_counts_by_the_even_odd_rule() -> None:
    bow_tie = np.array([(0, 0), (2, 2), (2, 0), (0, 2)], float)  # two triangles meeting at (1, 1)
    x, y = np.array([0.2, 1.8, 1.0, 1.0, 3.0]), np.array([1.0, 1.0, 0.3, 1.7, 1.0])
    assert points_in_polygon(x, y, bow_tie).tolist() == [True, True, False, False, False]


def test_a_degenerate_polygon_selects_nothing() -> None:
    x, y = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    assert points_in_polygon(x, y, np.array([(0, 0), (1, 1)], float)).tolist() == [False, False]
    assert points_in_polygon(np.array([]), np.array([]), U_SHAPE).tolist() == []


def test_points_in_a_box_with_its_edges_and_corners_either_way_round() -> None:
    x, y = np.array([0.0, 1.0, 2.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0, 2.5, 3.0])
    assert points_in_box(x, y, (2.0, 0.0), (3.0, 0.0)).tolist() == [True, True, True, True, True]
    assert points_in_box(x, y, (0.5, 1.5), (0.5, 2.5)).tolist() == [False, True, False, True, False]


def test_selection_shapes_from_a_plotly_chart_selection() -> None:
    selection = {"points": [{"x": 9}], "point_indices": [0],
                 "box": [{"xref": "x", "yref": "y", "x": [2, 0], "y": [0, 1]}, {"x": [], "y": []}],
                 "lasso": [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}, {"x": [0, 1], "y": [0, 1]}]}
    boxes, lassos = selection_shapes(selection)
    assert boxes == [((2.0, 0.0), (0.0, 1.0))]
    assert len(lassos) == 1 and lassos[0].tolist() == [[0, 0], [1, 0], [1, 1]]
    assert selection_shapes(None) == ([], []) and selection_shapes({}) == ([], [])


def test_selected_pairs_are_exactly_those_inside_a_box_or_lasso() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    points = pd.DataFrame({"pair_id": np.arange(100, 100 + n), "x": rng.uniform(-1, 4, n), "y": rng.uniform(-1, 4, n),
                           "x2": rng.uniform(10, 11, n), "y2": rng.uniform(10, 11, n)})
    lasso = {"x": U_SHAPE[:, 0].tolist(), "y": U_SHAPE[:, 1].tolist()}
    got = selected_pairs(points, {"box": [], "lasso": [lasso]})
    # the U is the union of three rectangles (open on the notch side); a random point is on no edge
    x, y = points["x"], points["y"]
    want = (((x > 0) & (x < 1) | (x > 2) & (x < 3)) & (y > 0) & (y < 3)) | ((x > 0) & (x < 3) & (y > 0) & (y < 1))
    assert got == points["pair_id"][want].tolist() and 1000 < len(got) < 2000
    # a box and a lasso: their union, in the points' order
    box = {"x": [3.5, 4.0], "y": [3.5, 4.0]}
    both = selected_pairs(points, {"box": [box], "lasso": [lasso]})
    in_box = (x >= 3.5) & (y >= 3.5)
    assert both == points["pair_id"][want | in_box].tolist()
    # two point sets: a pair is selected when its caption point is inside
    around_captions = {"x": [10, 10.5], "y": [10, 10.5]}
    caption_hit = (points["x2"] <= 10.5) & (points["y2"] <= 10.5)
    assert selected_pairs(points, {"box": [around_captions]}, two_sets=True) == \
        points["pair_id"][caption_hit].tolist()
    assert selected_pairs(points, {"box": [around_captions]}) == []  # one point set: no caption points
    assert selected_pairs(points, {"box": [], "lasso": []}) == []


def test_every_point_is_drawn_as_typed_arrays_and_large_maps_skip_captions() -> None:
    n = 3000
    rng = np.random.default_rng(1)
    points = pd.DataFrame({"pair_id": np.arange(n), "key": [f"k{i}" for i in range(n)], "caption": ["a cat"] * n,
                           "split": "train", "clean_prob": rng.uniform(size=n), "weight": rng.uniform(size=n),
                           "similarity": rng.uniform(size=n), "flagged": False, "decision": None, "truth": "clean",
                           "x": rng.normal(size=n), "y": rng.normal(size=n)})
    fig = map_figure(points, MapSettings(hover_captions=n))
    assert len(fig.data[0].x) == n and fig.data[0].hovertext is not None
    spec = json.loads(fig.to_json())["data"][0]
    assert spec["x"]["dtype"] == spec["y"]["dtype"] == spec["marker"]["color"]["dtype"] == "f4"  # base64 float32
    assert spec["customdata"]["dtype"] == "i4"

    fig = map_figure(points, MapSettings(hover_captions=n - 1))  # above the limit: the colour's value only
    trace = fig.data[0]
    assert len(trace.x) == n and trace.hovertext is None and trace.customdata is None
    assert trace.hovertemplate == "clean_prob %{marker.color:.3f}<extra></extra>"
    assert np.allclose(trace.x, points["x"].to_numpy(np.float32))
    arrays = json.loads(fig.to_json())["data"][0]
    assert sum(len(json.dumps(a)) for a in (arrays["x"], arrays["y"], arrays["marker"]["color"])) < 16 * n + 200
    # (three float32 arrays: 12 bytes a point, 16 in base64)
    fig = map_figure(points, MapSettings(colour_by="split", hover_captions=0))
    assert fig.data[0].hovertemplate == "%{fullData.name}<extra></extra>" and len(fig.data[0].x) == n


def test_map_benchmark_at_a_small_size(capsys) -> None:
    from core.cli import main
    assert main(["bench", "map", "--pairs", "400", "--no-docs", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert (row["pairs"], row["drawn"]) == (400, 400) and "browser" not in row
    assert 0 < row["box_selected"] < 400 and 0 < row["lasso_selected"] < 400
    assert row["json_mb"] > 0 and row["box_to_table_s"] >= row["box_select_s"] >= 0
