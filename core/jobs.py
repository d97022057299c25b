"""The job runner: long operations (embedding, training, projection) in background threads.

One `JobManager` per server process (the UI keeps it in `st.cache_resource`; the CLI makes a plain one).
A job is a function of a `Progress`: the manager runs it in a thread, and callers read its state,
progress, result or error at any time without blocking. Heavy jobs run one at a time per device, in
submission order; light ones start at once. Cancelling sets the job's progress to cancelled: the
function raises `Cancelled` at its next `progress.check()` and the job ends `cancelled`.

A train job (`submit_run`) runs `core.training.execute_run` on a stored run and beats the run's
heartbeat with its latest progress every few seconds, so a run whose process died can be recognised
(`mark_interrupted`) and resumed by submitting it again. Worker threads never touch streamlit.
"""
from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from core.errors import Cancelled, ConcordError
from core.progress import Progress
from core.runs import run_title
from core.store import Run, Store

JOB_KINDS = ("embed", "train", "projection", "dataset", "refit", "shards")
JOB_STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
HEARTBEAT_SECONDS = 2.0
STALE_AFTER_SECONDS = 30.0
HISTORY_POINTS = 400  # loss-history points kept in a run's stored progress

Executor = Callable[[Store, int, Progress], None]


@dataclass(eq=False)
class Job:
    """One submitted operation. Fields are written only by the manager; read them freely."""

    id: str
    kind: str
    title: str
    key: str | None
    device: str
    heavy: bool
    progress: Progress
    run_id: int | None = None
    state: str = "queued"
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _fn: Callable[[Progress], Any] | None = field(default=None, repr=False)
    _on_end: Callable[["Job"], None] | None = field(default=None, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def seconds(self) -> float | None:
        """Running time so far (or in all, once ended); None while queued."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


def run_key(run_id: int) -> str:
    """The job key of a run's train job (one live job per run)."""
    return f"run:{int(run_id)}"


def device_slot(device: str | None) -> str:
    """The physical device a job occupies: `auto` is CUDA when present, else the CPU; `cuda` is `cuda:0`."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if device == "cuda" else device


def progress_record(progress: Progress) -> dict[str, Any]:
    """A progress snapshot plus its loss history thinned to at most `HISTORY_POINTS` points (JSON-safe),
    as stored in a run's row so another process (or a restarted one) can draw the curve."""
    record = progress.snapshot()
    history = progress.loss_history()
    stride = max(1, -(-len(history) // HISTORY_POINTS))
    thinned = history[::stride]
    if history and thinned[-1] is not history[-1]:
        thinned.append(history[-1])
    record["history"] = thinned
    return record


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a run's owner, an export's writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_interrupted(store: Store, stale_after: float = STALE_AFTER_SECONDS, *, now: float | None = None,
                     live_runs: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Turn runs that nobody is executing any more into `interrupted` (resumable); returns their ids.

    A `running` run is interrupted when its owner process is gone (same host) or its heartbeat is older
    than `stale_after` seconds; a `queued` run claimed by a process that is gone is interrupted too.
    Runs in `live_runs` (the caller's own live jobs) are left alone."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    done: list[int] = []
    for run in store.runs(state="running") + store.runs(state="queued"):
        if run.id in live_runs:
            continue
        gone = run.owner_host == host and run.owner_pid is not None and not pid_alive(run.owner_pid)
        stale = run.state == "running" and (run.heartbeat is None or now - run.heartbeat > stale_after)
        if gone or stale:
            store.update_run(run.id, state="interrupted")
            done.append(run.id)
    return done


@contextmanager
def heartbeat(store: Store, run_id: int, progress: Progress, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Beat run `run_id`'s heartbeat with `progress` every `every` seconds while the block runs (a thread), and
    once more at its end (its last progress), so that `mark_interrupted` knows it is alive: a job's run, or a run
    trained inside another run's job (the b1 a fused run trains first)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            store.heartbeat(run_id, progress_record(progress))
        except Exception as exc:  # a failed beat is logged, never fatal to the run
            progress.log(f"heartbeat failed: {type(exc).__name__}: {exc}")

    def beating() -> None:
        while not stop.wait(every):
            beat()

    thread = threading.Thread(target=beating, daemon=True, name=f"concord-heartbeat-{run_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        beat()


def _execute_run(store: Store, run_id: int, progress: Progress) -> None:
    from core.training import execute_run  # heavy (torch, open_clip): imported when a run starts
    execute_run(store, run_id, progress)


class JobManager:
    """Runs jobs in background threads: one worker per device for heavy jobs (FIFO), a thread per light job."""

    def __init__(self, executor: Executor | None = None, heartbeat_every: float = HEARTBEAT_SECONDS) -> None:
        """`executor(store, run_id, progress)` executes a run (default `core.training.execute_run`)."""
        self._executor = executor or _execute_run
        self._heartbeat_every = heartbeat_every
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[Job]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._ids = itertools.count(1)

    # submitting ----------------------------------------------------------------------------------
    def submit(self, kind: str, title: str, fn: Callable[[Progress], Any], *, key: str | None = None,
               device: str = "cpu", heavy: bool = True, run_id: int | None = None,
               on_end: Callable[[Job], None] | None = None) -> Job:
        """Queue `fn(progress)`; a queued or running job with the same `key` is returned instead.
        `on_end(job)` runs in the job's thread once it has ended in any way (also cancelled while queued)."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}")
        slot = device_slot(device) if heavy else device
        with self._lock:
            existing = self._find_active(key)
            if existing is not None:
                return existing
            job = Job(id=f"job-{next(self._ids)}", kind=kind, title=title, key=key, device=slot, heavy=heavy,
                      progress=Progress(), run_id=run_id, _fn=fn, _on_end=on_end)
            self._jobs[job.id] = job
            if heavy:
                self._queues.setdefault(slot, deque()).append(job)
                if slot not in self._workers:
                    worker = threading.Thread(target=self._work, args=(slot,), daemon=True,
                                              name=f"concord-worker-{slot}")
                    self._workers[slot] = worker
                    worker.start()
            else:
                threading.Thread(target=self._run, args=(job,), daemon=True, name=f"concord-{job.id}").start()
        return job

    def submit_run(self, store: Store, run_id: int) -> Job:
        """Queue (or resume) stored run `run_id` as a train job; its live job when it has one.

        The run is claimed by this process (state `queued`, owner pid/host) at once; while it executes,
        a heartbeat thread stores its progress in the run's row every few seconds."""
        key = run_key(run_id)
        live = self.find(key)
        if live is not None:
            return live
        run = store.run(run_id)
        if run.state == "finished":
            raise ConcordError(f"run {run_id} is already finished")
        if run.state == "running":
            raise ConcordError(f"run {run_id} is running in process {run.owner_pid} on {run.owner_host}; "
                               "wait for it or stop that process")
        store.update_run(run_id, state="queued", owner_pid=os.getpid(), owner_host=socket.gethostname())

        def train(progress: Progress) -> None:
            with heartbeat(store, run_id, progress, self._heartbeat_every):
                self._executor(store, run_id, progress)

        return self.submit("train", run_title(run), train, key=key, device=run.device or "auto", heavy=True,
                           run_id=run_id, on_end=lambda job: _settle_run(store, job))

    # reading -------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise ConcordError(f"no job {job_id}")
            return self._jobs[job_id]

    def find(self, key: str) -> Job | None:
        """The queued or running job with `key`, else None."""
        with self._lock:
            return self._find_active(key)

    def latest(self, key: str) -> Job | None:
        """The most recent job with `key` in any state, else None."""
        with self._lock:
            matching = [j for j in self._jobs.values() if j.key == key]
        return matching[-1] if matching else None

    def jobs(self) -> list[Job]:
        """Every job of this manager, in submission order."""
        with self._lock:
            return list(self._jobs.values())

    def active(self) -> list[Job]:
        """Queued and running jobs, in submission order."""
        return [j for j in self.jobs() if j.active]

    def live_runs(self) -> set[int]:
        """Ids of the runs this manager is executing or has queued."""
        return {j.run_id for j in self.active() if j.run_id is not None}

    def run_progress(self, run: Run) -> dict[str, Any]:
        """The freshest progress of a run: its live job's here, else the record stored in its row."""
        job = self.find(run_key(run.id))
        return progress_record(job.progress) if job is not None else dict(run.progress)

    # controlling ---------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Cancel a job: a queued one ends `cancelled` now, a running one at its next progress check."""
        job = self.get(job_id)
        job.progress.cancel()
        with self._lock:
            queue = self._queues.get(job.device)
            dequeued = job.state == "queued" and queue is not None and job in queue
            if dequeued:
                queue.remove(job)
                job.state = "cancelled"
        if dequeued:
            self._end(job)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has ended; raises TimeoutError when it has not after `timeout` seconds."""
        job = self.get(job_id)
        if not job._done.wait(timeout):
            raise TimeoutError(f"{job.id} ({job.title}) still {job.state} after {timeout}s")
        return job

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel every active job and wait for them to end (tests, orderly exits)."""
        active = self.active()
        for job in active:
            self.cancel(job.id)
        for job in active:
            self.wait(job.id, timeout)

    # internals -----------------------------------------------------------------------------------
    def _find_active(self, key: str | None) -> Job | None:
        if key is None:
            return None
        for job in self._jobs.values():
            if job.key == key and job.active:
                return job
        return None

    def _work(self, slot: str) -> None:
        """A device's worker: run its queued heavy jobs one by one, exit when the queue is empty."""
        while True:
            with self._lock:
                queue = self._queues.get(slot)
                if not queue:
                    del self._workers[slot]
                    return
                job = queue.popleft()
            self._run(job)

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.state != "queued":
                return
            if job.progress.cancelled:  # cancelled between leaving the queue and starting
                job.state = "cancelled"
            else:
                job.state, job.started = "running", time.time()
        if job.state == "cancelled":
            self._end(job)
            return
        try:
            result = job._fn(job.progress)
        except Cancelled:
            job.state = "cancelled"
        except Exception as exc:  # the job's failure is its result: kept, shown, never raised here
            job.error = str(exc) if isinstance(exc, ConcordError) else f"{type(exc).__name__}: {exc}"
            job.traceback = traceback.format_exc()
            job.state = "failed"
        else:
            job.result, job.state = result, "finished"
        self._end(job)

    def _end(self, job: Job) -> None:
        job.finished = time.time()
        try:
            if job._on_end is not None:
                job._on_end(job)
        except Exception as exc:  # must not kill a device's worker; the job keeps its own outcome
            job.progress.log(f"after the job ended: {type(exc).__name__}: {exc}")
        finally:
            job._fn = None
            job._done.set()



def _settle_run(store: Store, job: Job) -> None:
    """Leave no run `queued`/`running` behind its ended job (execute_run normally settles it itself)."""
    run = store.run(job.run_id)
    if run.state not in ACTIVE_STATES:
        return
    if job.state == "failed":
        store.update_run(run.id, state="failed", error=job.error)
    elif job.state == "cancelled":
        store.update_run(run.id, state="cancelled")
    else:
        store.update_run(run.id, state="failed", error="the run ended without recording a result")
