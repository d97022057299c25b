"""`bench scale --pairs 100000,1000000 [--browser] [--steps …]`: every step a user takes at N pairs, in one table.

Per N, in a temporary home, database and cache (never the user's), one after another as a user would:

- generate (setup): N pairs as `bench import` makes them, a CSV and real 16×16 PNGs (`--captions-per-image`).
- import: `import_dataset` of that CSV (hashing and checking every image).
- features: the caption features (the default model's text tower) and the image inputs (concord-tiny trains its
  image tower, so its image "features" are the images decoded and resized to 64 px) of the first
  `--feature-sample` pairs, through the caching pipeline; the seconds for N are PROJECTED from that rate and
  labelled so (`--feature-sample 0` measures the whole dataset instead).
- stand-in (setup): a finished run over every pair with precomputed stand-in embeddings (random clustered
  `--dim`-d vectors, as `bench review` makes them), since training at N is not what this measures.
- index: the faiss indexes of the stand-in run's images and captions (`RunNeighbours.build_for_run`).
- scoring: a scoring run's scoring pass on those precomputed stand-in embeddings: a whole `concord` run over the
  stand-in run (consensus signals, constructed negatives, fit, every pair's scores written and, as every run
  does when it ends, its own index), as `bench consensus` runs it.
- map: the UMAP map of the scoring run (`project_run`: PCA-50, faiss neighbours, fit on a 50k sample, the rest
  placed), then its first draw as the Explore page makes it (the cached map read, `run_frame`, the figure of
  every point and its JSON; with `--browser`, Chromium's first draw, as `bench map --browser`).
- explore: a box and a lasso selection → the table (`bench map`'s selection; with `--browser`, a dragged box
  until the table's count shows).
- review: keypress → next pair on the Review queue, server-side parts (`bench review`), and with `--browser` in
  headless Chromium on a real server until the next pair is shown whole (`bench review --browser`).
- export: `export_dataset` in the dataset's format, images copied (`--export-images paths`: not copied).

Each step runs in a process of its own, forked from a fork server (a fresh interpreter, so each step imports
only what it needs: a plain fork of a process whose torch threads have run can hang), and reports that process's
peak resident memory (`ru_maxrss`); the browser steps also give the app server's peak (VmHWM of the `streamlit run`
process).
`--steps` picks steps (generate and import always run: every other step needs the dataset), `--budget-min`
stops the benchmark when a wall-clock budget is spent (the step under way is stopped and named so, the rest are
marked not run), `--browser-limit-min` stops a browser step that has not finished (the benchmark goes on). The
table is rewritten into `docs/benchmarks.md` (section `scale: PAIRS`) after every step, so a long run that is
stopped leaves what finished.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from core.benchmarks import add_output_options, check_ranges, counts, names, write_section

STEPS = ("import", "features", "index", "scoring", "map", "explore", "review", "export")
NEEDS_RUN = {"index", "scoring", "map", "explore", "review"}
DATASET = "bench"
SECTION = "scale"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scale", parents=[common], help="every user step at N pairs: seconds and peak memory",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default="100000,1000000", help="comma-separated pair counts (default 100000,1000000)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps (default all: {','.join(STEPS)})")
    p.add_argument("--browser", action="store_true",
                   help="also time the map's first draw, a box selection and Review keypresses in headless Chromium")
    p.add_argument("--captions-per-image", type=int, default=1, help="pairs sharing each image (default 1)")
    p.add_argument("--workers", type=int, default=2, help="import's image-checking processes (default 2)")
    p.add_argument("--feature-sample", type=int, default=2000,
                   help="pairs whose features are computed, N's seconds projected from them (default 2000; 0: all)")
    p.add_argument("--dim", type=int, default=256, help="embedding size of the stand-in run (default 256)")
    p.add_argument("--review-steps", type=int, default=50, help="keypresses timed (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="browser keypresses before the timed ones (default 3)")
    p.add_argument("--export-images", choices=("copy", "paths"), default="copy", help="export's images (default copy)")
    p.add_argument("--budget-min", type=float, default=0.0, help="stop after this many minutes (default 0: no limit)")
    p.add_argument("--browser-limit-min", type=float, default=15.0,
                   help="stop a browser step after this many minutes and go on with the next (default 15)")
    add_output_options(p)
    p.set_defaults(handler=run)


# ------------------------------------------------------------------------------------------- the steps
# Each runs in its own process in the temporary home; `state` holds what earlier steps made (ids, paths).

def _store():
    from core.store import Store
    return Store.open()


def step_generate(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks.import_ import generate_pairs
    data = folder / "data"
    data.mkdir()
    t0 = time.perf_counter()
    csv = generate_pairs(data, n, args.captions_per_image)
    return {"seconds": time.perf_counter() - t0, "csv": str(csv), "images": -(-n // args.captions_per_image)}


def step_import(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.importers import import_dataset
    with _store() as store:
        t0 = time.perf_counter()
        report = import_dataset(store, state["csv"], DATASET, workers=args.workers)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "pairs": report.pairs, "images": report.images,
                "dataset_id": store.dataset(DATASET).id}


def step_features(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.features import encode_texts, image_pixels, text_features
    from core.models import DEFAULT_MODEL, model_info
    with _store() as store:
        target = state["dataset_id"]
        if 0 < args.feature_sample < n:   # the first pairs as a dataset of their own, so the pipeline sees only them
            ds = store.dataset_by_id(target)
            records = store.dataset_records(target).head(args.feature_sample)
            target = store.write_dataset(f"{DATASET}-sample", ds.root, ds.source_format, records)["dataset_id"]
        summary = store.dataset_summary(target)
        t0 = time.perf_counter()
        encode_texts(["loading the model"], DEFAULT_MODEL)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        captions = len(text_features(store, target, DEFAULT_MODEL).ids)
        caption_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        images = len(image_pixels(store, target, model_info(DEFAULT_MODEL).image_size).ids)
        image_s = time.perf_counter() - t0
        full = store.dataset_summary(state["dataset_id"])
    return {"model": DEFAULT_MODEL, "model_load_s": load_s, "sample_pairs": int(summary["pairs"]),
            "captions": captions, "caption_s": caption_s, "images": images, "image_s": image_s,
            "all_captions": int(full["captions"]), "all_images": int(full["images"]),
            "projected": captions < int(full["captions"])}


def step_stand_in(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks.review import stand_in_run
    with _store() as store:
        t0 = time.perf_counter()
        run_id = stand_in_run(store, state["dataset_id"], args.dim)
        return {"seconds": time.perf_counter() - t0, "base_run": run_id}


def step_index(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.index import RunNeighbours
    with _store() as store:
        t0 = time.perf_counter()
        RunNeighbours.build_for_run(store, state["base_run"])
        return {"seconds": time.perf_counter() - t0}


def step_scoring(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks.consensus import fused_run
    from core.progress import Progress
    from core.training import execute_run
    with _store() as store:
        run_id = fused_run(store, DATASET, state["base_run"])
        t0 = time.perf_counter()
        execute_run(store, run_id, Progress())
        return {"seconds": time.perf_counter() - t0, "run_id": run_id}


def step_projection(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks.projection import WARMUP_POINTS, synthetic_vectors
    from core.progress import Progress
    from core.projection import ProjectionSettings, project_run, umap_projection
    t0 = time.perf_counter()   # a fresh process compiles UMAP's numba code first, as a fresh server does once
    umap_projection(synthetic_vectors(min(n, WARMUP_POINTS), 64), ProjectionSettings(), Progress())
    warmup_s = time.perf_counter() - t0
    with _store() as store:
        t0 = time.perf_counter()
        project_run(store, state["run_id"], ProjectionSettings(), Progress())
        return {"seconds": time.perf_counter() - t0, "warmup_s": warmup_s}


def step_draw(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks import map as map_bench
    from core.projection import ProjectionSettings, cached_projection
    with _store() as store:
        t0 = time.perf_counter()
        coords = cached_projection(store, state["run_id"], ProjectionSettings())
        read_map_s = time.perf_counter() - t0
    return {"read_map_s": read_map_s, **map_bench.measure(state["dataset_id"], state["run_id"], coords, folder)}


def step_draw_browser(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks import map as map_bench
    return map_bench.measure_browser(n, folder)


def step_review(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks import review as review_bench
    with _store() as store:
        return review_bench.measure(store, state["dataset_id"], state["run_id"], args.review_steps)


def step_review_browser(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.benchmarks import review as review_bench
    return review_bench.measure_browser([DATASET], args.review_steps, args.warmup, folder)[DATASET]


def step_export(folder: Path, n: int, args: argparse.Namespace, state: dict) -> dict:
    from core.export import ExportOptions, export_dataset, folder_size
    target = folder / "export"
    with _store() as store:
        t0 = time.perf_counter()
        manifest = export_dataset(store, DATASET, target, ExportOptions(images=args.export_images))
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "format": manifest.get("format"), "images": args.export_images,
            "mb": folder_size(target) / 1e6}


Step = Callable[[Path, int, argparse.Namespace, dict], dict]


def plan(steps: set[str], browser: bool = False) -> list[tuple[str, Step]]:
    """The processes to run for the steps asked for, in order (generate and import always; the stand-in run
    when a step needs a run; the map's projection and draw for map or explore; with `browser`, the browser
    parts of the map and of Review in processes of their own)."""
    out: list[tuple[str, Step]] = [("generate", step_generate), ("import", step_import)]
    if "features" in steps:
        out.append(("features", step_features))
    if steps & NEEDS_RUN:
        out.append(("stand-in", step_stand_in))
    for name, fn in (("index", step_index), ("scoring", step_scoring)):
        if name in steps:
            out.append((name, fn))
    if steps & {"map", "explore"}:
        out += [("projection", step_projection), ("draw", step_draw)]
        if browser:
            out.append(("draw-browser", step_draw_browser))
    if "review" in steps:
        out.append(("review", step_review))
        if browser:
            out.append(("review-browser", step_review_browser))
    if "export" in steps:
        out.append(("export", step_export))
    return out


# ------------------------------------------------------------------------------------------- processes
def _child(fn: Step, folder: Path, n: int, args: argparse.Namespace, state: dict, out: Path) -> None:
    """In the step's process: run one step in the temporary home, write its figures and this process's peak
    resident memory to `out`."""
    from core.benchmarks.review import _temporary_home
    os.setsid()   # its own process group, so that a stopped step takes its browsers with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))   # unwinds: servers are stopped
    result: dict[str, Any]
    try:
        with _temporary_home(folder):
            result = {"ok": True, "figures": fn(folder, n, args, state)}
    except BaseException as exc:  # noqa: BLE001 - reported in the table, the benchmark goes on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out.write_text(json.dumps(result, default=float), encoding="utf-8")


def _stop(proc: multiprocessing.process.BaseProcess, grace: float = 30.0) -> None:
    """Stop a step's process (SIGTERM: it unwinds, stopping the servers it started), then kill what is left of
    its process group (browsers), and reap it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.join(wait)


