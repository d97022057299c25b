"""A stand-in for `core.training.execute_run` with its exact signature, so the job runner, the Train page and the
first start are tested in seconds without training anything.

The fake training is a real resumable loop: `epochs × steps` steps of `delay` seconds each, a loss that
falls, the step reached stored as the run's checkpoint, `fail_at` making it fail at that step, and the
run row settled as `execute_run` does (running → finished | cancelled | failed).
"""
from __future__ import annotations

import time

from core.errors import Cancelled
from core.progress import Progress


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
