"""`bench map --pairs 100000,1000000 [--browser]`: the Explore map with every point, and a selection on it.

Per N, on synthetic data in a temporary home (never the user's): N pairs with 60-character captions, a
finished run with scores and concord's nine extra score columns, its map (clustered 2-D coordinates saved
as the run's UMAP map) and small stand-in embeddings (the page needs the file). Measured headless, as the
page does it: reading the run's pairs (`run_frame`), building the figure of every point and
its JSON (what Streamlit sends), and the selection of a box and of a 200-vertex lasso (`selected_pairs`),
ordered and tabled (`order_selection`, `selection_table`; the images do not exist, so no thumbnails).
`--browser` also opens the Explore page of a real `streamlit run app.py` server in headless Chromium and
times the first draw (from opening the page until the map holds every point: its WebGL markers, or the
density image above `MapSettings.points_up_to` pairs; a first visit pays the server's imports, then a new
session is timed) and a box dragged on it until the table's count shows, with the server's peak memory (RSS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.benchmarks import add_output_options, counts, peak_rss_gb, write_section
from core.benchmarks.projection import _records, _timed
from core.benchmarks.review import _temporary_home

EXTRAS = ("caption_margin", "image_margin", "image_neighbours", "caption_neighbours", "caption_images", "siblings",
          "sibling_rank", "sibling_margin", "similarity_margin", "text_siblings", "text_sibling_rank",
          "text_sibling_margin", "pixels_image_neighbours", "pixels_caption_neighbours", "pixels_caption_images",
          "look_alikes", "read_alikes", "sibling_count")  # what a concord run writes
LASSO_VERTICES = 200


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("map", parents=[common], help="Explore's map of every point and its selection at N pairs",
                       description=__doc__)
    p.add_argument("--pairs", default="100000,1000000", help="comma-separated pair counts (default 100000,1000000)")
    p.add_argument("--browser", action="store_true", help="also time the first draw and a box in headless Chromium")
    add_output_options(p)
    p.set_defaults(handler=run)


def clustered_map(n: int, clusters: int = 30, seed: int = 0) -> np.ndarray:
    """`n` 2-D points in `clusters` Gaussian blobs (what a UMAP map of topics looks like)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, (clusters, 2))
    return centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.6, (n, 2))


def lasso(centre: tuple[float, float], radius: float, vertices: int = LASSO_VERTICES) -> dict[str, list[float]]:
    """A wobbly closed lasso around `centre` (concave in places), as a plotly_chart selection gives it."""
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = radius * (1 + 0.3 * np.sin(7 * t))
    return {"x": (centre[0] + r * np.cos(t)).tolist(), "y": (centre[1] + r * np.sin(t)).tolist()}


def seed_run(folder: Path, n: int) -> tuple[int, int, pd.DataFrame]:
    """A dataset of `n` pairs and a finished run with extras, embeddings and a saved UMAP map, in the current
    home; returns (dataset id, run id, map coordinates)."""
    from core import artifacts
    from core.projection import ProjectionSettings, save_projection
    from core.store import Store

    rng = np.random.default_rng(1)
    with Store.open() as store:
        store.write_dataset("bench", folder, "csv", _records(n))
        ds = store.dataset("bench")
        pairs = store.pairs_frame(ds.id)[["pair_id", "image_id", "caption_id"]]
        ids = pairs["pair_id"].to_numpy()
        run_id = store.create_run(ds.id, "concord", "bench", threshold=0.5)
        clean = np.where(rng.uniform(size=n) < 0.1, rng.uniform(0, 0.5, n), rng.uniform(0.5, 1, n))
        store.write_scores(run_id, ids, rng.uniform(-0.2, 0.9, n), clean, clean,
                           {name: rng.uniform(size=n) for name in EXTRAS})
        store.update_run(run_id, state="finished")
        dim = 4
        unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
        images, captions = np.unique(pairs["image_id"]), np.unique(pairs["caption_id"])
        artifacts.save_embeddings(store.run(run_id), artifacts.RunEmbeddings(
            images, unit(rng.normal(size=(len(images), dim))), captions, unit(rng.normal(size=(len(captions), dim)))))
        xy = clustered_map(n)
        coords = pd.DataFrame({"pair_id": ids, "x": xy[:, 0], "y": xy[:, 1]})
        save_projection(store, run_id, ProjectionSettings(), coords)
    return ds.id, run_id, coords


def measure(dataset_id: int, run_id: int, coords: pd.DataFrame, folder: Path) -> dict[str, Any]:
    """The headless figures for one seeded run."""
    from core.explore import MapSettings, map_figure, map_points, run_frame
    from core.store import Store

    with Store.open() as store:
        frame, read_s = _timed(run_frame, store, dataset_id, run_id)
        row: dict[str, Any] = {"pairs": len(frame), "run_frame_s": read_s}
        t0 = time.perf_counter()
        points = map_points(store, dataset_id, frame, coords, MapSettings())
        fig = map_figure(points, MapSettings())
        row["figure_s"] = time.perf_counter() - t0
        row.update(_selections(store, dataset_id, frame, points, folder))
    text, row["json_s"] = _timed(fig.to_json)
    row["json_mb"] = len(text) / 1e6
    density = len(points) > MapSettings().points_up_to
    row["drawn"] = "density image {}×{}".format(*MapSettings().density_grid) if density else \
        f"{sum(len(t.x) for t in fig.data):,} markers"
    return row


