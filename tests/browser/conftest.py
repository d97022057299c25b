"""End-to-end fixtures: a real `streamlit run app.py` server and Debian's headless Chromium via Playwright.

- `server_factory(first_start=False, env=None)` starts a server on a free localhost port with the test's
  own CONCORD_HOME/DB/CACHE (set by tests/conftest.py); `server` is one started that way. A server can be
  stopped, killed (a crash), started again and restarted; every server is stopped when the test ends.
- `app` is an `AppPage` (a Playwright page with Streamlit-aware waits) opened on `server`; `open_app(server)`
  opens one on another server.
- `StreamlitServer` and `AppPage` live in core/app_server.py (`bench review --browser` uses them too).
- Tests here are marked `browser`. They skip when /usr/bin/chromium is missing, unless CI=true: then fail.

The test process must not hold the DuckDB file while a server runs (one read-write process): seed data
with `Store.open()` in a `with` block *before* starting the server, or read it after stopping it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from core.app_server import CHROMIUM, AppPage, StreamlitServer, launch_chromium


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/browser is a browser test."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


# fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium's path; the test skips when it is missing, unless CI=true: then it fails."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing and CI=true: browser tests must run")
        pytest.skip(f"{CHROMIUM} not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_browser(chromium: str):
    """Debian's Chromium, headless, driven by Playwright (one per test session)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        yield browser
        browser.close()


@pytest.fixture
def server_factory(concord_env: Path, tmp_path: Path) -> Iterator[Callable[..., StreamlitServer]]:
    """`server_factory(first_start=False, env=None, start=True)`: a server on this test's CONCORD_HOME."""
    servers: list[StreamlitServer] = []

    def make(first_start: bool = False, env: dict[str, str] | None = None, start: bool = True) -> StreamlitServer:
        full = dict(os.environ)
        full["CONCORD_NO_FIRST_START"] = "0" if first_start else "1"
        full.pop("PYTEST_CURRENT_TEST", None)
        full.update(env or {})
        server = StreamlitServer(full, tmp_path / f"streamlit-{len(servers)}.log")
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., StreamlitServer]) -> StreamlitServer:
    """A running server with first start off (an empty database unless the test seeded one)."""
    return server_factory()


@pytest.fixture
def open_app(chromium_browser) -> Iterator[Callable[[StreamlitServer], AppPage]]:
    """`open_app(server, path="")`: a fresh browser context and page on `server`."""
    contexts = []

    def make(server: StreamlitServer, path: str = "") -> AppPage:
        context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        return AppPage(context.new_page(), server).goto(path)

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def app(open_app, server: StreamlitServer) -> AppPage:
    """A page on `server`, opened at the default page."""
    return open_app(server)
