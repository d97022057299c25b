"""Explore page (AppTest): the map of a finished run and its colours, the threshold slider's counts and
precision, saving the threshold (as the CLI then sees it), a selection becoming a review set, the UMAP
background job, and the empty states."""
from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import artifacts, projection
from core.cli import main
from core.projection import pca_projection
from core.store import Store
from core.thresholds import detection_at_threshold
from pages.common import get_store, job_manager
from tests.page_resources import fresh_page_resources
from tests.test_projection import fabricate_run

ROOT = Path(__file__).resolve().parent.parent
APP, PAGE = str(ROOT / "app.py"), str(ROOT / "pages" / "explore.py")


@pytest.fixture(autouse=True)
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))
    with fresh_page_resources():
        yield


@pytest.fixture
def fab(tmp_path: Path):
    """A finished run over 40 pairs (8 with injected noise), threshold 0.5; the store closed again."""
    with Store.open() as s:
        return fabricate_run(s, tmp_path / "src")


def explore_page(layout: str = "PCA", dataset: str | None = "ds", **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["dataset"] = dataset
    at.session_state["explore_layout"] = layout
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def map_spec(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def array(value) -> np.ndarray:
    """A figure array from its JSON (plotly writes numeric arrays as base64 `bdata`)."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expected(fab, threshold: float) -> dict:
    return detection_at_threshold(fab.pairs["is_noisy"].to_numpy(), fab.pairs["clean_prob"].to_numpy(), threshold)


def test_renders_a_finished_run_and_recolours(fab) -> None:
    at = explore_page()
    assert at.caption[0].value.startswith("PCA map of all 40 pairs.")
    spec = map_spec(at)
    assert [t["type"] for t in spec["data"]] == ["scattergl"]
    assert sorted(array(spec["data"][0]["customdata"])) == sorted(fab.pairs["pair_id"])
    hover = " ".join(spec["data"][0]["hovertext"])  # the noisy captions hold "<b>&</b>": shown as text
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in hover and "<b>&" not in hover
    assert len(at.get("plotly_chart")) == 4  # the map and three histograms

    at.selectbox(key="explore_colour").set_value("ground truth").run()
    spec = map_spec(at)
    assert [t["name"] for t in spec["data"]] == ["clean", "noisy"]
    assert len(array(spec["data"][1]["customdata"])) == int(fab.pairs["is_noisy"].sum()) == 8

    at.toggle(key="explore_two_sets").set_value(True).run()
    spec = map_spec(at)
    assert spec["data"][0]["mode"] == "lines"
    assert [t["name"] for t in spec["data"][1:]] == ["clean", "noisy", "clean (captions)", "noisy (captions)"]


def test_slider_changes_the_count_and_precision(fab) -> None:
    at = explore_page()
    want = expected(fab, 0.5)
    assert metrics(at)["Flagged"] == str(want["flagged"])
    assert metrics(at)["Precision"] == f"{want['precision']:.1%}"
    at.slider(key=f"explore_threshold_{fab.run_id}").set_value(0.3).run()
    want = expected(fab, 0.3)
    assert metrics(at) == {"Flagged": str(want["flagged"]), "Precision": f"{want['precision']:.1%}",
                           "Recall": f"{want['recall']:.1%}", "F1": f"{want['f1']:.1%}"}
    assert want["flagged"] != expected(fab, 0.5)["flagged"]
    assert get_store().run(fab.run_id).threshold == 0.5  # moving the slider saves nothing


def test_save_threshold_changes_flagged_everywhere(fab, capsys) -> None:
    at = explore_page()
    assert at.button(key="explore_save_threshold").disabled  # nothing to save yet
    at.slider(key=f"explore_threshold_{fab.run_id}").set_value(0.3).run()
    at.button(key="explore_save_threshold").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == f"Saved threshold 0.30 for run {fab.run_id}."
    store = get_store()
    assert store.run(fab.run_id).threshold == pytest.approx(0.3)
    flagged = int((fab.pairs["clean_prob"] < 0.3).sum())
    assert int(store.scores_frame(fab.run_id)["flagged"].sum()) == flagged
    store.close()
    get_store.clear()
    capsys.readouterr()
    assert main(["datasets", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["flagged"] == flagged


def test_a_selection_becomes_a_review_set_and_opens_review(fab) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/explore.py")
    at.session_state["explore_layout"] = "PCA"
    picked = fab.pairs["pair_id"].iloc[[3, 0, 7]].tolist()
    at.session_state["explore_selection"] = {"run_id": fab.run_id, "pair_ids": picked}
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    order = fab.pairs.set_index("pair_id").loc[picked].sort_values("clean_prob").index.tolist()
    assert table["key"].tolist() == fab.pairs.set_index("pair_id").loc[order, "key"].tolist()
    assert all(str(v).startswith("data:image/png;base64,") for v in table["image"])
    assert at.text_input(key="explore_set_name").value == f"map selection · run {fab.run_id} · 3 pairs"
    at.text_input(key="explore_set_name").set_value("odd corner")
    at.button(key="explore_review").click().run()
    assert not at.exception, at.exception
    sets = get_store().review_sets(fab.dataset_id)
    assert sets["name"].tolist() == ["odd corner"]
    set_id = int(sets["set_id"].iloc[0])
    assert at.session_state["review_set_id"] == set_id      # the Review page took the set over
    assert get_store().review_set_pair_ids(set_id) == order  # most suspicious first
    assert at.title[0].value == "Review"


def test_a_selection_of_another_run_is_not_shown(fab) -> None:
    at = explore_page(explore_selection={"run_id": fab.run_id + 1, "pair_ids": [1, 2]})
    assert not at.dataframe
    assert "Nothing selected" in " ".join(c.value for c in at.caption)


def test_umap_computes_in_the_background_with_pca_meanwhile(fab, monkeypatch: pytest.MonkeyPatch) -> None:
    # the job flow is under test here, UMAP itself in test_projection: a stand-in whose map differs from PCA
    # (held until the first view is checked)
    computing = threading.Event()
    monkeypatch.setattr(projection, "umap_projection",
                        lambda vectors, settings, progress: computing.wait(30) and -pca_projection(vectors))
    at = explore_page(layout="UMAP", explore_neighbors=8)
    assert at.caption[0].value.startswith("PCA map of all 40 pairs.")
    assert "the PCA view is shown meanwhile" in at.get("progress")[0].proto.text
    computing.set()
    jobs = job_manager().jobs()
    assert [(j.kind, j.key.startswith(f"projection:{fab.run_id}:")) for j in jobs] == [("projection", True)]
    job = job_manager().wait(jobs[0].id, timeout=120)
    assert job.state == "finished", job.error
    at.run()
    assert not at.exception, at.exception
    assert at.caption[0].value.startswith("UMAP map of all 40 pairs.")
    spec = map_spec(at)
    xy = np.column_stack([array(spec["data"][0]["x"]), array(spec["data"][0]["y"])])
    assert np.allclose(np.sort(xy[:, 0]), np.sort(job.result["x"]), atol=1e-4)
    assert len(job_manager().jobs()) == 1  # cached: not computed again


def test_empty_states(tmp_path: Path) -> None:
    at = explore_page(dataset=None)
    assert "No dataset yet" in at.info[0].value
    with Store.open() as s:
        fab = fabricate_run(s, tmp_path / "src")
        s.update_run(fab.run_id, state="failed")
    get_store.clear()
    at = explore_page()
    assert at.info[0].value == "No finished run for 'ds' yet. Score its pairs on the **Train** page first."
    get_store().update_run(fab.run_id, state="running")          # the first start's b1, say: not "go and train"
    at = explore_page()
    assert at.info[0].value == (f"No finished run for 'ds' yet: run #{fab.run_id} (npc) is running, and this page "
                                "fills when it finishes (progress in the sidebar).")
    get_store().update_run(fab.run_id, state="finished")
    artifacts.embeddings_path(get_store().run(fab.run_id)).unlink()
    at = explore_page()
    assert "has no embeddings" in at.warning[0].value
    assert not [c for c in at.caption if "map of" in c.value]
    assert metrics(at)["Flagged"] == str(expected(fab, 0.5)["flagged"])  # the distributions still work


def test_colour_by_offers_the_runs_extra_score_columns(fab) -> None:
    with Store.open() as s:  # a second run over the same pairs, with concord-like extras
        ids = fab.pairs["pair_id"].to_numpy()
        run = s.create_run(fab.dataset_id, "concord", "concord-tiny", threshold=0.5)
        s.write_scores(run, ids, fab.pairs["similarity"], fab.pairs["clean_prob"], fab.pairs["weight"],
                       {"siblings": np.arange(len(ids), dtype=float), "sibling_rank": np.ones(len(ids))})
        s.update_run(run, state="finished")
        artifacts.save_embeddings(s.run(run), artifacts.load_embeddings(s.run(fab.run_id)))
    at = explore_page(explore_run=fab.run_id)
    plain = at.selectbox(key="explore_colour").options
    assert plain == ["clean_prob", "weight", "similarity", "decision", "split", "ground truth"]
    at = explore_page(explore_run=run)
    options = at.selectbox(key="explore_colour").options
    assert options == ["clean_prob", "weight", "similarity", "sibling_rank", "siblings", "decision", "split",
                       "ground truth"]
    at.selectbox(key="explore_colour").set_value("siblings").run()
    assert not at.exception, at.exception
    trace = map_spec(at)["data"][0]
    order = {int(p): i for i, p in enumerate(ids)}
    colours = dict(zip(array(trace["customdata"]).tolist(), array(trace["marker"]["color"]).tolist()))
    assert colours == {int(p): float(order[int(p)]) for p in ids}  # each pair's own value
    assert trace["marker"]["colorbar"]["title"]["text"] == "siblings"
    # back on a run without extras, the colour falls back to clean_prob
    at.selectbox(key="explore_run").set_value(fab.run_id).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="explore_colour").value == "clean_prob"


def test_a_box_drawn_on_the_map_selects_exactly_the_pairs_inside(fab) -> None:
    at = explore_page()
    spec = map_spec(at)["data"][0]
    x, y, ids = array(spec["x"]), array(spec["y"]), array(spec["customdata"])
    xs, ys = (float(np.quantile(x, 0.2)), float(np.quantile(x, 0.7))), (float(np.min(y)), float(np.median(y)))
    inside = ids[(x >= xs[0]) & (x <= xs[1]) & (y >= ys[0]) & (y <= ys[1])]
    assert 0 < len(inside) < len(ids)
    at.session_state["explore_map"] = {"selection": {"points": [], "point_indices": [], "lasso": [],
                                                     "box": [{"xref": "x", "yref": "y", "x": list(xs), "y": list(ys)}]}}
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert sorted(table["pair_id"]) == sorted(inside.tolist())
    assert f"**{len(inside):,} pairs selected**" in [m.value for m in at.markdown]


def test_the_kept_frame_follows_decisions_and_rescoring(fab) -> None:
    at = explore_page(explore_colour="decision")
    assert [t["name"] for t in map_spec(at)["data"]] == ["undecided"]
    store = get_store()
    first = int(fab.pairs["pair_id"].iloc[0])
    store.decide(fab.dataset_id, [first], "reject", "ann")  # a decision made on another page
    at.run()
    assert [t["name"] for t in map_spec(at)["data"]] == ["undecided", "reject"]
    ids = fab.pairs["pair_id"].to_numpy()
    store.update_clean_prob(fab.run_id, ids, np.full(len(ids), 0.01), np.full(len(ids), 0.01))  # a refit
    at.run()
    assert metrics(at)["Flagged"] == str(len(ids))
