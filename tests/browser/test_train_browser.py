"""Train page end to end in headless Chromium, on the real engine with a tiny demo: start, reload mid-run,
cancel, resume, finish with metrics; a server killed mid-run; the first start."""
from __future__ import annotations

import re

from core.generated import GenerateOptions, create_generated
from core.store import Store

RUN_TIMEOUT = 600.0
PAGE_TIMEOUT = 120.0
# enough epochs that the run is still going after a reload or a restart on an idle machine (an epoch of the
# tiny demo takes well under a second there), few enough to finish within RUN_TIMEOUT on a busy one
EPOCHS = 40
# one torch thread: on a busy CI machine spinning OpenMP threads make an epoch of this tiny run ~20x slower
ENV = {"OMP_NUM_THREADS": "1"}
EPOCH = re.compile(r"epoch (\d+)/(\d+)")


def seed_demo(images: int = 12) -> None:
    """A tiny demo dataset, written before the server opens the database."""
    with Store.open() as store:
        create_generated(store, "demo", GenerateOptions(images=images, image_size=32))


def patient(app):
    """The page with waits long enough for a busy machine (the first Train page load imports torch)."""
    app.timeout = PAGE_TIMEOUT
    app.page.set_default_timeout(PAGE_TIMEOUT * 1000)
    return app


def start_run(app, epochs: int) -> None:
    app.nav("Train")
    app.fill("epochs", str(epochs))
    app.fill("batch size", "16")
    app.click("Start", key="train_start")


def epoch_reached(app) -> int:
    found = EPOCH.search(app.text())
    return int(found.group(1)) if found else 0


def run_state(app, run_id: int = 1, method: str = "b1") -> str | None:
    """The state shown in the run picker (`#1 · b1 · running`)."""
    found = re.search(rf"#{run_id} · {method} · (\w+)", app.text())
    return found.group(1) if found else None


def test_empty_state_and_restart(app, server):
    assert "No dataset yet" in app.text()
    app.nav("Train")
    assert "No dataset yet" in app.text()
    server.restart()
    app.reload()  # the page's URL is the first request of the new server: still inside app.py's navigation
    app.wait_until(lambda: "No dataset yet" in app.text(), what="the empty state after a restart")
    assert "Reviewer" in app.text("sidebar") and "common" not in app.text("sidebar")


def test_start_reload_cancel_resume_finish(server_factory, open_app):
    seed_demo()
    server = server_factory(env=ENV)
    app = patient(open_app(server))
    start_run(app, epochs=EPOCHS)
    app.wait_until(lambda: epoch_reached(app) >= 2, RUN_TIMEOUT, "the run to progress")
    # a reload shows the same run still progressing
    before = epoch_reached(app)
    app.reload()
    app.nav("Datasets")  # the sidebar shows the running job on every page
    app.wait_until(lambda: "run 1 · b1 · concord-tiny" in app.text("sidebar"), PAGE_TIMEOUT, "the job in the sidebar")
    app.nav("Train")
    assert run_state(app) in ("running", "queued")
    app.wait_until(lambda: epoch_reached(app) > before, RUN_TIMEOUT, "the run to progress after a reload")
    app.click("Cancel", key="train_cancel")
    app.wait_until(lambda: run_state(app) == "cancelled", RUN_TIMEOUT, "the run to be cancelled")
    # the store says cancelled a moment before the job has wound down; the live panel follows within a tick
    app.wait_until(lambda: "is cancelled: Resume continues it" in app.text(), PAGE_TIMEOUT, "the Resume hint")
    app.click("Resume", key="train_resume")
    app.wait_until(lambda: run_state(app) == "finished", RUN_TIMEOUT, "the resumed run to finish")
    app.wait_until(lambda: "Run 1 finished." in app.text(), PAGE_TIMEOUT, "the finished message")
    table = app.main.get_by_test_id("stDataFrame").last
    table.wait_for()
    server.stop()
    with Store.open(read_only=True) as store:
        run = store.run(1)
        assert run.state == "finished" and run.metrics["retrieval"]["rsum"] > 0
        assert len(run.metrics["epochs"]) == EPOCHS
        assert store.scores_frame(1)["clean_prob"].notna().all()


def test_a_server_killed_mid_run_resumes_to_finished(server_factory, open_app):
    seed_demo()
    server = server_factory(env=ENV)
    app = patient(open_app(server))
    start_run(app, epochs=EPOCHS)
    app.wait_until(lambda: epoch_reached(app) >= 2, RUN_TIMEOUT, "the run to progress")
    server.kill()
    server.start()
    app.reload()
    app.nav("Train")
    assert run_state(app) == "interrupted"
    assert "is interrupted: Resume continues it" in app.text()
    app.click("Resume", key="train_resume")
    app.wait_until(lambda: run_state(app) == "finished", RUN_TIMEOUT, "the resumed run to finish")
    server.stop()
    with Store.open(read_only=True) as store:
        run = store.run(1)
        assert run.state == "finished" and len(run.metrics["epochs"]) == EPOCHS


def test_first_start_fills_the_demo_and_scores_it(server_factory, open_app):
    server = server_factory(first_start=True, env=ENV | {"CONCORD_FIRST_START_IMAGES": "12",
                                                         "CONCORD_FIRST_START_EPOCHS": "1"})
    app = patient(open_app(server))
    app.wait_until(lambda: "first start: creating the demo dataset" in app.text("sidebar"), PAGE_TIMEOUT,
                   "the first-start job in the sidebar")
    # b1 and, queued behind it, the concord run fusing it; an ended job stays in the sidebar a minute
    app.wait_until(lambda: "run 2 · concord · concord-tiny: finished" in app.text("sidebar"), RUN_TIMEOUT,
                   "the fused run to finish")
    app.reload()
    app.nav("Train")   # a new session's run picker starts on the fused run
    app.wait_until(lambda: run_state(app, 2, "concord") == "finished", PAGE_TIMEOUT, "the fused run on Train")
    server.stop()
    with Store.open(read_only=True) as store:
        assert store.dataset_names() == ["demo"]
        assert store.list_datasets()[0]["noisy"] > 0
        assert [(r.id, r.method, r.state) for r in store.runs()] == [(2, "concord", "finished"), (1, "b1", "finished")]
        assert store.run(2).metrics["base_runs"] == [1]
        assert store.run(1).config["epochs"] == 1   # the first start's epochs
