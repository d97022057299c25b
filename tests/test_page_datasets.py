"""Datasets page (AppTest): empty state, create the demo and see its counts, inject noise, sample grid,
import with the CLI's messages, delete with a confirmation naming what goes."""
from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from pages.common import get_store
from tests.page_resources import fresh_page_resources, open_page


@pytest.fixture(autouse=True)
def fresh_store(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    with fresh_page_resources():
        yield


def datasets_page() -> AppTest:
    return open_page("pages/datasets.py", 120)


def table(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value.set_index("name")


def test_empty_state():
    at = datasets_page()
    assert "No dataset yet" in " ".join(e.value for e in at.info)
    assert not at.dataframe
    assert at.button(key="demo_create")  # the demo can be created from the empty state


def test_create_with_one_caption_per_image():
    at = datasets_page()
    at.number_input(key="demo_images").set_value(20)
    at.number_input(key="demo_captions").set_value(1)
    at.button(key="demo_create").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Created 'demo': 20 images, 20 pairs, 4 with injected noise"
    assert (table(at).loc["demo", "captions"], table(at).loc["demo", "pairs"]) == (20, 20)


def test_create_noise_and_delete():
    at = datasets_page()
    at.number_input(key="demo_images").set_value(20)
    at.button(key="demo_create").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Created 'demo': 20 images, 100 pairs, 24 with injected noise"
    row = table(at).loc["demo"]
    assert (row["images"], row["captions"], row["pairs"], row["train pairs"], row["val pairs"],
            row["test pairs"], row["injected noise"], row["reviewed"]) == (20, 100, 100, 80, 10, 10, 24, 0)
    # the sample grid shows captions as plain text, each one of the dataset's captions
    captions = set(get_store().pairs_frame(get_store().dataset("demo").id)["caption"])
    shown = [t.value for t in at.text if t.value in captions]
    assert len(shown) == 12

    at.selectbox(key="noise_kind").set_value("ncr")
    at.number_input(key="noise_ratio").set_value(0.5)
    at.text_input(key="noise_new_name").set_value("demo-noisy").run()
    at.button(key="noise_run").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Created 'demo-noisy' from 'demo': 40 of 80 train pairs carry ncr noise"
    t = table(at)
    assert t.loc["demo-noisy", "injected noise"] == 40 and t.loc["demo-noisy", "parent"] == "demo"

    at.selectbox(key="delete_name").set_value("demo-noisy").run()
    warning = at.warning[0].value
    assert "100 pairs" in warning and "decisions" in warning and "meta-data" in warning
    assert at.button(key="delete_run").disabled
    at.checkbox(key="delete_confirm_demo-noisy").check().run()
    at.button(key="delete_run").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Deleted 'demo-noisy'")
    assert list(table(at).index) == ["demo"]


def test_import_shows_the_cli_messages(tmp_path):
    for k in range(3):
        Image.new("RGB", (8, 8), (k * 60, 0, 0)).save(tmp_path / f"img{k}.png")
    pd.DataFrame({"image": [f"img{k}.png" for k in range(3)] + ["missing.png"],
                  "caption": ["one", "two", "three", "four"]}).to_csv(tmp_path / "pairs.csv", index=False)
    at = datasets_page()
    at.text_input(key="import_path").set_value(str(tmp_path / "pairs.csv"))
    at.text_input(key="import_name").set_value("mine").run()
    at.button(key="import_run").click().run()
    assert "import of 'mine' refused, nothing changed: 1 bad row(s) of 4" in at.error[0].value
    at.checkbox(key="import_skip_bad").check()
    at.button(key="import_run").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "imported 'mine' (csv): 3 images, 3 captions, 3 pairs from 4 rows"
    assert at.text[0].value.strip().startswith("train: 3 images, 3 captions, 3 pairs\nskipped 1 bad rows, listed in")
    assert table(at).loc["mine", "pairs"] == 3
