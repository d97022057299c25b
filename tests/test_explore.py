"""The Explore page's headless parts (core/explore.py): the run's frame and its extra score columns, the map
figure (every point, typed arrays) and its hover text, exact box and lasso selection, the selection table,
histograms and the threshold summary, with hand-computed cases."""
from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.errors import ConcordError
from core.explore import (NO_VALUE, SCORES, UNDECIDED, MapSettings, add_extra, colour_options, extra_columns,
                          histogram_counts, histogram_figure, hover_text, labels, map_figure, map_points,
                          order_selection, points_in_box, points_in_polygon, run_frame, selected_pairs,
                          selection_shapes, selection_table, threshold_summary)
from core.thresholds import detection_at_threshold
from tests.test_projection import fabricate_run


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))


def small_frame() -> pd.DataFrame:
    """Four scored pairs as `run_frame` returns them."""
    return pd.DataFrame({
        "pair_id": [11, 12, 13, 14], "key": ["a", "b", "c", "d"], "split": ["train", "train", "val", "train"],
        "caption": ["<b>bold</b> & co", "plain", "x" * 200, "d"],
        "clean_prob": [0.25, 0.75, 0.1, 0.4], "weight": [0.5, 0.9, 0.2, 0.3], "similarity": [0.125, 0.5, -0.2, 0.0],
        "flagged": [True, False, True, True], "decision": [None, "keep", None, "reject"],
        "truth": ["noisy", "clean", "clean", "noisy"],
        "x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.0, 1.0], "x2": [5.0, 6.0, 7.0, 8.0], "y2": [1.0, 1.0, 1.0, 1.0]})


# ------------------------------------------------------------------------------------------ the run's pairs
def test_run_frame_has_scores_flags_and_ground_truth(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src")
    store.decide(fab.dataset_id, [int(fab.pairs["pair_id"][0])], "keep", "ann")
    frame = run_frame(store, fab.dataset_id, fab.run_id)
    assert len(frame) == len(fab.pairs) == 40
    assert frame["flagged"].tolist() == (fab.pairs["clean_prob"] < 0.5).tolist()
    assert frame["truth"].tolist() == np.where(fab.pairs["is_noisy"], "noisy", "clean").tolist()
    assert labels(frame, "decision").tolist() == ["keep"] + [UNDECIDED] * 39
    # a pair the run did not score is not on the map; a dataset without injected noise has no ground truth
    other = store.create_run(fab.dataset_id, "b1", "concord-tiny")
    store.write_scores(other, fab.pairs["pair_id"][:3].to_numpy(), np.zeros(3), np.full(3, 0.5), np.ones(3))
    assert run_frame(store, fab.dataset_id, other)["pair_id"].tolist() == fab.pairs["pair_id"][:3].tolist()


def test_run_frame_carries_the_runs_extra_score_columns(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src")
    ids = fab.pairs["pair_id"].to_numpy()
    assert extra_columns(run_frame(store, fab.dataset_id, fab.run_id)) == []  # a run without extras
    assert colour_options(run_frame(store, fab.dataset_id, fab.run_id)) == [*SCORES, "decision", "split",
                                                                           "ground truth"]
    run = store.create_run(fab.dataset_id, "concord", "concord-tiny")
    siblings = np.arange(len(ids), dtype=float)
    margin = np.where(np.arange(len(ids)) % 2 == 0, np.nan, 0.25)  # half of the pairs have no margin
    store.write_scores(run, ids, fab.pairs["similarity"], fab.pairs["clean_prob"], fab.pairs["weight"],
                       {"siblings": siblings, "caption_margin": margin})
    frame = run_frame(store, fab.dataset_id, run)
    assert sorted(extra_columns(frame)) == ["caption_margin", "siblings"]
    assert colour_options(frame)[:3] == list(SCORES) and colour_options(frame)[-3:] == ["decision", "split",
                                                                                       "ground truth"]
    assert "siblings" not in frame and "caption" not in frame  # read when the map needs them
    for name in ("siblings", "caption_margin"):
        assert add_extra(store, run, frame, name) is frame
    assert frame["siblings"].tolist() == siblings.tolist()  # in import order, each pair's own value
    assert np.array_equal(frame["caption_margin"].to_numpy(), margin, equal_nan=True)
    # the map coloured by an extra: a continuous scale over its values, the pairs without one in grey
    coords = pd.DataFrame({"pair_id": frame["pair_id"], "x": np.arange(len(frame), dtype=float), "y": 0.0})
    points = map_points(store, fab.dataset_id, frame, coords, MapSettings())
    assert points["caption"].tolist() == store.pairs_frame(fab.dataset_id)["caption"].tolist()  # hover captions
    assert "caption" not in map_points(store, fab.dataset_id, frame, coords, MapSettings(points_up_to=39))
    fig = map_figure(points, MapSettings(colour_by="caption_margin"))
    assert [t.name for t in fig.data] == [NO_VALUE, "pairs"]
    assert list(fig.data[0].customdata) == ids[::2].tolist() and fig.data[0].marker.color == "#c7c7c7"
    assert list(fig.data[1].customdata) == ids[1::2].tolist() and list(fig.data[1].marker.color) == [0.25] * 20
    assert fig.data[1].marker.colorbar.title.text == "caption_margin" and fig.data[1].marker.cmin is None
    fig = map_figure(points, MapSettings(colour_by="siblings"))
    assert len(fig.data) == 1 and list(fig.data[0].marker.color) == siblings.tolist()


# ------------------------------------------------------------------------------------------ the map
def test_hover_text_escapes_captions_and_shows_scores() -> None:
    text = hover_text(small_frame())
    assert text[0] == ("&lt;b&gt;bold&lt;/b&gt; &amp; co<br>clean_prob 0.250 · weight 0.500 · similarity 0.125"
                       "<br>pair a")
    assert text[1].endswith("pair b · keep")
    assert text[2].startswith("x" * 159 + "…<br>")


def test_map_figure_continuous_and_categorical() -> None:
    frame = small_frame()
    fig = map_figure(frame, MapSettings(colour_by="clean_prob"))
    assert len(fig.data) == 1
    trace = fig.data[0]
    assert trace.type == "scattergl" and list(trace.customdata) == [11, 12, 13, 14]
    assert list(trace.marker.color) == [0.25, 0.75, 0.1, 0.4] and trace.marker.colorscale is not None
    assert fig.layout.dragmode == "select"

    fig = map_figure(frame, MapSettings(colour_by="decision"))
    assert [t.name for t in fig.data] == ["undecided", "keep", "reject"]  # fixed order, grey first
    assert [list(t.customdata) for t in fig.data] == [[11, 13], [12], [14]]
    assert [t.marker.color for t in fig.data] == ["#c7c7c7", "#2ca02c", "#d62728"]

    fig = map_figure(frame, MapSettings(colour_by="ground truth", two_sets=True))
    lines = fig.data[0]
    assert lines.mode == "lines" and lines.hoverinfo == "skip"
    assert np.allclose(np.asarray(lines.x, float)[:6], [0, 5, np.nan, 1, 6, np.nan], equal_nan=True)
    assert [t.name for t in fig.data[1:]] == ["clean", "noisy", "clean (captions)", "noisy (captions)"]
    assert list(fig.data[3].x) == [6.0, 7.0] and list(fig.data[3].customdata) == [12, 13]  # caption points


def test_a_map_coloured_by_a_term_no_pair_has_says_why_it_is_grey() -> None:
    from core.explore import no_value_note
    frame = small_frame().assign(siblings=np.nan, pixels_caption_images=np.nan, look_alikes=np.nan,
                                 image_margin=[0.1, np.nan, np.nan, np.nan])
    assert no_value_note(frame, "siblings") == (
        "No pair has a value of siblings: no image has a second caption, so every point is grey.")
    assert no_value_note(frame, "pixels_caption_images") == ("No pair has a value of pixels_caption_images: no "
                                                             "caption text belongs to more than one image, so every "
                                                             "point is grey.")
    assert no_value_note(frame, "look_alikes").endswith(": the run gives it for none of them, so every point is grey.")
    assert no_value_note(frame, "image_margin") == "" and no_value_note(frame, "clean_prob") == ""
    assert no_value_note(frame, "decision") == ""


def test_map_settings_are_checked() -> None:
    with pytest.raises(ConcordError, match="cannot colour the map by 'topic' \\(one of clean_prob, weight, "
                                           "similarity, decision, split, ground truth\\)"):
        map_figure(small_frame(), MapSettings(colour_by="topic"))
    with pytest.raises(ConcordError, match="points_up_to cannot be negative"):
        MapSettings(points_up_to=-1)
    with pytest.raises(ConcordError, match="density_grid needs two positive sizes"):
        MapSettings(density_grid=(0, 10))


# ------------------------------------------------------------------------------------------ the selection
def test_selection_is_ordered_most_suspicious_first_and_tabled_with_thumbnails(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src")
    frame = run_frame(store, fab.dataset_id, fab.run_id)
    picked = frame["pair_id"].iloc[[0, 5, 9]].tolist()
    ordered = order_selection(frame, picked + [10**9])  # an id the run does not know is dropped
    assert ordered == frame.set_index("pair_id").loc[picked].sort_values("clean_prob").index.tolist()
    table = selection_table(store, fab.dataset_id, frame, ordered, str(tmp_path / "src"), limit=2)
    assert table["pair_id"].tolist() == ordered[:2]
    pairs = store.pairs_frame(fab.dataset_id).set_index("pair_id")
    assert table["caption"].tolist() == pairs.loc[ordered[:2], "caption"].tolist()
    uri = table["image"].iloc[0]
    assert uri.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size == (64, 64)
    # an image that cannot be read has no thumbnail, the row stays
    gone = tmp_path / "src" / pairs.loc[ordered[0], "image_path"]
    gone.unlink()
    shutil.rmtree(tmp_path / "cache")  # not in the thumbnail cache either
    table = selection_table(store, fab.dataset_id, frame, ordered, str(tmp_path / "src"))
    assert pd.isna(table["image"].iloc[0]) and table["caption"].notna().all()


# ------------------------------------------------------------------------------------------ distributions
def test_histogram_counts_by_hand() -> None:
    got = histogram_counts(np.array([0.1, 0.2, 0.9, np.nan, 1.0]), np.array(["a", "b", "a", "a", "b"]), bins=2,
                           value_range=(0.0, 1.0))
    assert got.to_dict("list") == {"group": ["a", "a", "b", "b"], "left": [0.0, 0.5, 0.0, 0.5],
                                   "right": [0.5, 1.0, 0.5, 1.0], "count": [1, 1, 1, 1]}
    flat = histogram_counts(np.array([2.0, 2.0]), np.array(["g", "g"]), bins=2)  # one value: a unit range
    assert flat["left"].tolist() == [1.5, 2.0] and flat["count"].tolist() == [0, 2]


def test_histogram_figure_splits_by_ground_truth_with_the_threshold() -> None:
    fig = histogram_figure(small_frame(), "clean_prob", "ground truth", threshold=0.3)
    assert [t.name for t in fig.data] == ["clean", "noisy"]
    assert sum(fig.data[1].y) == 2 and fig.layout.barmode == "overlay"
    assert fig.layout.shapes[0].x0 == 0.3
    assert [t.name for t in histogram_figure(small_frame(), "weight").data] == ["all pairs"]
    with pytest.raises(ConcordError, match="no histogram of 'x'"):
        histogram_figure(small_frame(), "x")


def test_threshold_summary_by_hand() -> None:
    frame = small_frame()  # clean_prob 0.25 noisy, 0.75 clean, 0.1 clean, 0.4 noisy
    assert threshold_summary(frame, 0.3) == {"flagged": 2, "known": 4, "precision": 0.5, "recall": 0.5,
                                             "f1": 0.5}
    assert threshold_summary(frame, 0.5) == {"flagged": 3, "known": 4, "precision": 2 / 3, "recall": 1.0,
                                             "f1": 0.8}
    frame.loc[[0, 1], "truth"] = "unknown"  # precision and recall on the pairs with ground truth only
    got = threshold_summary(frame, 0.5)
    want = detection_at_threshold(np.array([False, True]), np.array([0.1, 0.4]), 0.5)
    assert got == {"flagged": 3, "known": 2, "precision": want["precision"], "recall": want["recall"],
                   "f1": want["f1"]}
    frame["truth"] = "unknown"
    assert threshold_summary(frame, 0.5) == {"flagged": 3, "known": 0, "precision": None, "recall": None,
                                             "f1": None}


# ------------------------------------------------------------------------------------------ benchmark
def test_projection_benchmark_at_a_small_size(capsys) -> None:
    from core.cli import main
    assert main(["bench", "projection", "--points", "300", "--no-umap", "--no-docs", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert (row["points"], row["drawn"]) == (300, 300) and "umap_s" not in row
    assert row["json_mb"] > 0 and row["figure_s"] >= 0 and row["run_frame_s"] >= 0
