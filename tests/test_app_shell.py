"""The app shell: every page renders with no dataset and says so (the empty state)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.page_resources import APP, fresh_page_resources, open_page

PAGES = ["pages/datasets.py", "pages/train.py", "pages/explore.py", "pages/review.py", "pages/metadata.py",
         "pages/export.py"]


@pytest.fixture(autouse=True)
def no_first_start(monkeypatch: pytest.MonkeyPatch):
    """No demo is made, and the pages' store and job runner are this test's alone (nothing outlives it)."""
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    with fresh_page_resources():
        yield


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_an_empty_state(page: str) -> None:
    at = open_page(page)
    texts = " ".join(e.value for e in [*at.info, *at.markdown, *at.caption] if isinstance(e.value, str))
    assert "No dataset yet" in texts


def test_sidebar_keeps_the_reviewer_name() -> None:
    # AppTest (Streamlit 1.67) does not re-execute a st.navigation entry script on a second run, so the
    # name is given as session state before the one run, as a returning session would carry it.
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["sidebar_reviewer"] = "ann"
    at.run()
    assert at.sidebar.text_input(key="sidebar_reviewer").value == "ann"
    assert at.session_state["reviewer"] == "ann"


def test_the_heap_is_frozen_once_per_new_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """`settle_heap` (the end of every app.py run) collects and freezes after a run that imported modules,
    and does nothing on runs that imported none."""
    import gc
    import sys

    from pages import common
    collected: list[int] = []
    monkeypatch.setattr(common.gc, "collect", lambda: collected.append(1) or 0)
    monkeypatch.setattr(common, "_modules_frozen", 0)
    common.settle_heap()
    assert collected == [1] and gc.get_freeze_count() > 0
    common.settle_heap()                                   # no module imported since: nothing to do
    assert collected == [1]
    monkeypatch.setitem(sys.modules, "concord_test_new_module", type(sys)("concord_test_new_module"))
    common.settle_heap()
    assert collected == [1, 1]
    gc.unfreeze()
