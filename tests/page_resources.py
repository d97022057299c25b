"""The Streamlit pages' cached store and job runner, fresh for one test and closed after it."""
from __future__ import annotations

import contextlib
from typing import Iterator

from pages.common import get_store, job_manager


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
