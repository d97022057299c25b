"""`python -m core bench review --browser` at a tiny size: a real server and headless Chromium, every
keypress stored. Run as a command (its own process: Playwright's sync API allows one driver per thread, and
this session's browser fixture may hold one already)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.paths import REPO_ROOT


def test_bench_review_browser_times_keypresses_that_land_in_the_store(chromium: str, concord_env: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "core", "bench", "review", "--demo-images", "0", "--synthetic", "40",
                           "--steps", "3", "--warmup", "1", "--browser", "--no-docs", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])["synthetic"]
    assert set(result["ms_p50_p95"]) == {"decision", "page_reads", "queue", "suggestions", "images", "total"}
    browser = result["browser"]
    assert browser["steps"] == 3 and len(browser["warmup_ms"]) == 1
    assert browser["decisions_stored"] == 4                      # the warm-up keypress and the 3 timed ones
    start, line, whole, stored = (browser[k] for k in ("to_script_start_ms_p50_p95", "to_pair_line_ms_p50_p95",
                                                       "ms_p50_p95", "to_stored_ms_p50_p95"))
    for low, high in (start, line, whole, stored):
        assert 0 < low <= high
    # the card shows the next pair before the server's script has started; the decision is stored after it
    assert line[0] <= whole[0] and start[0] < stored[0] and whole[0] < stored[0]
    assert not (concord_env / "concord.duckdb").exists()          # the user's home was not touched
