"""`bench review`: how long the Review page takes from a keypress to the next pair, part by part.

One step is what the page does for a keypress: store the decision (with its meta-data effect), read what
the page reads (finished runs, review sets, splits), rebuild the queue head and progress, find the next
pair's suggestions (faiss under the run's embeddings) and make its images (the large view and the
suggested images' thumbnails, first view: not cached yet). Measured on the demo (5 captions per image) and
on a synthetic store of small PNGs, each with a stand-in finished run (random scores, random clustered
embeddings), in a temporary home and cache (never the user's). These server-side parts leave out
Streamlit's rerun, the websocket and the browser.

`--browser` also measures the whole path: a real `streamlit run app.py` server on the same home and the
Review page in headless Chromium; each keypress (Keep, every fourth one Reject) is timed in the browser
from the key going down until the next pair is shown whole (the card's pair line changed, the decision's
notice shown, every image of the card loaded, at an animation frame), and until the server has stored the
decision (the card's log acknowledged). The next key goes down `--pause-ms` after the decision was stored.
The first keypresses (`--warmup`) fill caches and are reported apart.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from core.benchmarks import add_output_options, peak_rss_gb, write_section

PARTS = ("decision", "page_reads", "queue", "suggestions", "images", "total")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("review", parents=[common], help="Review page latency: keypress to the next pair",
                       description=__doc__)
    p.add_argument("--demo-images", type=int, default=1000, help="demo images, 5 pairs each (default 1000; 0: skip)")
    p.add_argument("--synthetic", type=int, default=100_000,
                   help="pairs of the synthetic store (default 100000; 0: skip)")
    p.add_argument("--captions-per-image", type=int, default=5, help="synthetic pairs per image (default 5)")
    p.add_argument("--steps", type=int, default=50, help="keypresses timed per store (default 50)")
    p.add_argument("--dim", type=int, default=256, help="embedding size of the stand-in run (default 256)")
    p.add_argument("--browser", action="store_true",
                   help="also time keypress → next pair shown in headless Chromium on a real server")
    p.add_argument("--warmup", type=int, default=3, help="browser keypresses before the timed ones (default 3)")
    p.add_argument("--pause-ms", type=int, default=0,
                   help="browser: how long the reviewer looks at each pair shown before the next key (default 0: "
                        "the next key at once)")
    add_output_options(p)
    p.set_defaults(handler=run)


@contextmanager
def _temporary_home(folder: Path) -> Iterator[None]:
    """CONCORD_HOME, CONCORD_DB and CONCORD_CACHE under `folder` while the block runs."""
    keys = ("CONCORD_HOME", "CONCORD_DB", "CONCORD_CACHE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({"CONCORD_HOME": str(folder / "home"), "CONCORD_DB": str(folder / "home" / "bench.duckdb"),
                       "CONCORD_CACHE": str(folder / "cache")})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stand_in_run(store, dataset_id: int, dim: int, seed: int = 0) -> int:
    """A finished run over every pair with random scores (clean probabilities mostly high, as after training)
    and random clustered unit embeddings for every image and caption."""
    from core import artifacts
    rng = np.random.default_rng(seed)
    pairs = store.pairs_frame(dataset_id)[["pair_id", "image_id", "caption_id"]]
    n = len(pairs)
    run_id = store.create_run(dataset_id, "b1", "concord-tiny", seed=seed, threshold=0.5)
    store.write_scores(run_id, pairs["pair_id"].to_numpy(), rng.uniform(-0.2, 0.6, n), rng.beta(5, 2, n),
                       rng.uniform(0, 1, n))
    store.update_run(run_id, state="finished")
    # clustered like a trained model's: images around topic centres, each caption near its image
    images, image_row = np.unique(pairs["image_id"].to_numpy(), return_inverse=True)
    captions, first = np.unique(pairs["caption_id"].to_numpy(), return_index=True)
    centres = rng.normal(size=(max(1, len(images) // 50), dim))
    image_emb = centres[rng.integers(0, len(centres), len(images))] + 0.5 * rng.normal(size=(len(images), dim))
    caption_emb = image_emb[image_row[first]] + 0.5 * rng.normal(size=(len(captions), dim))
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    artifacts.save_embeddings(store.run(run_id),
                              artifacts.RunEmbeddings(images, unit(image_emb), captions, unit(caption_emb)))
    return run_id


def synthetic_dataset(store, folder: Path, pairs: int, per_image: int, val: bool = False) -> int:
    """`pairs` pairs over distinct 16×16 PNGs, `per_image` captions each, every tenth image's in `test` (and
    with `val`, every tenth from the second on in `val`, a clean split); returns the dataset id."""
    from PIL import Image

    from core.hashing import file_hash
    images = -(-pairs // per_image)
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(images):
        path = folder / "img" / f"{i}.png"
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(path)
        digest, size = file_hash(path), path.stat().st_size
        for c in range(min(per_image, pairs - i * per_image)):
            rows.append((f"img/{i}.png", digest, 16, 16, size, f"photo {i}.{c}: a thing of kind {(i * 7 + c) % 997}",
                         "test" if i % 10 == 0 else "val" if val and i % 10 == 1 else "train", f"{i}-{c}"))
    records = pd.DataFrame(rows, columns=["image_path", "image_hash", "width", "height", "nbytes", "caption",
                                          "split", "key"])
    return store.write_dataset("synthetic", folder, "csv", records)["dataset_id"]


def measure(store, dataset_id: int, run_id: int, steps: int) -> dict:
    """Time `steps` keypresses (three keeps, then a reject) on the most-suspicious queue: ms per part."""
    from core.index import RunNeighbours
    from core.review import PAIR_IMAGE_SIZE, SUGGESTED_IMAGE_SIZE, QueueSpec, act, build_queue, suggestions
    from core.thumbnails import image_uri

    ds = store.dataset_by_id(dataset_id)
    run = store.run(run_id)
    t0 = time.perf_counter()
    RunNeighbours.for_run(store, run_id)
    index_s = time.perf_counter() - t0
    spec, opened = QueueSpec(), store.last_decision_id(dataset_id)
    queue = build_queue(store, dataset_id, run, spec, reviewer="bench", opened_at=opened)
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    for i in range(steps):
        marks = [time.perf_counter()]
        act(store, dataset_id, run_id, "bench", "reject" if i % 4 == 3 else "keep", queue.head)
        marks.append(time.perf_counter())
        store.runs(dataset_id, state="finished")
        store.review_sets(dataset_id)
        store.split_names(dataset_id)
        marks.append(time.perf_counter())
        queue = build_queue(store, dataset_id, run, spec, reviewer="bench", opened_at=opened)
        marks.append(time.perf_counter())
        pair = queue.head.iloc[0]
        sugg = suggestions(store, run_id, int(pair["image_id"]), int(pair["caption_id"]), 5, queue.decisions)
        marks.append(time.perf_counter())
        image_uri(ds.root, pair["image_path"], pair["image_hash"], PAIR_IMAGE_SIZE, upscale=True)
        for s in sugg.images.itertuples():
            image_uri(ds.root, s.image_path, s.image_hash, SUGGESTED_IMAGE_SIZE)
        marks.append(time.perf_counter())
        for part, a, b in zip(PARTS, marks, marks[1:]):
            times[part].append(b - a)
        times["total"].append(marks[-1] - marks[0])
    pct = {p: [round(float(np.percentile(v, q)) * 1000, 1) for q in (50, 95)] for p, v in times.items()}
    return {"pairs": int(store.dataset_summary(dataset_id)["pairs"]), "steps": steps,
            "index_build_s": round(index_s, 2), "ms_p50_p95": pct}


BROWSER_REVIEWER = "bench-browser"

# In the page: once the key went down, is the next pair shown? The card's pair (`data-shown`, its line
# `pair KEY · split S`) is another and the decision's notice is there (the first moment is kept as benchLineAt),
# then every image of the card has loaded. Returns the moment (performance.now) all of it holds.
NEXT_PAIR_SHOWN = """([before, notice]) => {
    const card = document.querySelector('.concord-card');
    if (!card || !card.dataset.shown || card.dataset.shown === before || !card.innerText.includes(notice))
        return false;
    if (window.benchLineAt === null) window.benchLineAt = performance.now();
    for (const img of card.querySelectorAll('img')) if (!img.complete || !img.naturalWidth) return false;
    return performance.now();
}"""
# In the page: has the server stored every decision of the card (nothing waits in its log)? When it has.
STORED = """() => document.querySelector('.concord-card')?.dataset.pending === '0' && performance.now()"""
# In the page from its start: when the key went down, and when the server's script started running after it.
KEY_DOWN_AT = """
window.addEventListener('keydown', () => {
    window.benchKeyAt = performance.now(); window.benchRunAt = null; window.benchLineAt = null;
}, true);
new MutationObserver(records => {
    for (const r of records)
        if (window.benchRunAt === null && r.target.getAttribute('data-test-script-state') === 'running')
            window.benchRunAt = performance.now();
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-test-script-state']});
"""


def shown_pair(app) -> str | None:
    """The key of the pair on show (None when the queue is empty)."""
    found = re.search(r"^pair (\S+) · split", app.text(), re.M)
    return found.group(1) if found else None


def timed_keypress(app, key: str, notice: str, pause_ms: int = 0) -> tuple[float, float, float, float]:
    """After `pause_ms` (a reviewer looking at the pair), press `key` with no widget focused; milliseconds (browser
    clock) from the key going down until the server's script starts (NaN when not seen), until the next pair's
    line and `notice` (e.g. "Kept pair {pair}") appear, until that pair is shown whole (images loaded), and until
    the server has stored the decision."""
    if pause_ms:
        app.page.wait_for_timeout(pause_ms)
    before = shown_pair(app)
    app.page.evaluate("document.activeElement && document.activeElement.blur()")
    app.page.keyboard.press(key)
    done = app.page.wait_for_function(NEXT_PAIR_SHOWN, arg=[before, notice.format(pair=before)], polling="raf")
    stored = app.page.wait_for_function(STORED, polling=5)
    down, started, line = app.page.evaluate("[window.benchKeyAt, window.benchRunAt, window.benchLineAt]")
    # no start seen (NaN): a fragment's run (the jobs panel) was going on and the rerun followed it unbroken
    return ((np.nan if started is None else started - down), line - down, float(done.json_value()) - down,
            float(stored.json_value()) - down)


def measure_browser(datasets: list[str], steps: int, warmup: int, folder: Path, pause_ms: int = 0) -> dict[str, dict]:
    """Per dataset: open the Review page on a real server, press `warmup` then `steps` keys (three Keeps, then a
    Reject), each `pause_ms` after the last decision was stored, timed until the next pair is shown and until the
    decision is stored; then count the decisions the server stored. The store must not be open in this process."""
    from playwright.sync_api import sync_playwright

    from core.app_server import AppPage, StreamlitServer, launch_chromium
    from core.first_start import DISABLE_ENV
    from core.store import Store
    server = StreamlitServer({**os.environ, DISABLE_ENV: "1"}, folder / "streamlit.log")
    out: dict[str, dict] = {}
    t0 = time.perf_counter()
    server.start()
    start_s = time.perf_counter() - t0
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.add_init_script(KEY_DOWN_AT)
            app = AppPage(page, server, timeout=600.0).goto("")
            app.fill("Reviewer", BROWSER_REVIEWER)
            for n, name in enumerate(datasets):
                t0 = time.perf_counter()
                app.select("Dataset", name)
                if n == 0:
                    app.nav("Review")
                app.wait_until(lambda: shown_pair(app) is not None, what="the first pair")
                first_s = time.perf_counter() - t0
                ms = np.array([timed_keypress(app, *(("x", "Rejected pair {pair}") if i % 4 == 3 else
                                                      ("k", "Kept pair {pair}")), pause_ms=pause_ms)
                               for i in range(warmup + steps)])
                pct = lambda v: [round(float(np.nanpercentile(v, q)), 1) for q in (50, 95)]  # noqa: E731
                out[name] = {"steps": steps, "server_start_s": round(start_s, 1), "first_pair_s": round(first_s, 1),
                             "warmup_ms": [round(float(m), 1) for m in ms[:warmup, 2]],
                             "to_script_start_ms_p50_p95": pct(ms[warmup:, 0]),
                             "to_pair_line_ms_p50_p95": pct(ms[warmup:, 1]), "ms_p50_p95": pct(ms[warmup:, 2]),
                             "to_stored_ms_p50_p95": pct(ms[warmup:, 3])}
            browser.close()
        for r in out.values():
            r["server_peak_rss_gb"] = peak_rss_gb(server.pid)
    finally:
        server.stop()
    with Store.open() as store:
        for name, r in out.items():
            log = store.decisions_frame(store.dataset(name).id)
            r["decisions_stored"] = int((log["reviewer"] == BROWSER_REVIEWER).sum())
    return out


def markdown(results: dict[str, dict], command: str, load: tuple[float, float], pause_ms: int = 0) -> str:
    browser = any("browser" in r for r in results.values())
    lines = [f"Command: `{command}` ({os.cpu_count()} CPU cores, {platform.machine()}, load average {load[0]:.1f} "
             f"at the start and {load[1]:.1f} at the end; milliseconds, p50 / p95 over the timed keypresses; the "
             "faiss index is built once per run and cached).", "",
             "| store | pairs | index build (once) | decision | page reads | queue | suggestions | images | "
             "server side: keypress → next pair |" + (" browser: keypress → next pair's caption line | browser: "
                                                       "keypress → next pair shown whole | browser: keypress → "
                                                       "decision stored |" if browser else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if browser else "")]
    notes = []
    for name, r in results.items():
        cell = lambda p: f"{r['ms_p50_p95'][p][0]:.0f} / {r['ms_p50_p95'][p][1]:.0f}"  # noqa: E731
        line = (f"| {name} | {r['pairs']:,} | {r['index_build_s']:.1f} s | {cell('decision')} | "
                f"{cell('page_reads')} | {cell('queue')} | {cell('suggestions')} | {cell('images')} | "
                f"**{cell('total')}** |")
        if "browser" in r:
            b = r["browser"]
            line += (f" {b['to_pair_line_ms_p50_p95'][0]:.0f} / {b['to_pair_line_ms_p50_p95'][1]:.0f} |"
                     f" **{b['ms_p50_p95'][0]:.0f} / {b['ms_p50_p95'][1]:.0f}** |"
                     f" {b['to_stored_ms_p50_p95'][0]:.0f} / {b['to_stored_ms_p50_p95'][1]:.0f} |")
            start = b["to_script_start_ms_p50_p95"]
            notes.append(f"{name}: the server's script starts {start[0]:.0f} / {start[1]:.0f} ms after the key; first "
                         f"pair shown {b['first_pair_s']:.1f} s after opening the store; warm-up keypresses (not in "
                         f"the table) {', '.join(f'{m:.0f}' for m in b['warmup_ms'])} ms; "
                         f"{b['decisions_stored']} decisions stored.")
        lines.append(line)
    if notes:
        lines += ["", "In the browser (headless Chromium on a real `streamlit run app.py`, server start "
                  f"{next(iter(results.values()))['browser']['server_start_s']:.1f} s): "
                  "timed in the page from the key going down until the next pair's caption line and the decision's "
                  "notice appear, until the pair is shown whole (every image of the card loaded, at an animation "
                  "frame), and until the server stored the decision (the card's log acknowledged); the next key "
                  "went down after that" + (f" and a {pause_ms} ms look" if pause_ms else "") + ". "
                  + " ".join(notes)]
    return "\n".join(lines)


def run(args: argparse.Namespace, ctx) -> int:
    from core.generated import GenerateOptions, create_generated
    from core.store import Store

    results: dict[str, dict] = {}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="concord-bench-review-") as tmp, _temporary_home(Path(tmp)):
        with Store.open() as store:
            if args.demo_images:
                ds_id = create_generated(store, "demo", GenerateOptions(images=args.demo_images))["dataset_id"]
                results["demo"] = measure(store, ds_id, stand_in_run(store, ds_id, args.dim), args.steps)
                if not args.json:
                    print(json.dumps({"demo": results["demo"]}))
            if args.synthetic:
                ds_id = synthetic_dataset(store, Path(tmp) / "synthetic", args.synthetic, args.captions_per_image)
                results["synthetic"] = measure(store, ds_id, stand_in_run(store, ds_id, args.dim), args.steps)
        if args.browser:
            for name, r in measure_browser(list(results), args.steps, args.warmup, Path(tmp), args.pause_ms).items():
                results[name]["browser"] = r
    command = (f"python -m core bench review --demo-images {args.demo_images} --synthetic {args.synthetic} "
               f"--steps {args.steps}" + (f" --browser --warmup {args.warmup}" if args.browser else "")
               + (f" --pause-ms {args.pause_ms}" if args.browser and args.pause_ms else ""))
    text = markdown(results, command, (load_start, os.getloadavg()[0]), args.pause_ms if args.browser else 0)
    if not args.no_docs:
        write_section("review", "## Review page latency (`bench review`)\n\n" + text)
    if args.json:
        print(json.dumps(results))
    else:
        print(text)
    return 0
