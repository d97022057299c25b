"""Train page end to end in headless Chromium."""
from __future__ import annotations


def test_empty_state_and_restart(app, server):
    assert "No dataset yet" in app.text()
    app.nav("Train")
    assert "Train" in app.text()
    server.restart()
    app.reload()
    assert "No dataset yet" in app.text()
