"""First start (headless): the noisy demo, a default-method run and a concord run over it in the background, once
per process."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.first_start import JOB_KEY, FirstStart, first_start
from core.generated import GenerateOptions
from core.jobs import JobManager
from tests import fake_engine
from tests.test_export import make_dataset


@pytest.fixture
def manager():
    m = JobManager(executor=fake_engine.execute_run, heartbeat_every=0.05)
    yield m
    m.shutdown()


@pytest.fixture(autouse=True)
def first_start_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "0")
    monkeypatch.delenv("CONCORD_FIRST_START_IMAGES", raising=False)
    monkeypatch.delenv("CONCORD_FIRST_START_EPOCHS", raising=False)


def test_defaults_inject_hard_noise_and_use_the_default_method():
    plan = FirstStart()
    assert (plan.name, plan.method, plan.epochs, plan.fuse) == ("demo", None, None, True)  # None: the default, b1
    assert (plan.demo.noise, plan.demo.noise_kind, plan.demo.images) == (0.2, "hard", GenerateOptions().images)
    # the method's default epochs on a GPU; a short run on the CPU, so the pages fill within minutes
    assert (plan.run_epochs(cuda=True), plan.run_epochs(cuda=False)) == (None, 2)
    assert FirstStart(epochs=5).run_epochs(cuda=False) == 5


def test_env_makes_it_smaller(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONCORD_FIRST_START_IMAGES", "12")
    monkeypatch.setenv("CONCORD_FIRST_START_EPOCHS", "1")
    plan = FirstStart.from_env()
    assert (plan.demo.images, plan.epochs, plan.demo.noise_kind, plan.demo.noise) == (12, 1, "hard", 0.2)


def test_creates_the_noisy_demo_and_scores_it_once(store, manager):
    plan = FirstStart(demo=GenerateOptions(images=12, noise=0.2, noise_kind="ncr"), epochs=1)  # hard: browser test
    calls = [None] * 4
    threads = [threading.Thread(target=lambda i=i: calls.__setitem__(i, first_start(store, manager, plan)))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = calls[0]
    assert job is not None and all(c is job for c in calls)  # concurrent sessions get the one job
    assert manager.wait(job.id, 120).state == "finished", job.error
    assert store.dataset_names() == ["demo"]
    summary = store.list_datasets()[0]
    assert summary["noisy"] == int(0.2 * summary["splits"]["train"]) > 0
    fused, run = store.runs()              # newest first: the concord run queued behind the first run
    assert (job.result, run.method, run.config["epochs"]) == (run.id, "b1", 1)
    assert (fused.id, fused.method, fused.config["base_runs"]) == (run.id + 1, "concord", "latest")
    first, fusing = (manager.wait(manager.latest(f"run:{r.id}").id, 30) for r in (run, fused))
    assert store.run(run.id).state == store.run(fused.id).state == "finished"
    assert fusing.started >= first.finished                  # one device queue: the fusion starts once b1 is done
    # later reruns and sessions of this process get the same job back and start nothing more
    assert first_start(store, manager, plan) is job
    assert len(store.runs()) == 2 and [j.key for j in manager.jobs()] == [JOB_KEY, f"run:{run.id}", f"run:{fused.id}"]


def test_off_when_disabled_or_when_a_dataset_exists(store, manager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    assert first_start(store, manager) is None
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "0")
    make_dataset(store, tmp_path / "src")
    assert first_start(store, manager) is None
    assert manager.jobs() == [] and store.dataset_names() == ["ds"]


def test_a_failed_first_start_is_not_retried_on_every_rerun(store, manager):
    plan = FirstStart(demo=GenerateOptions(images=1))  # refused: a generated dataset needs 2 images
    job = first_start(store, manager, plan)
    assert manager.wait(job.id, 30).state == "failed"
    assert job.error == "a generated dataset needs at least 2 images, got 1"
    assert first_start(store, manager, plan) is job and len(manager.jobs()) == 1
    assert store.dataset_names() == []
