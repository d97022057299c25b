"""`bench scale`: every step a user takes, each in a process of its own, at a tiny size, headless."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.benchmarks import scale
from core.paths import REPO_ROOT


def test_scale_times_every_step_with_its_peak_memory(tmp_path: Path) -> None:
    # run as a user would, in a process of its own: its home is `user`, its temporary folders go under `scratch`
    # (a home the test process does not use, so that no page thread another test left behind writes there)
    scratch, user = tmp_path / "scratch", tmp_path / "user"
    scratch.mkdir()
    env = dict(os.environ, CONCORD_HOME=str(user), CONCORD_DB=str(user / "concord.duckdb"), TMPDIR=str(scratch),
               PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-m", "core", "bench", "scale", "--pairs", "300", "--review-steps", "3",
                          "--feature-sample", "100", "--json", "--no-docs"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    results = figures["sizes"]["300"]
    assert [name for name, _ in scale.plan(set(scale.STEPS))] == list(results)
    for name, r in results.items():
        assert r["ok"], (name, r.get("trace"))
        assert r["peak_rss_gb"] > 0 and r["wall_s"] > 0
    f = {name: r["figures"] for name, r in results.items()}
    assert f["import"]["pairs"] == 300 and f["import"]["seconds"] > 0
    assert f["features"]["projected"] and f["features"]["captions"] == 100 and f["features"]["all_captions"] == 300
    assert f["scoring"]["run_id"] != f["stand-in"]["base_run"] and f["projection"]["seconds"] > 0
    assert f["draw"]["drawn"] == "300 markers" and f["review"]["steps"] == 3 and f["export"]["seconds"] > 0

    table = scale.markdown({300: results}, "python -m core bench scale --pairs 300", True)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    labels = [line.split(" | ")[0][2:] for line in rows]
    assert labels == [label for label, *_ in scale.rows(results)]
    for step in ("import", "caption features", "image inputs", "faiss index", "scoring pass", "map: projection",
                 "map: first draw", "explore: box", "review: keypress", "export"):
        line = next(line for line in rows if line.startswith(f"| {step}"))
        seconds, rss = line.strip("| ").split(" | ")[2:4]
        assert seconds[:1].isdigit() or seconds.startswith("**") or "not run (no `--browser`)" in seconds, line
        assert rss[:1].isdigit() or rss in ("the draw's process", "–"), line
    assert "projected" in table and "300: peak RSS GB" in table and "bench scale --pairs 300" in table

    # nothing left behind, the user's (here: the test's) home untouched
    assert not list(scratch.glob("concord-bench-scale-*"))
    assert not user.exists()
