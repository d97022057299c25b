"""A real Concord server and a browser page on it, for end-to-end tests and `bench review --browser`.

`StreamlitServer` runs `python -m streamlit run app.py` as a subprocess on a free localhost port (this module
never imports streamlit); `AppPage` wraps a Playwright page with waits that understand Streamlit's rerun
cycle (it takes the page object, so playwright is imported only by whoever launches the browser:
`launch_chromium`, with Debian's headless Chromium at `CHROMIUM`).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

from core.paths import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT = 90.0


def launch_chromium(playwright):
    """Debian's Chromium, headless, from a started `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def free_port() -> int:
    """A localhost TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StreamlitServer:
    """One `streamlit run app.py` process on localhost, with its log in `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> "StreamlitServer":
        """Start the server and wait until its health endpoint answers."""
        if self.running:
            return self
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--server.runOnSave", "false"]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"streamlit did not answer on {self.url} within {timeout:.0f}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully (SIGTERM), killing after `timeout` seconds."""
        if not self.running:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill the server and its children at once (SIGKILL), as a crash or power cut would."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)

    def restart(self, timeout: float = START_TIMEOUT) -> "StreamlitServer":
        """Stop, then start again on the same port with the same home."""
        self.stop()
        return self.start(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class AppPage:
    """A Playwright page on a Concord server, with waits that understand Streamlit's rerun cycle."""

    def __init__(self, page, server: StreamlitServer, timeout: float = 30.0) -> None:
        self.page = page
        self.server = server
        self.timeout = timeout
        page.set_default_timeout(timeout * 1000)

    # navigation ----------------------------------------------------------------------------------
    def goto(self, path: str = "") -> "AppPage":
        """Open `path` (a page's URL path such as "train"; "" is the default page) and wait until idle."""
        self.page.goto(f"{self.server.url}/{path.lstrip('/')}")
        return self.wait_idle()

    def reload(self) -> "AppPage":
        self.page.reload()
        return self.wait_idle()

    def nav(self, title: str) -> "AppPage":
        """Switch page with the sidebar navigation link named `title`."""
        self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
        return self.wait_idle()

    # waits ---------------------------------------------------------------------------------------
    def wait_idle(self, timeout: float | None = None) -> "AppPage":
        """Wait until the app is connected and its script is not running (two checks in a row, so a
        rerun that starts right after another one is waited for too)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        app = self.page.get_by_test_id("stApp")
        app.wait_for(state="attached", timeout=(timeout or self.timeout) * 1000)
        calm = 0
        while calm < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"app still busy at {self.page.url}: script state "
                                   f"{app.get_attribute('data-test-script-state')}, connection "
                                   f"{app.get_attribute('data-test-connection-state')}, main area "
                                   f"{'drawn' if self._rendered() else 'empty'}")
            state = app.get_attribute("data-test-script-state")
            conn = app.get_attribute("data-test-connection-state")
            calm = calm + 1 if state == "notRunning" and conn == "CONNECTED" and self._rendered() else 0
            self.page.wait_for_timeout(100)
        return self

    def _rendered(self) -> bool:
        """Every page writes its title: an empty main area is a run that has not drawn yet (or was rerun)."""
        return bool(self.main.count() and self.main.inner_text().strip())

    def wait_text(self, text: str | re.Pattern, timeout: float | None = None):
        """Wait until `text` (a substring or a regex) is visible anywhere; returns its locator."""
        loc = self.page.get_by_text(text).first
        loc.wait_for(state="visible", timeout=(timeout or self.timeout) * 1000)
        return loc

    def wait_no_text(self, text: str | re.Pattern, timeout: float | None = None) -> None:
        self.page.get_by_text(text).first.wait_for(state="hidden", timeout=(timeout or self.timeout) * 1000)

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None, what: str = "condition") -> None:
        """Poll `predicate` (e.g. on `text()`) until it holds."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; page text:\n{self.text()[:3000]}")
            self.page.wait_for_timeout(200)

    # reading -------------------------------------------------------------------------------------
    @property
    def main(self):
        return self.page.get_by_test_id("stMain")

    @property
    def sidebar(self):
        return self.page.get_by_test_id("stSidebar")

    def text(self, where: str = "main") -> str:
        """The visible text of the main area (or "sidebar", or "all")."""
        loc = {"main": self.main, "sidebar": self.sidebar, "all": self.page.locator("body")}[where]
        return loc.inner_text()

    def element(self, key: str):
        """The element of a widget created with `key=...` (Streamlit tags it with class st-key-<key>)."""
        return self.page.locator(f".st-key-{key}")

    # acting --------------------------------------------------------------------------------------
    def click(self, label: str | re.Pattern, key: str | None = None) -> "AppPage":
        """Click the button labelled `label` (inside the element keyed `key` when given); wait until idle."""
        scope = self.element(key) if key else self.page
        scope.get_by_role("button", name=label).first.click()
        return self.wait_idle()

    def fill(self, label: str, value: str) -> "AppPage":
        """Type into the text/number input labelled `label` and commit it (Enter)."""
        box = self.page.get_by_label(label, exact=True).first
        box.fill(str(value))
        box.press("Enter")
        return self.wait_idle()

    def select(self, label: str, option: str) -> "AppPage":
        """Choose `option` in the selectbox labelled `label`."""
        box = self.page.get_by_test_id("stSelectbox").filter(has=self.page.get_by_text(label, exact=True)).first
        box.click()
        self.page.get_by_role("option", name=option, exact=True).click()
        return self.wait_idle()
