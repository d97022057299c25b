"""What every page shares: the process's store and job runner, the sidebar's dataset, reviewer and running
jobs, empty states."""
from __future__ import annotations

import gc
import sys
import time
from typing import Callable

import streamlit as st

from core.errors import ConcordError
from core.first_start import JOB_KEY, first_start
from core.jobs import Job, JobManager, mark_interrupted
from core.runs import overall_fraction, picked_first, progress_text, scored_run_label
from core.store import Dataset, Run, Store

JOBS_REFRESH_SECONDS = 2.0
SHELL_KEY, SHELL_TRIES_KEY, SHELL_TRIES = "_app_shell", "_app_shell_tries", 3
ENDED_SHOWN_SECONDS = 60.0


@st.cache_resource
def get_store() -> Store:
    """The server process's one store (DuckDB admits one read-write process)."""
    return Store.open()


@st.cache_resource
def job_manager() -> JobManager:
    """The server process's one job runner: its background jobs outlive reruns and sessions."""
    return JobManager()


_modules_frozen = 0


def settle_heap() -> None:
    """After a run that imported new modules (a page's first visit loads torch, faiss, scikit-learn…), collect
    once and freeze what is alive (`gc.freeze`): Python's full collections then leave those objects alone. Before,
    each one scanned them for 70–115 ms and some landed on Review key presses (`bench review --browser`)."""
    global _modules_frozen
    if len(sys.modules) > _modules_frozen:
        gc.collect()
        gc.freeze()
        _modules_frozen = len(sys.modules)


def settle_runs() -> None:
    """Runs left queued or running by a process that is gone (a killed server) are shown as interrupted."""
    mark_interrupted(get_store(), live_runs=job_manager().live_runs())


def start_first_run() -> None:
    """On a fresh machine, create the demo and score it in the background (once per server process)."""
    first_start(get_store(), job_manager())


def sidebar() -> None:
    """Dataset picker and reviewer name, kept in the session across pages; the running jobs below them."""
    st.session_state[SHELL_KEY] = True          # this run went through app.py (see through_app)
    st.session_state[SHELL_TRIES_KEY] = 0
    settle_runs()
    store = get_store()
    names = store.dataset_names()
    with st.sidebar:
        if names:
            if st.session_state.get("sidebar_dataset") not in names:
                st.session_state["sidebar_dataset"] = names[0]
            st.selectbox("Dataset", names, key="sidebar_dataset")
            st.session_state["dataset"] = st.session_state["sidebar_dataset"]
        else:
            st.session_state["dataset"] = None
            st.caption("No dataset yet.")
        st.session_state.setdefault("sidebar_reviewer", "reviewer")
        st.text_input("Reviewer", key="sidebar_reviewer", help="Stored with every decision you make.")
        st.session_state["reviewer"] = st.session_state["sidebar_reviewer"]
        jobs_panel(frozenset(j.id for j in job_manager().active()))


def _job_line(job: Job) -> None:
    if job.active:
        record = job.progress.snapshot()
        st.progress(overall_fraction(record), text=f"**{job.title}**  \n{progress_text(record)}")
    elif job.state == "failed":
        st.error(f"{job.title}: {job.error}")
    else:
        st.caption(f"{job.title}: {job.state}")


@st.fragment(run_every=JOBS_REFRESH_SECONDS)
def jobs_panel(seen: frozenset[str]) -> None:
    """The process's jobs: running ones with progress and ETA, and those that ended a minute ago or less.
    `seen` are the ids active at the last full rerun: when one ends, the whole page reruns to show its result."""
    jobs = job_manager().jobs()
    if any(j.id in seen and not j.active for j in jobs):
        st.rerun()
    shown = [j for j in jobs if j.active or time.time() - (j.finished or 0.0) < ENDED_SHOWN_SECONDS]
    if shown:
        st.caption("Jobs")
        for job in shown:
            _job_line(job)


def submit_new_run(start: Callable[[], int], state_key: str) -> None:
    """Create a run with `start()`, hand it to the job runner, remember its id under `state_key` and rerun;
    a refusal is shown where the button was."""
    try:
        run_id = start()
        job_manager().submit_run(get_store(), run_id)
    except ConcordError as exc:
        st.error(str(exc))
    else:
        st.session_state[state_key] = run_id
        st.rerun()


FIRST_START_NOTE = ("First start: the demo dataset is being created and then scored in the background (progress "
                    "in the sidebar); the pages fill when it is ready.")


def first_start_running() -> bool:
    """Whether this server's first-start job (creating the demo) is still at work."""
    job = job_manager().latest(JOB_KEY)
    return job is not None and job.active


def current_dataset() -> Dataset | None:
    """The sidebar's dataset, or None (after showing the empty state) when there is none."""
    name = st.session_state.get("dataset")
    if not name:
        st.info(FIRST_START_NOTE if first_start_running()
                else "No dataset yet. Create the demo or import one on the **Datasets** page.")
        return None
    return get_store().dataset(name)


def finished_run(store: Store, dataset: Dataset, key: str, empty: str) -> Run:
    """The finished run chosen in the page's `Run` picker (listed newest first, starting on `picked_first`); with
    none, `empty` is shown and the page stops."""
    runs = store.runs(dataset.id, state="finished")
    if not runs:
        busy = [r for r in store.runs(dataset.id) if r.state in ("queued", "running")]
        st.info(f"No finished run for {dataset.name!r} yet: run #{busy[-1].id} ({busy[-1].method}) is "
                f"{busy[-1].state}, and this page fills when it finishes (progress in the sidebar)."
                if busy else empty)
        st.stop()
    by_id = {r.id: r for r in runs}
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = picked_first(runs).id
    return by_id[st.selectbox("Run", list(by_id), format_func=lambda i: scored_run_label(by_id[i]), key=key)]


def reviewer() -> str:
    return (st.session_state.get("reviewer") or "reviewer").strip() or "reviewer"


# --- review
def through_app() -> None:
    """Rerun through app.py when Streamlit ran this page file alone.

    Until app.py's `st.navigation` has run once in the server process, Streamlit treats `pages/` as an
    old-style pages folder: a tab that (re)connects to a page's URL after a server (re)start runs that page
    without app.py (no sidebar, every module of `pages/` listed). A page run alone is told by the flag or by
    a session the sidebar never ran in; it reruns (at most `SHELL_TRIES` times in a row). Called at the top of
    every page; AppTest runs pages alone on purpose and is left alone."""
    from streamlit import config
    from streamlit.runtime.pages_manager import PagesManager
    if config.get_option("global.appTest"):
        return
    alone = bool(PagesManager.uses_pages_directory) or SHELL_KEY not in st.session_state
    tries = st.session_state.get(SHELL_TRIES_KEY, 0)
    if alone and tries < SHELL_TRIES:
        st.session_state[SHELL_TRIES_KEY] = tries + 1
        PagesManager.uses_pages_directory = False
        st.rerun()