def run_step(name: str, fn: Step, folder: Path, n: int, args: argparse.Namespace, state: dict,
             deadline: float | None) -> dict:
    """Run one step in a process of its own (stopped at `deadline`, a `time.monotonic()` moment); its result with
    the process's wall seconds."""
    out = folder / f"{name}.result.json"
    # forkserver, not fork: a fork of a process whose torch (OpenMP) threads have run hangs in the child's
    # first parallel op; the fork server is a fresh interpreter, each step imports what it needs
    proc = multiprocessing.get_context("forkserver").Process(target=_child, args=(fn, folder, n, args, state, out))
    t0 = time.perf_counter()
    proc.start()
    try:
        proc.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except BaseException:   # interrupted (Ctrl-C, SIGTERM): the step's process group goes too
        _stop(proc)
        raise
    wall = time.perf_counter() - t0
    if proc.is_alive():
        _stop(proc)
        return {"ok": False, "stopped": True, "error": f"stopped after {wall / 60:.0f} min: the time budget was spent",
                "wall_s": wall}
    if not out.exists():
        return {"ok": False, "error": f"the step's process ended with code {proc.exitcode}", "wall_s": wall}
    return {**json.loads(out.read_text(encoding="utf-8")), "wall_s": wall}


def measure_size(n: int, args: argparse.Namespace, folder: Path, deadline: float | None,
                 results: dict[str, dict], on_step: Callable[[], None]) -> None:
    """Every planned step at `n` pairs, in order, into `results` (step → result); `on_step` is called after each."""
    state: dict[str, Any] = {}
    todo = plan(set(names(args.steps, "--steps", STEPS, "steps")), args.browser)
    for i, (name, fn) in enumerate(todo):
        limit = time.monotonic() + args.browser_limit_min * 60 if name.endswith("-browser") else None
        stop_at = min((d for d in (deadline, limit) if d is not None), default=None)
        r = results[name] = run_step(name, fn, folder, n, args, state, stop_at)
        if r.get("stopped") and stop_at != deadline:
            r["error"] = f"stopped at the browser limit ({args.browser_limit_min:g} min)"
            r["stopped"] = False   # the benchmark goes on
        if "trace" in r:
            print(f"bench scale: {name} at {n:,} pairs failed:\n{r['trace']}", file=sys.stderr, flush=True)
        figures = r.get("figures", {})
        state.update({k: figures[k] for k in ("csv", "dataset_id", "base_run", "run_id") if k in figures})
        if name == "stand-in" and "base_run" in figures:
            state.setdefault("run_id", figures["base_run"])   # used until (unless) a scoring run replaces it
        on_step()
        if not r["ok"] and (r.get("stopped") or name in ("generate", "import", "stand-in")):
            why = "the time budget was spent" if r.get("stopped") else f"{name} failed"
            for later, _ in todo[i + 1:]:
                results[later] = {"ok": False, "not_run": True, "error": f"not run: {why}"}
            break