def _selections(store, dataset_id: int, frame: pd.DataFrame, points: pd.DataFrame, folder: Path) -> dict[str, Any]:
    """A box and a lasso around the map's middle, each selected, ordered and tabled as the page does."""
    from core.explore import order_selection, selected_pairs, selection_table
    row: dict[str, Any] = {}
    centre = (float(np.median(points["x"])), float(np.median(points["y"])))
    shapes = {"box": {"box": [{"x": [centre[0] - 4, centre[0] + 4], "y": [centre[1] - 4, centre[1] + 4]}]},
              "lasso": {"lasso": [lasso(centre, 5.0)]}}
    for name, selection in shapes.items():
        t0 = time.perf_counter()
        picked = selected_pairs(points, selection)
        row[f"{name}_select_s"] = time.perf_counter() - t0
        ordered = order_selection(frame, picked)
        selection_table(store, dataset_id, frame, ordered, str(folder))
        row[f"{name}_to_table_s"] = time.perf_counter() - t0
        row[f"{name}_selected"] = len(picked)
    return row


def measure_browser(n: int, folder: Path) -> dict[str, Any]:
    """First draw of the Explore map and a dragged box → the table's count, in headless Chromium on a real
    server of the current home (the store must not be open in this process)."""
    from playwright.sync_api import sync_playwright

    from core.app_server import AppPage, StreamlitServer, launch_chromium
    from core.explore import MapSettings
    from core.first_start import DISABLE_ENV

    server = StreamlitServer({**os.environ, DISABLE_ENV: "1"}, folder / f"streamlit-{n}.log")
    server.start()
    out: dict[str, Any] = {}
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            for timed in (False, True):  # a warm-up visit pays the server's imports; then a new session
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                app = AppPage(page, server, timeout=900.0).goto("")
                app.wait_idle()
                t0 = time.perf_counter()
                app.nav("Explore")
                page.wait_for_function("""([n, markers]) => {
                    const gd = document.querySelector('.stPlotlyChart .js-plotly-plot');
                    if (!gd || !gd._fullData) return false;
                    if (n > markers) return !!gd.querySelector('.hm image');  // the density image is drawn
                    return gd._fullData.reduce((s, t) => s + (t._length || 0), 0) >= n && gd.querySelector('canvas');
                }""", arg=[n, MapSettings().points_up_to], timeout=900_000, polling=100)
                out["first_draw_s" if timed else "first_draw_cold_s"] = time.perf_counter() - t0
            app.wait_idle()
            t0 = time.perf_counter()
            drag_box(app)
            app.wait_text("pairs selected")
            out["box_to_table_s"] = time.perf_counter() - t0
            out["selected_text"] = next(line for line in app.text().splitlines() if "pairs selected" in line)
            browser.close()
        out["server_peak_rss_gb"] = peak_rss_gb(server.pid)
    finally:
        server.stop()
    return out


def drag_box(app) -> None:
    """Drag a box over the middle third of the map."""
    box = app.page.locator(".stPlotlyChart .js-plotly-plot .nsewdrag").first.bounding_box()
    x0, y0 = box["x"] + box["width"] / 3, box["y"] + box["height"] / 3
    app.page.mouse.move(x0, y0)
    app.page.mouse.down()
    app.page.mouse.move(x0 + box["width"] / 3, y0 + box["height"] / 3, steps=12)
    app.page.mouse.up()


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    fmt = lambda v, p=2: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"Command: `{command}` ({os.cpu_count()} CPU cores, {platform.machine()}; synthetic clustered map, "
             f"a run with concord's {len(EXTRAS)} extra score columns).", "",
             "| pairs | read pairs s | figure build s | figure JSON s | drawn as | JSON MB | box: select s | "
             "box → table s | lasso: select s | lasso → table s | browser: first draw s | "
             "browser: box → table s | server peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r.get("browser", {})
        lines.append(
            f"| {r['pairs']:,} | {fmt(r['run_frame_s'])} | {fmt(r['figure_s'])} | {fmt(r['json_s'])} | "
            f"{r['drawn']} | {fmt(r['json_mb'], 1)} | {fmt(r['box_select_s'], 3)} ({r['box_selected']:,}) | "
            f"{fmt(r['box_to_table_s'])} | {fmt(r['lasso_select_s'], 3)} ({r['lasso_selected']:,}) | "
            f"{fmt(r['lasso_to_table_s'])} | {fmt(b.get('first_draw_s'), 1)} | {fmt(b.get('box_to_table_s'), 1)} | "
            f"{fmt(b.get('server_peak_rss_gb'))} |")
    return "\n".join(lines)


def run(args: argparse.Namespace, ctx) -> int:
    rows = []
    sizes = counts(args.pairs, "--pairs")
    with tempfile.TemporaryDirectory(prefix="concord-bench-map-") as tmp:
        for n in sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            with _temporary_home(folder):
                dataset_id, run_id, coords = seed_run(folder, n)
                row = measure(dataset_id, run_id, coords, folder)
                if args.browser:
                    row["browser"] = measure_browser(n, folder)
            rows.append(row)
            if not args.json:
                print(json.dumps(row, default=float), flush=True)
    command = f"python -m core bench map --pairs {args.pairs}" + (" --browser" if args.browser else "")
    text = markdown(rows, command)
    if not args.no_docs:
        write_section("map", "## Explore map of every point (`bench map`)\n\n" + text)
    if args.json:
        print(json.dumps({"rows": rows}, default=float))
    else:
        print(text)
    return 0
