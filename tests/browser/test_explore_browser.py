"""Explore page end to end in headless Chromium: a box drawn on the map selects exactly the pairs inside it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from core.projection import ProjectionSettings, save_projection
from core.store import Store
from tests.test_projection import fabricate_run

COLUMNS = 8  # the seeded map puts pair i at (i % 8, i // 8)


def drag_box(app, x: tuple[float, float], y: tuple[float, float]) -> None:
    """Drag a selection box on the map between the data coordinates (x0, y0) and (x1, y1)."""
    app.page.locator(".stPlotlyChart .js-plotly-plot .nsewdrag").first.wait_for(state="attached")
    corners = app.page.evaluate("""([x, y]) => {
        const gd = document.querySelector('.stPlotlyChart .js-plotly-plot');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [0, 1].map(i => [r.left + xa.l2p(x[i]), r.top + ya.l2p(y[i])]);
    }""", [list(x), list(y)])
    (x0, y0), (x1, y1) = corners
    app.page.mouse.move(x0, y0)
    app.page.mouse.down()
    app.page.mouse.move(x1, y1, steps=12)
    app.page.mouse.up()


def test_box_selection_lists_exactly_the_pairs_inside(server_factory, open_app, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    os.environ["CONCORD_CACHE"] = str(cache)  # restored by tests/conftest.py's monkeypatch
    with Store.open() as s:
        fab = fabricate_run(s, tmp_path / "src")
        ids = fab.pairs["pair_id"].to_numpy()
        grid = pd.DataFrame({"pair_id": ids, "x": np.arange(len(ids)) % COLUMNS, "y": np.arange(len(ids)) // COLUMNS})
        save_projection(s, fab.run_id, ProjectionSettings(), grid)  # the UMAP map, as if computed before
    inside = grid[grid["x"].between(1.5, 4.5) & grid["y"].between(0.5, 2.5)]["pair_id"]
    assert len(inside) == 6

    server = server_factory(env={"CONCORD_CACHE": str(cache)})
    app = open_app(server).nav("Explore")
    app.timeout = 120.0   # "Review these" opens the Review page, whose first load imports the scorers' engine
    app.wait_text("UMAP map of all 40 pairs")
    assert "Nothing selected" in app.text()
    drag_box(app, (1.5, 4.5), (0.5, 2.5))
    app.wait_idle()
    app.wait_text("6 pairs selected")
    app.fill("Review set name", "box")
    app.click("Review these")
    app.wait_until(lambda: "Explore" not in app.page.title() or "Review" in app.text(), what="the Review page")
    server.stop()
    with Store.open() as s:
        sets = s.review_sets(fab.dataset_id)
        assert sets["name"].tolist() == ["box"]
        got = s.review_set_pair_ids(int(sets["set_id"].iloc[0]))
    assert sorted(got) == sorted(inside.tolist())
