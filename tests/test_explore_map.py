"""The Explore map at scale (core/explore.py): exact box and lasso selection on the coordinates, checked by
hand on a concave polygon and a self-crossing one; every point drawn as compact typed arrays, or above
`MapSettings.points_up_to` as a density image whose cells are checked by hand."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.explore import (MapSettings, cell_means, cell_top, density_cells, density_extent, map_figure,
                          points_in_box, points_in_polygon, selected_pairs, selection_shapes)

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


def map_points(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"pair_id": np.arange(n), "key": [f"k{i}" for i in range(n)], "caption": ["a cat"] * n,
                         "split": "train", "clean_prob": rng.uniform(size=n), "weight": rng.uniform(size=n),
                         "similarity": rng.uniform(size=n), "flagged": False, "decision": None, "truth": "clean",
                         "x": rng.normal(size=n), "y": rng.normal(size=n)})


def test_small_maps_draw_every_point_as_typed_arrays_and_large_ones_a_density_image() -> None:
    n = 3000
    points = map_points(n)
    fig = map_figure(points, MapSettings(points_up_to=n))
    assert len(fig.data[0].x) == n and fig.data[0].hovertext is not None
    spec = json.loads(fig.to_json())["data"][0]
    assert spec["x"]["dtype"] == spec["y"]["dtype"] == spec["marker"]["color"]["dtype"] == "f4"  # base64 float32
    assert spec["customdata"]["dtype"] == "i4"

    fig = map_figure(points, MapSettings(points_up_to=n - 1, density_grid=(40, 60)))  # above: a density image
    heat, corners = fig.data
    assert heat.type == "heatmap" and np.asarray(heat.z).shape == (40, 60)
    assert corners.type == "scatter" and corners.marker.opacity == 0  # what the box and lasso tools select
    extent = density_extent(points["x"], points["y"])
    cells = density_cells(points["x"], points["y"], extent, (40, 60))
    assert np.allclose(np.asarray(heat.z, float).ravel(), cell_means(cells, points["clean_prob"], 2400),
                       equal_nan=True, atol=1e-6)
    spec = json.loads(fig.to_json())["data"][0]
    assert spec["z"]["dtype"] == "f4" and len(fig.to_json()) < 4 * 2400 * 4 / 3 + 20_000  # the grid, not the points
    # a million points send the same grid
    big = map_figure(map_points(1_000_000, seed=2)[["pair_id", "clean_prob", "x", "y"]], MapSettings())
    assert np.asarray(big.data[0].z).shape == MapSettings().density_grid


def test_density_cells_and_their_values_by_hand() -> None:
    # extent x 0..4, y 0..2 on a 2 x 4 grid: cells are 1 x 1, numbered row by row from the bottom left
    x = np.array([0.5, 0.9, 3.99, 4.0, 1.5, 0.0])
    y = np.array([0.5, 0.1, 1.5, 2.0, 1.0, 0.0])
    cells = density_cells(x, y, (0.0, 4.0, 0.0, 2.0), (2, 4))
    assert cells.tolist() == [0, 0, 7, 7, 5, 0]  # the top-right corner falls in the last cell
    means = cell_means(cells, np.array([0.2, 0.4, 1.0, np.nan, 0.5, 0.6]), 8)
    assert np.allclose(means, [0.4, np.nan, np.nan, np.nan, np.nan, 0.5, np.nan, 1.0], equal_nan=True)
    assert cell_top(cells, np.array([2, 0, 1, 0, 0, 1]), 8).tolist() == [2, -1, -1, -1, -1, 0, -1, 1]
    assert density_extent(np.array([0.0, 10.0]), np.array([3.0, 3.0])) == (-0.1, 10.1, 2.5, 3.5)


def test_a_density_map_by_category_shows_the_top_category_and_missing_values_grey() -> None:
    points = pd.DataFrame({"pair_id": [1, 2, 3, 4], "x": [0.0, 0.1, 10.0, 10.0], "y": [0.0, 0.1, 10.0, 10.0],
                           "decision": [None, "reject", None, None], "clean_prob": [0.2, 0.4, np.nan, np.nan],
                           "split": "train", "truth": "clean"})
    settings = dict(points_up_to=0, density_grid=(2, 2))
    fig = map_figure(points, MapSettings(colour_by="decision", **settings))
    z = np.asarray(fig.data[0].z, float)
    assert np.allclose(z, [[1, np.nan], [np.nan, 0]], equal_nan=True)  # reject drawn over undecided; empty blank
    assert [t.name for t in fig.data[1:3]] == ["undecided", "reject"]  # the legend
    assert [t.marker.color for t in fig.data[1:3]] == ["#c7c7c7", "#d62728"]
    fig = map_figure(points, MapSettings(colour_by="clean_prob", **settings))
    grey, values = fig.data[0], fig.data[1]
    assert grey.name == "no value" and np.allclose(np.asarray(grey.z, float), [[0, np.nan], [np.nan, 0]],
                                                    equal_nan=True)
    assert np.allclose(np.asarray(values.z, float), [[0.3, np.nan], [np.nan, np.nan]], equal_nan=True)
    assert selected_pairs(points, {"box": [{"x": [9, 11], "y": [9, 11]}]}) == [3, 4]  # exact, whatever is drawn


def test_a_density_map_of_two_point_sets_counts_each_pair_at_its_image_and_its_caption() -> None:
    points = pd.DataFrame({"pair_id": [1, 2], "x": [0.0, 0.0], "y": [0.0, 0.0], "x2": [10.0, 0.0],
                           "y2": [10.0, 0.0], "clean_prob": [0.2, 0.6]})
    fig = map_figure(points, MapSettings(two_sets=True, points_up_to=0, density_grid=(2, 2)))
    # both images at the origin (mean 0.4, with pair 2's caption there too: (0.2 + 0.6 + 0.6) / 3); pair 1's
    # caption alone in the top-right cell
    assert np.allclose(np.asarray(fig.data[0].z, float), [[1.4 / 3, np.nan], [np.nan, 0.2]], equal_nan=True)
    assert selected_pairs(points, {"box": [{"x": [9, 11], "y": [9, 11]}]}, two_sets=True) == [1]


def test_map_benchmark_at_a_small_size(capsys) -> None:
    from core.cli import main
    assert main(["bench", "map", "--pairs", "400", "--no-docs", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert (row["pairs"], row["drawn"]) == (400, "400 markers") and "browser" not in row
    assert 0 < row["box_selected"] < 400 and 0 < row["lasso_selected"] < 400
    assert row["json_mb"] > 0 and row["box_to_table_s"] >= row["box_select_s"] >= 0
