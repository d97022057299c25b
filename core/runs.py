"""Runs as the CLI and the Train page show them: rows of figures to compare, live progress views, resume, delete.

Pure reads of a `Run` row (and of a progress record, see `core.jobs.progress_record`) into plain data,
so `python -m core runs` and the Train page list the same figures, and the page's charts are tested headless.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from typing import Any, Callable, Hashable

import pandas as pd

from core import artifacts
from core.errors import ConcordError
from core.methods import METHODS, Setting
from core.methods.config import MethodConfig
from core.progress import format_eta

RESUMABLE_STATES = ("queued", "cancelled", "interrupted", "failed")
MAIN_SETTINGS = ("epochs", "batch_size", "lr")
_EPOCH_STAGE = re.compile(r"^epoch (\d+)/(\d+)$")

TABLE_COLUMNS = {"run_id": "run", "method": "method", "model": "model", "regime": "regime", "state": "state",
                 "epochs": "epochs", "lr": "lr", "auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "flagged": "flagged",
                 "rsum": "rSum", "seconds": "time (s)", "created_at": "created"}


def latest_of_each(runs: list, key: Callable[[Any], Hashable]) -> dict[Hashable, Any]:
    """key -> the latest (highest id) of `runs` with that key, in the order each key first appeared by id."""
    latest: dict[Hashable, Any] = {}
    for run in sorted(runs, key=lambda r: r.id):
        latest[key(run)] = run
    return latest


def run_lr(run) -> float | None:
    """The run's learning rate (None where its method has none, e.g. a scorer): what tells two networks of one
    method apart (`concord` fuses the latest of each method and rate; the benchmarks name them apart)."""
    return (run.config or {}).get("lr")


def same_rate(lr: float | None, other: float) -> bool:
    """Whether learning rate `lr` (None: a run without one) is `other`, up to float noise: one test for every
    place that asks whether a run is at a given rate (its label, the fused run's faster b1)."""
    return lr is not None and math.isclose(float(lr), other, rel_tol=1e-9)


_SHARED_LR = next(f.default for f in dataclasses.fields(MethodConfig) if f.name == "lr")


def method_label(run) -> str:
    """A run's method, with its learning rate where that is not the method's default (`b1 lr=0.01`, e.g. a
    faster b1 fused beside the others), so two networks of one method stay apart in pickers and tables. Every
    network method shares `MethodConfig`'s rate unless its name overrides it; read without loading torch."""
    lr = run_lr(run)
    spec = METHODS.get(run.method)
    if lr is None or spec is None or same_rate(lr, spec.overrides.get("lr", _SHARED_LR)):
        return run.method
    return f"{run.method} lr={float(lr):g}"


FUSING_METHOD = next(name for name, s in METHODS.items() if s.scorer)
"""The method that fuses the finished runs (`concord`), named from its spec so a page need not load its engine."""


def _scorer(run) -> bool:
    spec = METHODS.get(run.method)
    return spec is not None and spec.scorer


def _live_scorers(runs: list) -> list:
    return [r for r in runs if _scorer(r) and r.state not in ("failed", "cancelled")]


def trained_by_fusion(runs: list) -> set[int]:
    """Ids of the runs a scorer run that is not failed or cancelled trained for itself (its base runs newer than
    it: the b1 a `concord` run trains on a dataset with none, and the faster b1 when `fast_b1_lr` is set)."""
    return {b for r in _live_scorers(runs) for b in (r.metrics or {}).get("base_runs", []) if b > r.id}


def unfused_runs(runs: list) -> list:
    """The finished trained runs (oldest first) newer than the dataset's latest scorer run that is not failed or
    cancelled (`concord`, which fuses the latest run of each method and learning rate when it runs), less those
    it trained itself: what a new fused run would add."""
    newest = max((r.id for r in _live_scorers(runs)), default=0)
    inner = trained_by_fusion(runs)
    return sorted((r for r in runs if r.state == "finished" and not _scorer(r) and r.id > newest and r.id not in inner),
                  key=lambda r: r.id)


def picked_first(runs: list):
    """The run a page's picker starts on, from `runs` (newest first, not empty): one that is running now (the
    first start's b1, not the fused run queued behind it), else the newest that no scorer run trained for itself
    (a b1 a `concord` run trains is newer than the fused run, and less worth opening)."""
    inner = trained_by_fusion(runs)
    outer = [r for r in runs if r.id not in inner]
    return next((r for r in outer if r.state == "running"), None) or next(iter(outer), runs[0])


def run_row(run) -> dict:
    """A run as the CLI and the pages list it."""
    det = run.metrics.get("detection") or {}
    ret = run.metrics.get("retrieval") or {}
    seconds = None
    if run.started_at and run.finished_at:
        seconds = (run.finished_at - run.started_at).total_seconds()
    scorer = _scorer(run)       # a scorer trains nothing itself: no regime, no epochs
    return {"run_id": run.id, "method": run.method, "model": run.model, "regime": None if scorer else run.regime,
            "seed": run.seed, "state": run.state, "threshold": run.threshold,
            "epochs": None if scorer else run.config.get("epochs"), "lr": None if scorer else run_lr(run),
            "auroc": det.get("auroc"), "auprc": det.get("auprc"), "f1": det.get("f1"), "flagged": det.get("flagged"),
            "rsum": ret.get("rsum"), "seconds": seconds, "seconds_per_epoch": run.metrics.get("seconds_per_epoch"),
            "created_at": run.created_at.isoformat(timespec="seconds"),
            "error": (run.error or "").split("\n")[0] or None}


def runs_table(runs: list) -> pd.DataFrame:
    """The Train page's table of runs (newest first as given), one row per run with its headline figures."""
    frame = pd.DataFrame([run_row(r) for r in runs], columns=list(TABLE_COLUMNS))
    return frame.rename(columns=TABLE_COLUMNS)


def run_label(run) -> str:
    """`#3 · b1 · finished`: how a run is named in pickers."""
    return f"#{run.id} · {method_label(run)} · {run.state}"


def run_title(run) -> str:
    """`run 3 · b1 · concord-tiny`: the run, what trained it and on which model; the start of every longer name
    (the Explore and Review pickers, the Datasets and Export pickers, a training job's label)."""
    return f"run {run.id} · {method_label(run)} · {run.model}"


def scored_run_label(run) -> str:
    """`run 3 · b1 · concord-tiny · threshold 0.50 · 2026-12-06 10:52`: a finished run in the Explore and Review
    pickers."""
    when = run.finished_at.strftime("%Y-%m-%d %H:%M") if run.finished_at else ""
    return f"{run_title(run)} · threshold {run.threshold:.2f} · {when}"


def check_resumable(run) -> None:
    """ConcordError unless the run can be resumed (cancelled, interrupted, failed, or queued with no job)."""
    if run.state not in RESUMABLE_STATES:
        raise ConcordError(f"run {run.id} is {run.state}; only a cancelled, interrupted or failed run can be resumed")


def in_progress(run, live: bool) -> bool:
    """Whether `run` is being executed: a job of this process's executes it (`live`), or another process runs it."""
    return live or run.state == "running"


def delete_run(store, run, live: bool) -> None:
    """Delete a run's row, scores and cached artifacts (checkpoint, embeddings); refused while it is in progress."""
    if in_progress(run, live):
        raise ConcordError(f"run {run.id} is {run.state}; cancel it before deleting it")
    store.delete_run(run.id)
    artifacts.clear_run(run)


def loss_frame(record: dict[str, Any]) -> pd.DataFrame:
    """The loss curve of a progress record: one row per recorded point (`update`, `loss`), empty before any.

    A point's `step` counts within its stage (each epoch starts again), so `update` adds the steps of the
    stages before it: a step lower than the previous point's begins a new stage."""
    points, offset, last = [], 0.0, 0.0
    for p in record.get("history") or []:
        if p["step"] < last:
            offset += last
        last = p["step"]
        if "loss" in p:
            points.append((offset + p["step"], p["loss"]))
    return pd.DataFrame(points, columns=["update", "loss"])


def epochs_frame(record: dict[str, Any]) -> pd.DataFrame:
    """A progress record's epoch summaries as a table (one row per epoch done)."""
    return pd.DataFrame(record.get("epochs") or [])


def overall_eta(record: dict[str, Any]) -> float | None:
    """Seconds left in the whole training, not only the current stage: during epoch e of E the stage's ETA
    plus E − e more epochs at the current rate. Other stages: the stage's own ETA (None when unknown)."""
    eta, rate, total = record.get("eta"), record.get("rate"), record.get("total")
    m = _EPOCH_STAGE.match(record.get("stage") or "")
    if eta is None or m is None or not rate or not total:
        return eta
    epoch, epochs = int(m.group(1)), int(m.group(2))
    return eta + (epochs - epoch) * total / rate


def overall_fraction(record: dict[str, Any]) -> float:
    """How much of the whole training is done, in [0, 1]: during epoch e of E, (e − 1 + the epoch's fraction) / E;
    in other stages the stage's own fraction (0 when unknown)."""
    fraction = record.get("fraction") or 0.0
    m = _EPOCH_STAGE.match(record.get("stage") or "")
    if m is None:
        return fraction
    return min(1.0, (int(m.group(1)) - 1 + fraction) / int(m.group(2)))


def progress_text(record: dict[str, Any]) -> str:
    """One line for a progress bar: `b1: epoch 2/8 · 3/10 · 4.2 steps/s · ETA 1m05s` (what is known)."""
    parts = [record.get("message") or record.get("stage") or "starting"]
    if record.get("total"):
        parts.append(f"{record.get('step', 0)}/{record['total']}")
    if record.get("rate"):
        parts.append(f"{record['rate']:.1f} steps/s")
    eta = overall_eta(record)
    if eta is not None:
        parts.append(f"ETA {format_eta(eta)}")
    return " · ".join(parts)


def method_choices(image_pretrained: bool) -> list[str]:
    """Methods a run can use with a model: B0 scores with a pretrained image tower only; a method whose
    code is not part of this install is not offered."""
    return [name for name, s in METHODS.items()
            if (image_pretrained or not s.needs_pretrained) and importlib.util.find_spec(s.module) is not None]


def regime_choices(regimes: tuple[str, ...], image_pretrained: bool, default: str) -> list[str]:
    """The `regimes` a model can train in, `default` first: `features` needs a pretrained image tower."""
    allowed = [r for r in regimes if image_pretrained or r != "features"]
    return sorted(allowed, key=lambda r: r != default)


def device_choices(cuda_devices: int) -> list[str]:
    """`auto`, `cpu`, then `cuda:0` … for each CUDA device present."""
    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(cuda_devices)]


def split_settings(settings: list[Setting]) -> tuple[list[Setting], list[Setting]]:
    """(main, advanced): the settings the Train page shows up front (`MAIN_SETTINGS`), and the rest."""
    main = [s for s in settings if s.name in MAIN_SETTINGS]
    return main, [s for s in settings if s.name not in MAIN_SETTINGS]


def number_step(default: float) -> float:
    """A number input's step for a float setting: the default's order of magnitude (1e-3 for 0.001), 0.1 for 0."""
    if not default:
        return 0.1
    return float(f"1e{int(f'{abs(default):e}'.split('e')[1])}")
