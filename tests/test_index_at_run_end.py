"""A run builds its nearest-neighbour index when it ends (a stage of its job, with progress), and Review's
suggestions load that index instead of building one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import artifacts, index
from core.cli import main
from core.progress import Progress
from core.review import suggestions


def test_the_index_built_at_the_end_of_a_run_is_the_one_review_uses(store, monkeypatch, tmp_path: Path):
    from core.training import execute_run, start_run
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))   # this run's folder only
    store.close()
    assert main(["demo", "--images", "12", "--noise", "0.4", "--seed", "1"]) == 0
    from core.store import Store
    with Store.open() as s:
        run_id = start_run(s, "demo", "b1", epochs=1, settings={"batch_size": 16})
        stages = []
        progress = Progress(listener=lambda p: stages.append((p.snapshot()["stage"], p.snapshot()["step"])))
        execute_run(s, run_id, progress)
        run = s.run(run_id)
        assert run.state == "finished"
        assert ("index", 2) in stages and stages.index(("index", 2)) > stages.index(("index", 0))
        folder = artifacts.embeddings_path(run).parent / "neighbours"
        assert json.loads((folder / "stamp.json").read_text())["embeddings_size"] == \
            artifacts.embeddings_path(run).stat().st_size
        written = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}

        index._run_neighbours.cache_clear()          # a fresh app process: nothing in memory

        def no_build(*a, **k):
            raise AssertionError("Review built an index")
        monkeypatch.setattr(index.VectorIndex, "build", no_build)
        pair = s.pairs_frame(run.dataset_id).iloc[0]
        got = suggestions(s, run_id, int(pair["image_id"]), int(pair["caption_id"]), k=3)
        assert len(got.captions) == 3 and len(got.images) == 3
        assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")} == written   # loaded, not rewritten


def test_building_again_with_the_stamp_in_place_does_nothing(store, monkeypatch, tmp_path: Path):
    """`build_for_run` on a run whose index is on disk reports no index stage and builds nothing."""
    import numpy as np
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))
    from tests.test_review import review_run
    rv = review_run(store, tmp_path / "data")
    first = Progress()
    index.RunNeighbours.build_for_run(store, rv.run_id, first)
    assert first.snapshot()["stage"] == "index" and first.snapshot()["step"] == 2
    monkeypatch.setattr(index.VectorIndex, "build", lambda *a, **k: pytest.fail("built twice"))
    again = Progress()
    index.RunNeighbours.build_for_run(store, rv.run_id, again)
    assert again.snapshot()["stage"] != "index"
    nb = index.RunNeighbours.for_run(store, rv.run_id)
    assert np.array_equal(nb.captions_for_image(rv.image["a"], 1)["caption_id"], [rv.caption["a red circle"]])
