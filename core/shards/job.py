"""Scoring shards from the app: one background job that scores Parquet shards and attaches the result.

The CLI runs `shards score` and `shards attach` apart; the Datasets page runs both as one job on the process's job
runner (`submit_score_and_attach`), its progress in the sidebar and on the page, with Cancel. A cancelled or failed
pass keeps the shards it wrote, and the same job started again scores only the others (resume) before attaching.
The dataset name is checked before any scoring, so a taken name costs no pass.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from core.errors import ConcordError
from core.progress import Progress

JOB_KIND = "shards"


def job_key(out: str | os.PathLike) -> str:
    """One scoring job per output folder at a time."""
    return f"shards:{Path(out).expanduser().resolve()}"


def _check_name(store, name: str) -> None:
    if not name.strip():
        raise ConcordError("name the dataset the scored shards become")
    if store.has_dataset(name):
        raise ConcordError(f"a dataset named {name!r} exists already: choose another name")


def score_and_attach(store, inputs: Sequence[str], out: str | os.PathLike, name: str, *, run_id: int | None,
                     model: str | None, config, progress: Progress, num_cpus: int | None = None) -> dict[str, Any]:
    """Score the shards `inputs` into `out` (as `shards score` does, with `config`, a `ShardScoreConfig`) and
    attach them as dataset `name`; returns the pass's report, the attach result and one line saying both."""
    from core.shards.attach import attach, attach_summary
    from core.shards.pipeline import score_with_engine
    from core.shards.scorer import scorer_spec
    _check_name(store, name)
    report = score_with_engine(inputs, out, scorer_spec(store, run_id, model), config, progress, num_cpus)
    if report.failed:
        path, reason = next(iter(report.failed.items()))
        raise ConcordError(f"{report.summary()}; first failed shard {path}: {reason}. The others are kept: start "
                           "the job again to retry the failed ones, then it attaches")
    progress.start("attaching", None, message=f"attaching {out} as {name!r}")
    result = attach(store, out, name)
    return {"report": report.as_dict(), "attach": result, "summary": f"{report.summary()}; {attach_summary(result)}"}


def submit_score_and_attach(manager, store, inputs: Sequence[str], out: str | os.PathLike, name: str, *,
                            run_id: int | None, model: str | None, config, num_cpus: int | None = None):
    """Queue `score_and_attach` on `manager` (a `core.jobs.JobManager`) as a heavy job of the embedding device;
    the live job for `out` when one is running already. A taken dataset name is refused here, before queueing."""
    _check_name(store, name)
    return manager.submit(JOB_KIND, f"Score shards into {Path(out).name} and attach as {name!r}",
                          lambda progress: score_and_attach(store, inputs, out, name, run_id=run_id, model=model,
                                                            config=config, progress=progress, num_cpus=num_cpus),
                          key=job_key(out), device=config.device)
