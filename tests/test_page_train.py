"""Train page (AppTest) on the real job runner with the fake engine's training loop (tests/fake_engine.py):
the form from the method's settings, start → finished in the runs table, a failure's error, cancel and
resume, interrupted runs, delete, empty states, and a rerun that does not wait for a running job."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.methods import settings
from pages.common import get_store, job_manager
from tests.page_resources import fresh_page_resources
from tests import fake_engine
from tests.test_export import make_dataset

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "train.py")


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch):
    """A fresh store and job runner per test; runs execute the fake engine's resumable loop."""
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    monkeypatch.setattr("core.training.execute_run", fake_engine.execute_run)
    with fresh_page_resources():
        yield


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    make_dataset(get_store(), tmp_path / "src")
    return "ds"


def page(dataset: str | None = "ds", timeout: float = 60) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=timeout)
    at.session_state["dataset"] = dataset
    at.run()
    assert not at.exception, at.exception
    return at


def fake_run(*, epochs: int = 1, steps: int = 4, delay: float = 0.0, fail_at: int = -1,
             state: str | None = None) -> int:
    """A run whose config drives the fake loop (submitted by the test, not by the page)."""
    store = get_store()
    run_id = store.create_run(store.dataset("ds").id, "b1", "concord-tiny", regime="finetune", device="cpu",
                              config={"epochs": epochs, "steps": steps, "delay": delay, "fail_at": fail_at})
    if state:
        store.update_run(run_id, state=state)
    return run_id


def wait_all() -> None:
    for job in job_manager().jobs():
        job_manager().wait(job.id, 30)


def table(at: AppTest):
    return at.dataframe[-1].value.set_index("run")


def texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in (at.info, at.error, at.success, at.markdown, at.caption) for e in kind)


def test_empty_states(dataset):
    assert "No dataset yet" in texts(page(None))
    at = page()
    assert "No runs on this dataset yet" in texts(at)
    assert not at.dataframe


def test_form_is_generated_from_the_method_settings(dataset):
    at = page()
    assert at.text_input(key="train_model").value == "concord-tiny"
    method = at.selectbox(key="train_method")
    assert method.value == "b1"
    assert not any(o.startswith("B0") for o in method.options)  # B0 needs a pretrained image tower
    assert at.selectbox(key="train_regime_False").options == ["finetune"]  # concord-tiny trains its image tower
    for s in settings("b1"):
        widget = at.number_input(key=f"train_set_b1_{s.name}")
        assert widget.value == s.default
        assert s.help in widget.help and f"(default {s.default})" in widget.help
    # the pretrained model's B0 and features regime appear with it
    at.text_input(key="train_model").set_value("open_clip:ViT-B-32:openai").run()
    assert any(o.startswith("B0") for o in at.selectbox(key="train_method").options)
    assert at.selectbox(key="train_regime_True").options == ["features", "finetune"]
    at.text_input(key="train_model").set_value("nope").run()
    assert "unknown model 'nope'" in at.error[0].value
    assert "train_start" not in [b.key for b in at.button]


def test_start_runs_to_finished_and_into_the_table(dataset):
    at = page()
    at.number_input(key="train_set_b1_epochs").set_value(2)
    at.number_input(key="train_set_b1_lr").set_value(0.005)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    run = get_store().runs()[0]
    assert (run.method, run.model, run.regime, run.config["epochs"], run.config["lr"]) == \
        ("b1", "concord-tiny", "finetune", 2, 0.005)
    wait_all()
    at.run()
    assert get_store().run(run.id).state == "finished"
    assert at.selectbox(key="train_run").value == run.id
    assert f"Run {run.id} finished." in texts(at)
    row = table(at).loc[run.id]
    assert (row["state"], row["AUROC"], row["AUPRC"], row["rSum"], row["epochs"]) == \
        ("finished", 0.875, 0.625, 251.5, 2)
    assert row["time (s)"] >= 0
    # the loss curve and the epoch metrics of the finished run stay on the page
    assert len(at.dataframe) == 2 and list(at.dataframe[0].value["epoch"]) == [1, 2]
    # a finished run no concord run has fused yet: the page points to the fusion (its rate named: not b1's default)
    assert f"#{run.id} (b1 lr=0.005) not fused yet: a **concord** run" in texts(at)
    assert at.selectbox(key="train_run").format_func(run.id) == f"#{run.id} · b1 lr=0.005 · finished"
    store = get_store()
    store.update_run(store.create_run(store.dataset("ds").id, "concord", "concord-tiny", config={}), state="running")
    assert "not fused yet" not in texts(at.run())


def test_a_failing_run_shows_its_error_and_can_be_resumed(dataset):
    run_id = fake_run(fail_at=2)
    job_manager().submit_run(get_store(), run_id)
    wait_all()
    at = page()
    assert at.error[0].value == f"Run {run_id} failed: RuntimeError: fake failure at step 2"
    assert table(at).loc[run_id, "state"] == "failed"
    assert at.button(key="train_resume")


def test_cancel_then_resume_finishes(dataset):
    run_id = fake_run(steps=400, delay=0.02)
    job = job_manager().submit_run(get_store(), run_id)
    while job.progress.snapshot()["step"] < 2:
        time.sleep(0.01)
    at = page()
    assert at.button(key="train_cancel")
    at.run(timeout=2)  # a rerun while the job runs does not wait for it
    at.button(key="train_cancel").click().run()
    job_manager().wait(job.id, 10)
    at.run()
    assert table(at).loc[run_id, "state"] == "cancelled"
    reached = int(get_store().run(run_id).checkpoint)
    assert 2 <= reached < 400
    get_store().update_run(run_id, config={"epochs": 1, "steps": 400, "delay": 0.0, "fail_at": -1})
    at.button(key="train_resume").click().run()
    wait_all()
    at.run()
    assert table(at).loc[run_id, "state"] == "finished"
    assert job_manager().latest(f"run:{run_id}").progress.snapshot()["step"] == 400


def test_a_run_left_running_by_a_dead_process_is_interrupted_and_resumes(dataset):
    run_id = fake_run()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    get_store().update_run(run_id, state="running", owner_pid=proc.pid)
    at = page()
    assert get_store().run(run_id).state == "interrupted"
    assert "is interrupted: Resume continues it" in texts(at)
    at.button(key="train_resume").click().run()
    wait_all()
    at.run()
    assert table(at).loc[run_id, "state"] == "finished"
    assert os.getpid() == get_store().run(run_id).owner_pid


def test_delete_a_run_with_confirmation(dataset):
    keep, gone = fake_run(state="finished"), fake_run(state="cancelled")
    at = page()
    at.selectbox(key="train_run").set_value(gone).run()
    assert at.button(key="train_delete").disabled
    at.checkbox(key=f"train_delete_confirm_{gone}").check().run()
    at.button(key="train_delete").click().run()
    assert not at.exception, at.exception
    assert [r.id for r in get_store().runs()] == [keep]
    assert list(table(at).index) == [keep]


def test_the_fused_method_is_offered_with_its_settings(dataset):
    at = page()
    method = at.selectbox(key="train_method")
    assert any(o.startswith("Concord") for o in method.options)
    method.set_value("concord").run()
    assert not at.exception, at.exception
    assert "refits as you review" in " ".join(c.value for c in at.caption)
    for s in settings("concord"):
        if s.type in (int, float):
            widget = at.number_input(key=f"train_set_concord_{s.name}")
        elif s.type is bool:
            widget = at.checkbox(key=f"train_set_concord_{s.name}")
        else:
            widget = at.text_input(key=f"train_set_concord_{s.name}")
        assert widget.value == s.default and s.help in widget.help
