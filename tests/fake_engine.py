"""Stand-ins for engine modules not merged into this branch yet (core.methods, core.models, core.training,
core.demo), with the exact API of engine_api.md, so the job runner, the Train page and first start can
be tested now. `install()` registers them in `sys.modules`; a server process gets them through
tests/fake_engine_site/sitecustomize.py (put that folder on PYTHONPATH).

The fake training is a real resumable loop: `epochs × steps` steps of `delay` seconds each, a loss that
falls, the step reached stored as the run's checkpoint, `fail_at` making it fail at that step, and the
run row settled as `execute_run` does (running → finished | cancelled | failed).
"""
from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from core import paths
from core.errors import Cancelled, ConcordError
from core.hashing import file_hash
from core.progress import Progress

DEFAULT_MODEL = "concord-tiny"


# core.models -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    name: str
    identity: str
    image_pretrained: bool
    image_size: int
    embed_dim: int
    text_feature_dim: int


def model_info(name: str) -> ModelInfo:
    if name == "broken":
        raise ConcordError(f"unknown model {name!r}")
    return ModelInfo(name, name, name != DEFAULT_MODEL, 64, 256, 384)


# core.methods ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None


@dataclass(frozen=True)
class FakeConfig:
    steps: int = 4
    delay: float = 0.01
    fail_at: int = -1
    lr: float = 2e-4
    schedule: str = "cosine"
    hard_negatives: bool = False


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str
    summary: str
    config_cls: type
    needs_pretrained: bool
    uses_meta: bool


METHODS = {name: MethodSpec(name, title, f"{title}: a fake for tests.", FakeConfig, name == "b0", name == "mscn")
           for name, title in [("b0", "B0 model score"), ("b1", "B1 loss split"), ("npc", "NPC"),
                               ("npc-released", "NPC (released code)"), ("mscn", "MSCN")]}

_HELP = {"steps": "Steps per epoch.", "delay": "Seconds per step.", "fail_at": "Fail at this step (-1: never).",
         "lr": "Learning rate.", "schedule": "Learning-rate schedule.", "hard_negatives": "Use hard negatives."}


def settings(method: str) -> list[Setting]:
    if method not in METHODS:
        raise ConcordError(f"unknown method {method!r}")
    return [Setting(f.name, f.type if isinstance(f.type, type) else eval(f.type), f.default, _HELP[f.name],
                    ("cosine", "constant") if f.name == "schedule" else None) for f in fields(FakeConfig)]


def make_config(method: str, values: dict[str, Any]) -> FakeConfig:
    known = {s.name: s for s in settings(method)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConcordError(f"unknown settings for {method}: {sorted(unknown)}")
    return FakeConfig(**{k: known[k].type(v) for k, v in values.items()})


# core.training -----------------------------------------------------------------------------------
def start_run(store, dataset: str, method: str, *, model: str = DEFAULT_MODEL, regime: str | None = None,
              device: str = "auto", seed: int = 0, epochs: int | None = None, settings: dict | None = None,
              threshold: float = 0.5) -> int:
    ds = store.dataset(dataset)
    if METHODS[method].needs_pretrained and not model_info(model).image_pretrained:
        raise ConcordError(f"{method} needs a pretrained image tower; {model} has none")
    config = make_config(method, settings or {})
    return store.create_run(ds.id, method, model, regime=regime or "finetune", device=device, seed=seed,
                            config={"epochs": epochs or 2, **config.__dict__}, threshold=threshold)


FAKE_DEFAULTS = {"steps": 4, "delay": 0.0, "fail_at": -1}


def execute_run(store, run_id: int, progress: Progress) -> None:
    run = store.run(run_id)
    cfg = {**FAKE_DEFAULTS, **run.config}  # --- train: a real method's config runs with the fake's defaults
    steps, total = int(cfg["steps"]), int(cfg["epochs"]) * int(cfg["steps"])
    step = int(run.checkpoint or 0)
    store.update_run(run_id, state="running", error=None)
    progress.start("train", total, step=step, message="training")
    try:
        while step < total:
            progress.check()
            if step == int(cfg["fail_at"]):
                raise RuntimeError(f"fake failure at step {step}")
            time.sleep(float(cfg["delay"]))
            step += 1
            progress.advance(1, loss=1.0 / step)
            store.update_run(run_id, checkpoint=str(step))
            if step % steps == 0:
                progress.epoch_done(epoch=step // steps, loss=1.0 / step)
    except Cancelled:
        store.update_run(run_id, state="cancelled")
        raise
    except Exception as exc:
        store.update_run(run_id, state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    store.update_run(run_id, state="finished", metrics={"auroc": 0.875, "rsum": 251.5, "seconds": 1.25,
                                                        "detection": {"auroc": 0.875, "auprc": 0.625},
                                                        "retrieval": {"rsum": 251.5}})


# core.demo ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoConfig:
    name: str = "demo"
    images: int = 6


def create_demo(store, config: DemoConfig, progress: Progress) -> None:
    root = paths.datasets_dir() / config.name
    progress.start("demo", config.images)
    rows = []
    for k in range(config.images):
        path = Path(root) / f"img{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (k * 30, 10, 200 - k * 20)).save(path)
        rows.append({"image_path": path.name, "image_hash": file_hash(path), "width": 8, "height": 8,
                     "nbytes": path.stat().st_size, "caption": f"a demo caption {k}",
                     "split": "train", "key": str(k)})
        progress.advance()
    store.write_dataset(config.name, root, "demo", pd.DataFrame(rows))


MODULES = {
    "core.models": dict(DEFAULT_MODEL=DEFAULT_MODEL, ModelInfo=ModelInfo, model_info=model_info),
    "core.methods": dict(Setting=Setting, MethodSpec=MethodSpec, METHODS=METHODS, settings=settings,
                         make_config=make_config),
    "core.training": dict(start_run=start_run, execute_run=execute_run),
    "core.demo": dict(DemoConfig=DemoConfig, create_demo=create_demo),
}


def install() -> None:
    """Register the fakes as the engine modules of this process."""
    import core
    for name, attrs in MODULES.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        setattr(core, name.split(".")[1], module)
