"""The Streamlit pages' cached store and job runner, fresh for one test and closed after it; a page opened
through app.py's navigation."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from streamlit.testing.v1 import AppTest

from pages.common import get_store, job_manager

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@contextlib.contextmanager
def fresh_page_resources() -> Iterator[None]:
    """Clear the cached store and job runner, and shut both down when the test ends."""
    get_store.clear()
    job_manager.clear()
    try:
        yield
    finally:
        job_manager().shutdown()
        job_manager.clear()
        get_store().close()
        get_store.clear()


def open_page(page: str, timeout: float = 60) -> AppTest:
    """The app run once, then switched to `page` (e.g. "pages/export.py") and run, with no exception raised."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at
