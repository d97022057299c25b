"""core.runs: the runs table, progress views and ETA, form choices, resume and delete rules."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from core import artifacts, paths
from core.errors import ConcordError
from core.generated import delete_dataset
from core.methods import Setting
from core.runs import (check_resumable, delete_run, device_choices, epochs_frame, loss_frame, method_choices,
                       method_label, number_step, overall_eta, overall_fraction, progress_text, regime_choices,
                       run_label, run_title, runs_table, same_rate, scored_run_label, split_settings)
from tests.test_export import make_dataset


def test_runs_table_lists_headline_figures(store, tmp_path: Path):
    ds = make_dataset(store, tmp_path / "src")
    done = store.create_run(ds, "b1", "concord-tiny", regime="finetune", config={"epochs": 3, "lr": 0.01})
    store.update_run(done, state="running")
    store.update_run(done, state="finished", metrics={"detection": {"auroc": 0.9, "auprc": 0.8, "f1": 0.7,
                                                                    "flagged": 4}, "retrieval": {"rsum": 300.5}})
    waiting = store.create_run(ds, "npc", "concord-tiny", config={"epochs": 1})
    fused = store.create_run(ds, "concord", "concord-tiny", config={"epochs": 8})   # epochs of a b1 it may train
    frame = runs_table(store.runs(ds)).set_index("run")
    assert pd.isna(frame.loc[fused, "epochs"]) and pd.isna(frame.loc[fused, "regime"])   # a scorer trains nothing
    assert pd.isna(frame.loc[fused, "lr"])
    assert frame.loc[done, "regime"] == "finetune"
    frame = frame.drop(index=fused)
    assert list(frame.index) == [waiting, done]
    row = frame.loc[done]
    assert (row["method"], row["state"], row["epochs"], row["lr"], row["AUROC"], row["AUPRC"], row["F1"],
            row["flagged"], row["rSum"]) == ("b1", "finished", 3, 0.01, 0.9, 0.8, 0.7, 4, 300.5)
    assert row["time (s)"] >= 0
    assert frame.loc[waiting, "state"] == "queued" and pd.isna(frame.loc[waiting, "AUROC"])
    assert list(runs_table([]).columns) == list(frame.reset_index().columns)


def test_progress_views():
    # two epochs of 3 steps, the second resumed at step 1: steps restart in each epoch's stage
    record = {"history": [{"step": 1.0, "loss": 2.0}, {"step": 2.0, "loss": 1.5, "acc": 0.1}, {"step": 3.0},
                          {"step": 2.0, "loss": 1.0}, {"step": 3.0, "loss": 0.5}],
              "epochs": [{"epoch": 1, "loss": 1.75}]}
    assert loss_frame(record).values.tolist() == [[1.0, 2.0], [2.0, 1.5], [5.0, 1.0], [6.0, 0.5]]
    assert list(loss_frame({}).columns) == ["update", "loss"] and loss_frame({}).empty
    assert epochs_frame(record).to_dict("records") == [{"epoch": 1, "loss": 1.75}]
    assert epochs_frame({}).empty


def test_overall_eta_adds_the_epochs_left():
    # epoch 2 of 5: 10 batches an epoch at 2 batches/s → 4 s left in this one + 3 epochs × 5 s
    record = {"stage": "epoch 2/5", "eta": 4.0, "rate": 2.0, "total": 10, "step": 2, "message": "b1: epoch 2/5"}
    assert overall_eta(record) == 19.0
    assert overall_eta({**record, "stage": "epoch 5/5"}) == 4.0
    assert overall_eta({**record, "stage": "scoring"}) == 4.0
    assert overall_eta({**record, "eta": None, "rate": None}) is None
    assert overall_fraction({**record, "fraction": 0.2}) == pytest.approx((1 + 0.2) / 5)
    assert overall_fraction({**record, "stage": "scoring", "fraction": None}) == 0.0
    assert overall_fraction({**record, "stage": "caption features", "fraction": 0.5}) == 0.5
    assert progress_text(record) == "b1: epoch 2/5 · 2/10 · 2.0 steps/s · ETA 19s"
    assert progress_text({"stage": "", "message": "", "total": None}) == "starting"


def test_form_choices():
    assert method_choices(image_pretrained=False) == ["b1"] + [m for m in ("npc", "npc-released", "mscn", "concord")
                                                               if m in method_choices(True)]
    assert method_choices(image_pretrained=True)[:2] == ["b0", "b1"]
    assert regime_choices(("features", "finetune"), False, "finetune") == ["finetune"]
    assert regime_choices(("features", "finetune"), True, "finetune") == ["finetune", "features"]
    assert device_choices(0) == ["auto", "cpu"] and device_choices(2)[2:] == ["cuda:0", "cuda:1"]
    assert (number_step(0.001), number_step(2e-4), number_step(10.0), number_step(0.0)) == (0.001, 0.0001, 10.0, 0.1)
    main, advanced = split_settings([Setting("lr", float, 0.1, ""), Setting("seed_x", int, 1, ""),
                                     Setting("epochs", int, 3, "")])
    assert [s.name for s in main] == ["lr", "epochs"] and [s.name for s in advanced] == ["seed_x"]


def test_resume_and_delete_rules(store, tmp_path: Path):
    ds = make_dataset(store, tmp_path / "src")
    run_id = store.create_run(ds, "b1", "concord-tiny")
    for state in ("queued", "cancelled", "interrupted", "failed"):
        store.update_run(run_id, state=state)
        check_resumable(store.run(run_id))
    store.update_run(run_id, state="finished")
    with pytest.raises(ConcordError, match=f"run {run_id} is finished; only a cancelled, interrupted or failed"):
        check_resumable(store.run(run_id))

    store.update_run(run_id, state="running")
    with pytest.raises(ConcordError, match="is running; cancel it before deleting it"):
        delete_run(store, store.run(run_id), live=False)
    store.update_run(run_id, state="cancelled")
    with pytest.raises(ConcordError, match="cancel it before deleting it"):
        delete_run(store, store.run(run_id), live=True)
    assert store.run(run_id).state == "cancelled"  # nothing deleted

    run = store.run(run_id)
    artifacts.checkpoint_path(run).write_bytes(b"x")
    delete_run(store, run, live=False)
    assert store.runs() == [] and not (paths.cache_dir() / "runs" / run.cache_key).exists()


def test_a_dataset_is_not_deleted_under_a_run_in_progress_and_takes_its_runs_cache_along(store, tmp_path: Path):
    """Deleting a dataset while one of its runs trains would leave the job writing scores for a dataset that is
    gone: refused (running in another process, or a live job of the caller's), nothing deleted. Once it ends the
    dataset goes with every run's cached checkpoint."""
    ds = make_dataset(store, tmp_path / "src")
    first, second = store.create_run(ds, "b1", "concord-tiny"), store.create_run(ds, "npc", "concord-tiny")
    store.update_run(second, state="running")
    with pytest.raises(ConcordError, match=r"dataset 'ds' has run\(s\) 2 in progress; cancel them before deleting"):
        delete_dataset(store, "ds")
    store.update_run(second, state="cancelled")
    with pytest.raises(ConcordError, match=r"run\(s\) 1 in progress"):
        delete_dataset(store, "ds", live_runs={first})
    assert store.dataset_names() == ["ds"] and len(store.runs(ds)) == 2 and len(store.pairs_frame(ds)) == 6
    runs = store.runs(ds)
    for run in runs:
        artifacts.checkpoint_path(run).write_bytes(b"x")
    assert delete_dataset(store, "ds")["runs"] == 2
    assert store.dataset_names() == [] and store.runs() == []
    assert not any((paths.cache_dir() / "runs" / run.cache_key).exists() for run in runs)


def test_latest_of_each_keeps_the_highest_id_in_first_seen_order() -> None:
    from types import SimpleNamespace

    from core.runs import latest_of_each
    runs = [SimpleNamespace(id=i, method=m) for i, m in [(4, "npc"), (1, "b1"), (3, "b1"), (2, "npc"), (5, "mscn")]]
    latest = latest_of_each(runs, lambda r: r.method)
    assert [(k, r.id) for k, r in latest.items()] == [("b1", 3), ("npc", 4), ("mscn", 5)]
    assert latest_of_each([], lambda r: r.method) == {}


def test_unfused_runs_are_the_finished_trained_runs_after_the_latest_fusion() -> None:
    from types import SimpleNamespace

    from core.runs import unfused_runs

    def runs(*rows):
        return [SimpleNamespace(id=i, method=m, state=s, metrics=(b or [{}])[0])   # newest first, as stored
                for i, m, s, *b in reversed(rows)]
    assert unfused_runs([]) == []
    trained = runs((1, "b1", "finished"), (2, "npc", "failed"), (3, "mscn", "finished"), (4, "npc", "running"))
    assert [r.id for r in unfused_runs(trained)] == [1, 3]              # neither failed nor unfinished runs count
    fused = runs((1, "b1", "finished"), (2, "concord", "finished"), (3, "mscn", "finished"))
    assert [r.id for r in unfused_runs(fused)] == [3]
    # a queued or running fusion will take them in; a failed or cancelled one did not
    assert unfused_runs(runs((1, "b1", "finished"), (2, "concord", "queued"))) == []
    assert [r.id for r in unfused_runs(runs((1, "b1", "finished"), (2, "concord", "failed")))] == [1]
    assert unfused_runs(runs((1, "b1", "finished"), (2, "concord", "finished"))) == []
    # the runs a fusion trained itself (newer than it) were fused by it; a later one was not
    taken = runs((1, "b1", "finished"), (2, "concord", "finished", {"base_runs": [1, 3]}), (3, "b1", "finished"),
                 (4, "npc", "finished"))
    assert [r.id for r in unfused_runs(taken)] == [4]
    cancelled = runs((1, "b1", "finished"), (2, "concord", "cancelled", {"base_runs": [1, 3]}), (3, "b1", "finished"))
    assert [r.id for r in unfused_runs(cancelled)] == [1, 3]          # a cancelled fusion fused nothing


def test_pickers_start_on_the_newest_run_that_no_fused_run_trained_for_itself() -> None:
    from types import SimpleNamespace

    from core.runs import picked_first

    def runs(*rows, state="finished"):
        return [SimpleNamespace(id=i, method=m, state=state, metrics=(b or [{}])[0])
                for i, m, *b in reversed(rows)]
    assert picked_first(runs((1, "b1"), (2, "npc"))).id == 2
    fused = runs((1, "b1"), (2, "concord", {"base_runs": [1, 3]}), (3, "b1"))   # #3 trained by #2
    assert picked_first(fused).id == 2
    assert picked_first(runs((1, "b1"), (2, "concord", {"base_runs": [1, 3]}), (3, "b1"), (4, "mscn"))).id == 4
    assert picked_first(runs((3, "b1"))).id == 3       # its fused run not listed (e.g. not finished): the newest
    first_start = runs((1, "b1"), (2, "concord"), state="queued")
    first_start[1].state = "running"                   # the b1 trains, the fused run waits behind it
    assert picked_first(first_start).id == 1


def test_a_run_at_another_learning_rate_than_its_methods_default_is_named_apart() -> None:
    run = lambda method, config: SimpleNamespace(method=method, config=config, id=3, state="finished",  # noqa: E731
                                                 model="concord-tiny", threshold=0.5, finished_at=None)
    assert method_label(run("b1", {"lr": 0.001})) == "b1"
    assert method_label(run("b1", {"lr": 0.01})) == "b1 lr=0.01"
    assert method_label(run("npc", {"lr": 0.0003})) == "npc lr=0.0003"
    assert method_label(run("concord", {"c": 0.1})) == "concord"            # no rate: the method alone
    assert method_label(run("b1", None)) == "b1"
    assert method_label(run("b1", {"lr": 0.0010000000001})) == "b1"        # float noise is the default rate
    assert same_rate(0.01, 0.01) and not same_rate(None, 0.01) and not same_rate(0.001, 0.01)
    assert run_label(run("b1", {"lr": 0.01})) == "#3 · b1 lr=0.01 · finished"
    assert run_title(run("b1", {"lr": 0.01})) == "run 3 · b1 lr=0.01 · concord-tiny"
    assert scored_run_label(run("b1", {"lr": 0.01})).startswith("run 3 · b1 lr=0.01 · concord-tiny · threshold 0.50")
    assert scored_run_label(run("b1", {"lr": 0.001})).startswith("run 3 · b1 · concord-tiny")


def test_requests_a_method_cannot_train_are_refused_before_a_run_exists(store, tmp_path: Path) -> None:
    """Refused at the request, not by a failed run: NPC's warm-up on a tower trained from scratch, a meta-data
    split the dataset lacks or that cannot be trusted, a setting out of its range."""
    from core.training import start_run
    ds = make_dataset(store, tmp_path / "src")
    with pytest.raises(ConcordError, match=r"NPC trains 1 warm-up epoch\(s\) first .*epochs must be at least 2, "
                                           "got 1"):
        start_run(store, "ds", "npc", epochs=1)
    with pytest.raises(ConcordError, match=r"no split 'vall' in this dataset \(splits: train, val\)"):
        start_run(store, "ds", "mscn", meta_split="vall")
    with pytest.raises(ConcordError, match="the 'train' split is the noisy one"):
        start_run(store, "ds", "mscn", meta_split="train")
    with pytest.raises(ConcordError, match="setting batch_size=0: must be at least 2"):
        start_run(store, "ds", "b1", settings={"batch_size": "0"})
    assert store.runs() == [] and store.meta_frame(ds).empty
    start_run(store, "ds", "mscn", meta_split="")           # '' asks for no seed
    assert store.meta_frame(ds).empty and len(store.runs()) == 1