# ------------------------------------------------------------------------------------------- the table
def _s(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def rows(results: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(step, target at 1M pairs, seconds cell, peak RSS cell) for one size, every row the table has, in order."""
    out: list[tuple[str, str, str, str]] = []

    def add(label: str, key: str, cell: Callable[[dict], tuple[str, str | None]], target: str = "") -> None:
        r = results.get(key)
        if r is None:
            out.append((label, target, "skipped", "–"))
        elif not r["ok"]:
            out.append((label, target, r["error"].splitlines()[0][:120], "–"))
        else:
            seconds, rss = cell(r["figures"])
            out.append((label, target, seconds, rss if rss is not None else f"{r['peak_rss_gb']:.2f}"))

    def browser(key: str, label: str, pick: Callable[[dict], str], target: str) -> None:
        if key not in results and (key.removesuffix("-browser") in results):
            out.append((label, target, "not run (no `--browser`)", "–"))
            return
        add(label, key, lambda b: (pick(b), "app server " + ("–" if b.get("server_peak_rss_gb") is None
                                                              else f"{b['server_peak_rss_gb']:.2f}")), target)

    add("generate (setup: CSV and PNGs)", "generate", lambda f: (_s(f["seconds"]), None))
    add("import", "import", lambda f: (f"**{_s(f['seconds'])}** ({f['pairs'] / f['seconds']:,.0f} pairs/s)", None),
        "< 5 min")

    def features(kind: str, count: str, total: str, secs: str) -> Callable[[dict], tuple[str, str | None]]:
        def cell(f: dict) -> tuple[str, str | None]:
            rate = f[count] / f[secs]
            if f["projected"]:
                return (f"{_s(f[total] / rate)} **projected** ({rate:,.0f} {kind}/s measured on {f[count]:,}; "
                        f"model load {f['model_load_s']:.1f} s apart)", None)
            return f"{_s(f[secs])} ({rate:,.0f} {kind}/s)", None
        return cell
    add("caption features (text tower)", "features", features("captions", "captions", "all_captions", "caption_s"))
    add("image inputs (decode, 64 px)", "features", features("images", "images", "all_images", "image_s"))
    add("stand-in run (setup: random clustered embeddings)", "stand-in", lambda f: (_s(f["seconds"]), None))
    add("faiss index (images and captions)", "index", lambda f: (_s(f["seconds"]), None))
    add("scoring pass (`concord` run on the stand-in embeddings)", "scoring", lambda f: (_s(f["seconds"]), None))
    add("map: projection (UMAP)", "projection", lambda f: (
        f"**{_s(f['seconds'])}** (after a {_s(f['warmup_s'])} s numba warm-up, apart)", None),
        "100k < 60 s, 1M < 15 min")
    add("map: first draw (headless: map read, pairs, figure, JSON)", "draw", lambda f: (
        _s(f["read_map_s"] + f["run_frame_s"] + f["figure_s"] + f["json_s"]) + f" ({f['json_mb']:.0f} MB JSON)", None))
    browser("draw-browser", "map: first draw (browser)", lambda b: f"**{_s(b['first_draw_s'])}**", "< 5 s")
    add("explore: box → table", "draw", lambda f: (
        f"**{_s(f['box_to_table_s'])}** ({f['box_selected']:,} pairs; lasso {_s(f['lasso_to_table_s'])})",
        "the draw's process"), "< 1 s")
    browser("draw-browser", "explore: box → table (browser)", lambda b: f"**{_s(b['box_to_table_s'])}** "
            f"({b['selected_text'].split(' pairs selected')[0]} pairs)", "< 1 s")
    add("review: keypress → next pair (server side)", "review", lambda f: (
        "{:.0f} / {:.0f} ms p50 / p95 (index load {:.1f} s)".format(*f["ms_p50_p95"]["total"], f["index_build_s"]),
        None))
    browser("review-browser", "review: keypress → next pair shown whole (browser)",
            lambda b: "**{:.0f} / {:.0f} ms** p50 / p95".format(*b["ms_p50_p95"]), "p95 < 150 ms")
    add("export", "export", lambda f: (f"**{_s(f['seconds'])}** ({f['format']}, images {f['images']}, "
                                       f"{f['mb']:,.0f} MB)", None), "< 3 min")
    return out


def markdown(sizes: dict[int, dict[str, dict]], command: str, done: bool) -> str:
    tables = {n: rows(r) for n, r in sizes.items()}
    first = next(iter(tables.values()), [])
    lines = [f"Command: `{command}` ({os.cpu_count()} CPU cores, {platform.machine()}, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU; "
             f"load average {os.getloadavg()[0]:.1f} when written" + ("" if done else "; **still running**") + ").",
             "", "Seconds once each; peak RSS (GB) is each step's own process (a fresh interpreter that imports what "
             "the step needs); the browser rows give the app server's peak instead (its `streamlit run` process). "
             "Bold: the figures the targets are about; projected figures are extrapolated from the sample named, "
             "not measured.",
             "", "| step | target at 1M | " + " | ".join(f"{n:,}: seconds | {n:,}: peak RSS GB" for n in tables) + " |",
             "|---|---|" + "---|---|" * len(tables)]
    for i, (label, target, _, _) in enumerate(first):
        lines.append(f"| {label} | {target} | " + " | ".join(f"{t[i][2]} | {t[i][3]}" for t in tables.values()) + " |")
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    parts = [f"python -m core bench scale --pairs {args.pairs}"]
    if args.steps != ",".join(STEPS):
        parts.append(f"--steps {args.steps}")
    for flag, value, default in (("--captions-per-image", args.captions_per_image, 1), ("--workers", args.workers, 2),
                                 ("--feature-sample", args.feature_sample, 2000), ("--dim", args.dim, 256),
                                 ("--review-steps", args.review_steps, 50),
                                 ("--export-images", args.export_images, "copy"),
                                 ("--budget-min", args.budget_min, 0.0),
                                 ("--browser-limit-min", args.browser_limit_min, 15.0)):
        if value != default:
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if args.browser:
        parts.append(f"--browser --warmup {args.warmup}")
    return " ".join(parts)


def run(args: argparse.Namespace, ctx) -> int:
    sizes_asked = counts(args.pairs, "--pairs")
    names(args.steps, "--steps", STEPS, "steps")
    check_ranges(args, {"captions_per_image": 1, "feature_sample": 0, "dim": 1, "review_steps": 1, "warmup": 0})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))   # so that a step under way is stopped
    deadline = time.monotonic() + args.budget_min * 60 if args.budget_min > 0 else None
    command = command_line(args)
    sizes: dict[int, dict[str, dict]] = {}

    def write(done: bool = False) -> None:
        if not args.no_docs:
            write_section(f"{SECTION}: {args.pairs}", "## Every step at scale (`bench scale`)\n\n" +
                          markdown(sizes, command, done))

    with tempfile.TemporaryDirectory(prefix="concord-bench-scale-") as tmp:
        for n in sizes_asked:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            sizes[n] = {}
            measure_size(n, args, folder, deadline, sizes[n], write)
            if not args.json:
                print(json.dumps({n: {k: v.get("figures", v.get("error")) for k, v in sizes[n].items()}},
                                 default=float), flush=True)
    write(done=True)
    if args.json:
        print(json.dumps({"sizes": sizes}, default=float))
    else:
        print(markdown(sizes, command, True))
    return 0

