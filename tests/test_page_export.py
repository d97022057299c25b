"""Export page (AppTest): empty state, previewed counts, writing an export with a zip download."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from tests.page_resources import fresh_page_resources, open_page
from tests.test_export import decide_three, make_dataset


@pytest.fixture(autouse=True)
def fresh_store(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    with fresh_page_resources():
        yield


def export_page() -> AppTest:
    return open_page("pages/export.py")


def test_empty_state():
    at = export_page()
    assert "No dataset yet" in " ".join(str(e.value) for e in at.info)
    assert not at.button


def test_preview_and_write(tmp_path):
    with Store.open() as s:
        decide_three(s, make_dataset(s, tmp_path / "src"))
    at = export_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"In": "6", "Dropped": "1", "Fixed": "1", "Out": "5"}
    assert at.selectbox(key="export_format").value == "csv"
    assert at.button(key="export_write").disabled  # no destination yet
    out = tmp_path / "exported"
    at.text_input(key="export_out").set_value(str(out)).run()
    at.button(key="export_write").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == [f"Wrote 5 pairs to {out}"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["out"] == 5
    assert at.get("download_button")
    # writing again into the now non-empty folder is refused with the reason
    at.button(key="export_write").click().run()
    assert "not empty" in at.error[0].value
