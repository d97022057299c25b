"""First start: on a fresh machine, create the demo with noise to find and score it in the background.

When the store has no dataset (and CONCORD_NO_FIRST_START is not "1"), `first_start` submits one
background job that generates the demo with injected noise and then queues a run of the default method
on it and, after it, a `concord` run fusing that run (the detector a newcomer's Review queue should come from),
so the Explore and Review pages fill within minutes of `make run`. It happens at most once per job manager (one
per server process): reruns and other sessions get the same job back.

The demo's size and the run's epochs can be made smaller with CONCORD_FIRST_START_IMAGES and
CONCORD_FIRST_START_EPOCHS (end-to-end tests use tiny ones).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from core.generated import GenerateOptions, create_generated
from core.jobs import Job, JobManager
from core.progress import Progress

DISABLE_ENV = "CONCORD_NO_FIRST_START"
JOB_KEY = "first-start"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class FirstStart:
    """What the first start creates: dataset `name` from `demo` (hard noise at 20% of the train split, the
    papers' usual ratio, so the first run has mismatches to find), a run of `method` (None: the default
    method) on it, short on the CPU so that the pages fill within minutes, and with `fuse` a `concord` run
    fusing it, which the pages then show first."""

    name: str = "demo"
    demo: GenerateOptions = field(default_factory=lambda: GenerateOptions(noise=0.2, noise_kind="hard"))
    method: str | None = None  # None: core.training.DEFAULT_METHOD
    fuse: bool = True  # then a `concord` run over it: on this demo +0.07 AUROC over the 2-epoch b1 (benchmarks.md)
    epochs: int | None = None  # None: the method's default on a GPU, `cpu_epochs` on the CPU
    cpu_epochs: int = 2  # b1's default 8 epochs of the demo: ~2 min on 2 idle cores, far longer on busy ones

    def run_epochs(self, cuda: bool) -> int | None:
        """The first run's epochs (None: the method's default)."""
        return self.epochs if self.epochs is not None or cuda else self.cpu_epochs

    @classmethod
    def from_env(cls) -> "FirstStart":
        """The defaults, with CONCORD_FIRST_START_IMAGES / CONCORD_FIRST_START_EPOCHS applied when set."""
        base = cls()
        images = os.environ.get("CONCORD_FIRST_START_IMAGES")
        epochs = os.environ.get("CONCORD_FIRST_START_EPOCHS")
        demo = GenerateOptions(**{**base.demo.__dict__, "images": int(images)}) if images else base.demo
        return cls(demo=demo, epochs=int(epochs) if epochs else None)


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "0") != "1"


def first_start(store, manager: JobManager, plan: FirstStart | None = None) -> Job | None:
    """Submit the first-start job when this is a first start; returns it (the same job on every later call
    of this manager), or None when first start is off or the store already holds a dataset."""
    with _LOCK:
        earlier = manager.latest(JOB_KEY)
        if earlier is not None:
            return earlier
        if not enabled() or store.dataset_names():
            return None
        plan = plan or FirstStart.from_env()

        def create_and_score(progress: Progress) -> int:
            import torch

            from core.detect.method import METHOD as FUSED  # loaded in the worker, not the page
            from core.training import DEFAULT_METHOD, start_run
            create_generated(store, plan.name, plan.demo, progress=progress)
            run_id = start_run(store, plan.name, plan.method or DEFAULT_METHOD,
                               epochs=plan.run_epochs(torch.cuda.is_available()))
            manager.submit_run(store, run_id)
            if plan.fuse:       # queued behind the first run on the same device: it fuses that run once finished
                manager.submit_run(store, start_run(store, plan.name, FUSED))
            return run_id

        return manager.submit("dataset", f"first start: creating the {plan.name} dataset", create_and_score,
                              key=JOB_KEY, device="cpu")
