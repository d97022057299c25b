"""`bench first-start`: the first start's run on small demos, and the Review page's top suggestion for each pair
counted against the demo's ground truth (the real engine, CPU)."""
from __future__ import annotations

import json

from core.cli import main


def test_first_start_bench_scores_the_top_suggestion_of_every_pair(capsys, concord_env) -> None:
    assert main(["bench", "first-start", "--epochs", "1", "--images", "30", "--seeds", "3", "--no-docs",
                 "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("["):])
    assert [(r["seed"], r["epochs"], r["method"]) for r in rows] == [(3, 1, "b1")]
    # every pair of the 30-image demo (5 captions each) gets a suggestion: its image has other captions
    assert all(r["pairs"] == 150 and 0.0 <= r["share"] <= 1.0 for r in rows)
    assert "seed 3, 1 epochs: top suggestion shares the image's objects for" in out
    assert not (concord_env / "concord.duckdb").exists()          # a temporary database, never the user's
    assert not [p for p in (concord_env / "datasets").rglob("*") if p.is_file()]   # its demos deleted with it
