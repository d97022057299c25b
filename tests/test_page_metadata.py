"""Meta-data page (AppTest): add, flip, remove, import split and CSV, counts, warnings, empty states, retrain."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.store import Store
from pages.common import get_store, job_manager
from tests.page_resources import fresh_page_resources
from tests.test_metadata import make_meta_dataset

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "metadata.py")


@pytest.fixture(autouse=True)
def fresh_resources():
    with fresh_page_resources():
        yield


@pytest.fixture
def ds(tmp_path) -> int:
    """40 pairs k0..k39 'Caption K': even keys in train, odd in val."""
    with Store.open() as s:
        return make_meta_dataset(s, tmp_path / "src")


def page(dataset: str | None = "ds") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["dataset"] = dataset
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def method_meta(ds: int) -> dict[int, int]:
    """Pair id → label of the meta-data as the methods get it (core.training.build_data)."""
    from core.training import build_data
    store = get_store()
    pairs, meta = store.pairs_frame(ds), store.meta_frame(ds)
    data = build_data(pairs, meta, np.sort(store.images_frame(ds)["image_id"].to_numpy()),
                      np.sort(store.captions_frame(ds)["caption_id"].to_numpy()))
    return {int(data.pair_ids[i]): int(label) for i, label in zip(data.meta.pair_index, data.meta.label)}


def select(at: AppTest, key: str, rows: list[int]) -> None:
    at.session_state[key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def test_no_dataset():
    at = page(None)
    assert "No dataset yet" in at.info[0].value
    assert not at.button


def test_add_flip_remove_update_counts_and_the_methods_table(ds):
    at = page()
    assert "No meta-data yet" in at.info[0].value
    assert [w.value.split(":")[0] for w in at.warning] == ["No positives"]
    assert metrics(at) == {"Positives": "0", "Negatives": "0", "Balance": "–"}

    at.text_input(key="meta_search").set_value("caption 1").run()
    found = at.dataframe[0].value
    assert list(found["key"][:3]) == ["k1", "k10", "k11"] and set(found["now"]) == {"—"}
    assert at.button(key="meta_add_1").disabled  # nothing selected yet
    select(at, "meta_found_0", [0, 1])
    click(at, "meta_add_1")
    assert at.success[0].value == "Added 2 positives."
    assert metrics(at) == {"Positives": "2", "Negatives": "0", "Balance": "100% positive"}
    assert [w.value.split(":")[0] for w in at.warning] == ["Too small"]  # the small-set warning
    assert "2 positives, fewer than 50" in at.warning[0].value
    pair = get_store().pairs_frame(ds).set_index("key")["pair_id"]
    assert method_meta(ds) == {int(pair["k1"]): 1, int(pair["k10"]): 1}

    entries = at.dataframe(key="meta_entries_1").value
    assert list(entries["caption"]) == ["Caption 1", "Caption 10"]
    assert list(entries["source"]) == ["manual", "manual"]
    select(at, "meta_entries_1", [1])
    click(at, "meta_flip")
    assert at.success[0].value == "Flipped 1 entries."
    assert metrics(at)["Negatives"] == "1" and metrics(at)["Positives"] == "1"
    assert method_meta(ds) == {int(pair["k1"]): 1, int(pair["k10"]): 0}

    assert at.dataframe(key="meta_entries_2").value["label"].tolist() == ["positive", "negative"]
    at.radio(key="meta_show").set_value("negatives").run()
    select(at, "meta_entries_2", [0])  # the first row of the filtered table: k10's negative
    click(at, "meta_remove")
    assert at.success[0].value == "Removed 1 entries."
    assert metrics(at) == {"Positives": "1", "Negatives": "0", "Balance": "100% positive"}
    assert method_meta(ds) == {int(pair["k1"]): 1}


def test_import_split_and_csv_and_a_bad_csv_loses_nothing(ds):
    at = page()
    assert at.selectbox(key="meta_import_split").options == ["val"]  # never the noisy train split
    click(at, "meta_import_split_go")
    assert at.success[0].value.startswith("Imported 20 pairs of split 'val' as positives")
    assert metrics(at)["Positives"] == "20"

    at.file_uploader(key="meta_csv_1").set_value(("labels.csv", b"pair_id,label\nk0,0\nk2,0\n", "text/csv")).run()
    click(at, "meta_import_csv")
    assert at.success[0].value == "Imported 2 entries from labels.csv."
    assert (metrics(at)["Positives"], metrics(at)["Negatives"]) == ("20", "2")

    before = get_store().meta_frame(ds)
    at.file_uploader(key="meta_csv_2").set_value(("bad.csv", b"pair_id,label\nk4,0\nk6,maybe\n", "text/csv")).run()
    click(at, "meta_import_csv")
    assert at.error[0].value == ("bad.csv line 3: a label is 1 (matched) or 0 (mismatched), got 'maybe'; "
                                 "nothing was stored")
    assert get_store().meta_frame(ds).equals(before)
    assert (metrics(at)["Positives"], metrics(at)["Negatives"]) == ("20", "2")
    at.file_uploader(key="meta_csv_2").set_value(("latin.csv", "pair_id,label\nk4,é\n".encode("latin-1"),
                                                  "text/csv")).run()
    click(at, "meta_import_csv")
    assert at.error[0].value.startswith("latin.csv: not UTF-8 text") and get_store().meta_frame(ds).equals(before)


def fake_execute(store: Store, run_id: int, progress) -> None:
    """A run that learned the meta-data: it flags exactly the pairs that are meta-data negatives."""
    run = store.run(run_id)
    store.update_run(run_id, state="running")
    pairs, meta = store.pairs_frame(run.dataset_id), store.meta_frame(run.dataset_id)
    negatives = set(meta.loc[meta["label"] == 0, "pair_id"].astype(int))
    clean = np.where(pairs["pair_id"].isin(negatives), 0.1, 0.9)
    store.write_scores(run_id, pairs["pair_id"], clean, clean, clean)
    store.update_run(run_id, state="finished")


def test_retrain_starts_a_run_like_the_latest_and_compares_agreement(ds, monkeypatch):
    from core.methods import make_config
    monkeypatch.setattr(jobs, "_execute_run", fake_execute)
    store = get_store()
    config = asdict(make_config("b1", {"epochs": 1}))
    base = store.create_run(ds, "b1", "concord-tiny", regime="finetune", device="cpu", seed=2, config=config)
    pairs = store.pairs_frame(ds)
    store.write_scores(base, pairs["pair_id"], np.full(len(pairs), 0.9), np.full(len(pairs), 0.9),
                       np.full(len(pairs), 0.9))  # flags nothing
    store.update_run(base, state="finished")
    key = pairs.set_index("key")["pair_id"]
    store.decide(ds, [int(key["k0"])], "keep", "ann")
    store.decide(ds, [int(key["k2"])], "reject", "ann")

    at = page()
    assert at.selectbox(key="meta_retrain_method").value == "b1"
    assert any(f"Like run {base} (b1 · concord-tiny · finetune)" in c.value for c in at.caption)
    assert metrics(at)[f"Run {base} · b1 agrees with"] == "1 of 2 (50%)"
    click(at, "meta_retrain")
    new = at.session_state["meta_retrain_run"]
    job_manager().wait(job_manager().latest(jobs.run_key(new)).id, 30)
    at.run()
    assert not at.exception, at.exception
    run = store.run(new)
    assert (run.method, run.model, run.seed, run.device, run.config) == ("b1", "concord-tiny", 2, "cpu", config)
    assert at.success[0].value == f"Run {new} finished."
    shown = {m.label: (m.value, m.delta) for m in at.metric}
    assert shown[f"Run {new} · b1 agrees with"] == ("2 of 2 (100%)", f"+1 vs run {base}")
    assert shown[f"Run {base} · b1 agrees with"] == ("1 of 2 (50%)", "")  # no delta: no earlier run
