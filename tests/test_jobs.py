"""The job runner: states, FIFO per device, cancel, failures, train jobs with heartbeat, resume, interruption."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.errors import ConcordError
from core.jobs import JobManager, device_slot, mark_interrupted, progress_record, run_key
from core.progress import Progress
from core.store import Store
from tests import fake_engine
from tests.test_export import make_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def manager(store):
    m = JobManager(executor=fake_engine.execute_run, heartbeat_every=0.05)
    yield m
    m.shutdown()


def make_run(store: Store, root: Path, *, epochs: int = 2, steps: int = 4, delay: float = 0.0,
             fail_at: int = -1, device: str = "cpu") -> int:
    if not store.has_dataset("ds"):
        make_dataset(store, root)
    config = {"epochs": epochs, "steps": steps, "delay": delay, "fail_at": fail_at}
    return store.create_run(store.dataset("ds").id, "npc", "concord-tiny", device=device, config=config)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# plain jobs ----------------------------------------------------------------------------------------
def test_job_finishes_with_its_result(manager):
    def fn(p: Progress) -> int:
        p.start("count", 3)
        for _ in range(3):
            p.advance(loss=0.5)
        return 42

    job = manager.wait(manager.submit("embed", "count", fn).id, 5)
    assert (job.state, job.result, job.error) == ("finished", 42, None)
    assert job.progress.snapshot()["step"] == 3
    assert job.started is not None and job.finished >= job.started
    assert manager.jobs() == [job] and manager.active() == []


def test_failure_keeps_message_and_traceback(manager):
    def fn(p: Progress) -> None:
        raise ValueError("boom")

    job = manager.wait(manager.submit("projection", "fails", fn).id, 5)
    assert job.state == "failed"
    assert job.error == "ValueError: boom"
    assert "raise ValueError(\"boom\")" in job.traceback


def test_concord_error_message_is_kept_as_is(manager):
    def fn(p: Progress) -> None:
        raise ConcordError("dataset 'x' has no images")

    job = manager.wait(manager.submit("embed", "x", fn).id, 5)
    assert job.error == "dataset 'x' has no images"


def test_unknown_kind_is_refused(manager):
    with pytest.raises(ValueError, match="unknown job kind 'sleep'"):
        manager.submit("sleep", "x", lambda p: None)


def test_heavy_jobs_on_one_device_run_one_at_a_time_in_order(manager):
    release = threading.Event()
    order: list[str] = []

    def blocker(name: str):
        def fn(p: Progress) -> None:
            order.append(name)
            release.wait(5)
        return fn

    a = manager.submit("train", "a", blocker("a"), device="cpu")
    b = manager.submit("embed", "b", blocker("b"), device="cpu")
    c = manager.submit("embed", "c", blocker("c"), device="cpu")
    wait_for(lambda: a.state == "running")
    time.sleep(0.1)
    assert (b.state, c.state) == ("queued", "queued")
    release.set()
    for job in (a, b, c):
        assert manager.wait(job.id, 5).state == "finished"
    assert order == ["a", "b", "c"]


def test_jobs_on_other_devices_and_light_jobs_run_at_once(manager):
    release = threading.Event()
    fn = lambda p: release.wait(5)  # noqa: E731
    jobs = [manager.submit("train", "cpu", fn, device="cpu"), manager.submit("train", "gpu1", fn, device="cuda:1"),
            manager.submit("projection", "light", fn, heavy=False)]
    wait_for(lambda: all(j.state == "running" for j in jobs))
    release.set()
    assert [manager.wait(j.id, 5).state for j in jobs] == ["finished"] * 3


def test_same_key_returns_the_live_job(manager):
    release = threading.Event()
    first = manager.submit("embed", "e", lambda p: release.wait(5), key="embed:1")
    assert manager.submit("embed", "e again", lambda p: None, key="embed:1") is first
    assert manager.find("embed:1") is first
    release.set()
    manager.wait(first.id, 5)
    assert manager.find("embed:1") is None
    second = manager.submit("embed", "e", lambda p: None, key="embed:1")
    assert second is not first and manager.latest("embed:1") is second


def test_cancel_a_running_job_stops_it_at_the_next_check(manager):
    steps = []

    def fn(p: Progress) -> None:
        p.start("loop", None)
        while True:
            p.check()
            steps.append(1)
            time.sleep(0.01)

    job = manager.submit("train", "loop", fn)
    wait_for(lambda: len(steps) > 2)
    manager.cancel(job.id)
    assert manager.wait(job.id, 5).state == "cancelled"
    n = len(steps)
    time.sleep(0.05)
    assert len(steps) == n


def test_cancel_a_queued_job_ends_it_at_once_without_running(manager):
    release = threading.Event()
    ran, ended = [], []
    first = manager.submit("train", "first", lambda p: release.wait(5))
    queued = manager.submit("train", "queued", lambda p: ran.append(1), on_end=lambda j: ended.append(j.state))
    manager.cancel(queued.id)
    assert queued.state == "cancelled" and ended == ["cancelled"]
    release.set()
    manager.wait(first.id, 5)
    time.sleep(0.05)
    assert ran == []


def test_wait_times_out(manager):
    release = threading.Event()
    job = manager.submit("embed", "slow", lambda p: release.wait(5))
    with pytest.raises(TimeoutError, match="still running"):
        manager.wait(job.id, 0.05)
    release.set()
    manager.wait(job.id, 5)


def test_unknown_job_id(manager):
    with pytest.raises(ConcordError, match="no job job-99"):
        manager.get("job-99")


def test_device_slot():
    assert device_slot("cpu") == "cpu"
    assert device_slot("cuda") == "cuda:0"
    assert device_slot(" CUDA:1 ") == "cuda:1"
    assert device_slot("auto") in ("cpu", "cuda:0")


def test_progress_record_thins_the_loss_history():
    p = Progress()
    p.start("train", 1000)
    for _ in range(1000):
        p.advance(loss=1.0)
    record = progress_record(p)
    assert len(record["history"]) <= 401
    assert record["history"][0]["step"] == 1.0 and record["history"][-1]["step"] == 1000.0
    assert record["step"] == 1000 and record["fraction"] == 1.0


# train jobs ----------------------------------------------------------------------------------------
def test_run_finishes_with_heartbeat_and_stored_progress(store, manager, tmp_path):
    run_id = make_run(store, tmp_path, epochs=2, steps=5, delay=0.02)
    job = manager.submit_run(store, run_id)
    assert (job.kind, job.run_id, job.key, job.title) == ("train", run_id, run_key(run_id),
                                                          f"run {run_id} · npc · concord-tiny")
    wait_for(lambda: store.run(run_id).progress.get("step", 0) > 0)  # beats while running
    beating = store.run(run_id)
    assert beating.state == "running" and beating.owner_pid == os.getpid()
    assert manager.wait(job.id, 10).state == "finished"
    run = store.run(run_id)
    assert run.state == "finished" and run.metrics["auroc"] == 0.875
    assert run.progress["step"] == 10 and len(run.progress["history"]) == 10
    assert [e["epoch"] for e in run.progress["epochs"]] == [1, 2]
    assert manager.run_progress(run)["step"] == 10
    with pytest.raises(ConcordError, match=f"run {run_id} is already finished"):
        manager.submit_run(store, run_id)


def test_live_run_progress_comes_from_the_job(store, manager, tmp_path):
    run_id = make_run(store, tmp_path, epochs=1, steps=200, delay=0.01)
    job = manager.submit_run(store, run_id)
    wait_for(lambda: job.progress.step > 3)
    assert manager.submit_run(store, run_id) is job
    assert manager.live_runs() == {run_id}
    assert manager.run_progress(store.run(run_id))["step"] >= job.progress.step - 1
    manager.cancel(job.id)
    manager.wait(job.id, 5)


def test_cancel_then_resume_continues_from_the_checkpoint(store, manager, tmp_path):
    run_id = make_run(store, tmp_path, epochs=2, steps=50, delay=0.01)
    job = manager.submit_run(store, run_id)
    wait_for(lambda: job.progress.step >= 5)
    manager.cancel(job.id)
    assert manager.wait(job.id, 5).state == "cancelled"
    run = store.run(run_id)
    assert run.state == "cancelled" and 5 <= int(run.checkpoint) < 100
    resumed = manager.submit_run(store, run_id)
    assert resumed is not job
    wait_for(lambda: len(resumed.progress.loss_history()) > 0)
    assert resumed.progress.loss_history()[0]["step"] == int(run.checkpoint) + 1
    assert manager.wait(resumed.id, 10).state == "finished"
    assert store.run(run_id).state == "finished"


def test_failed_run_keeps_its_error(store, manager, tmp_path):
    run_id = make_run(store, tmp_path, fail_at=3)
    job = manager.wait(manager.submit_run(store, run_id).id, 5)
    assert job.state == "failed" and job.error == "RuntimeError: fake failure at step 3"
    assert "fake failure" in job.traceback
    run = store.run(run_id)
    assert run.state == "failed" and run.error == "RuntimeError: fake failure at step 3"
    assert run.progress["step"] == 3


def test_a_run_left_unsettled_by_its_executor_is_marked_failed(store, tmp_path):
    def crashes_early(store: Store, run_id: int, progress: Progress) -> None:
        raise OSError("disk full")

    m = JobManager(executor=crashes_early)
    run_id = make_run(store, tmp_path)
    assert m.wait(m.submit_run(store, run_id).id, 5).state == "failed"
    run = store.run(run_id)
    assert (run.state, run.error) == ("failed", "OSError: disk full")


def test_a_queued_run_cancelled_before_it_starts(store, manager, tmp_path):
    first = make_run(store, tmp_path, epochs=1, steps=100, delay=0.01)
    second = make_run(store, tmp_path)
    a = manager.submit_run(store, first)
    b = manager.submit_run(store, second)
    assert store.run(second).state == "queued" and store.run(second).owner_pid == os.getpid()
    manager.cancel(b.id)
    assert b.state == "cancelled" and store.run(second).state == "cancelled"
    manager.cancel(a.id)
    manager.wait(a.id, 5)


def test_a_run_running_elsewhere_is_not_started_twice(store, manager, tmp_path):
    run_id = make_run(store, tmp_path)
    store.update_run(run_id, state="running", owner_pid=1, owner_host="elsewhere")
    with pytest.raises(ConcordError, match=f"run {run_id} is running in process 1 on elsewhere"):
        manager.submit_run(store, run_id)


# interruption ----------------------------------------------------------------------------------------
def test_mark_interrupted(store, tmp_path):
    host, now = socket.gethostname(), time.time()
    gone = make_run(store, tmp_path)
    store.update_run(gone, state="running", owner_pid=dead_pid(), owner_host=host, heartbeat=now)
    stale = make_run(store, tmp_path)
    store.update_run(stale, state="running", owner_pid=os.getpid(), owner_host=host, heartbeat=now - 31)
    fresh = make_run(store, tmp_path)
    store.update_run(fresh, state="running", owner_pid=os.getpid(), owner_host=host, heartbeat=now - 5)
    remote = make_run(store, tmp_path)  # another host's pid says nothing here; its heartbeat is fresh
    store.update_run(remote, state="running", owner_pid=dead_pid(), owner_host="other-host", heartbeat=now)
    orphan = make_run(store, tmp_path)  # queued by a process that died
    store.update_run(orphan, owner_pid=dead_pid(), owner_host=host)
    unclaimed = make_run(store, tmp_path)  # queued, nobody claimed it yet
    mine = make_run(store, tmp_path)
    store.update_run(mine, state="running", owner_pid=os.getpid(), owner_host=host, heartbeat=now - 300)

    assert sorted(mark_interrupted(store, now=now, live_runs={mine})) == sorted([gone, stale, orphan])
    states = {r.id: r.state for r in store.runs()}
    assert [states[i] for i in (gone, stale, fresh, remote, orphan, unclaimed, mine)] == [
        "interrupted", "interrupted", "running", "running", "interrupted", "queued", "running"]


def test_a_run_under_a_heartbeat_is_never_taken_for_dead_and_is_once_it_stops(store, tmp_path):
    """`heartbeat` (a job's run, or the b1 a fused run trains inside its own job) keeps a running run's heartbeat
    fresh while the block runs, and stores its last progress at the end."""
    from core.jobs import heartbeat
    run_id = make_run(store, tmp_path)
    store.update_run(run_id, state="running", owner_pid=os.getpid(), owner_host=socket.gethostname())
    progress = Progress()
    progress.start("epoch 1", 4)
    with heartbeat(store, run_id, progress, every=0.05):
        for _ in range(6):
            time.sleep(0.1)
            assert mark_interrupted(store, stale_after=0.3) == []
        progress.advance()
    assert store.run(run_id).progress["step"] == 1           # the last beat stored the progress at the end
    time.sleep(0.5)
    assert mark_interrupted(store, stale_after=0.3) == [run_id]


def test_killed_process_then_resume_finishes(store, tmp_path):
    """A process running a run is killed (SIGKILL); the next one sees it interrupted and resumes it."""
    run_id = make_run(store, tmp_path, epochs=1, steps=60, delay=0.02)
    db = store.path
    store.close()
    script = textwrap.dedent(f"""
        import time
        from tests import fake_engine
        from core.jobs import JobManager
        from core.store import Store
        store = Store.open({db!r})
        job = JobManager(executor=fake_engine.execute_run, heartbeat_every=0.05).submit_run(store, {run_id})
        while job.progress.step < 10:
            time.sleep(0.01)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
    with Store.open(db) as s:
        assert s.run(run_id).state == "running"
        assert mark_interrupted(s) == [run_id]
        checkpoint = int(s.run(run_id).checkpoint)
        assert 9 <= checkpoint < 60
        m = JobManager(executor=fake_engine.execute_run)
        job = m.submit_run(s, run_id)
        assert m.wait(job.id, 20).state == "finished"
        assert job.progress.loss_history()[0]["step"] == checkpoint + 1
        assert s.run(run_id).state == "finished"
