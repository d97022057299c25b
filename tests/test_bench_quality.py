"""`bench quality`: a noisy copy per (kind, ratio, seed) in a scratch store, each method trained on it (tiny demo)."""
from __future__ import annotations

import json

from core.cli import main


def test_quality_sweep_on_a_tiny_demo(capsys, concord_env) -> None:
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["bench", "quality", "--kinds", "ncr", "--noise", "0.4", "--methods", "b1", "--epochs", "1",
                 "--seeds", "1", "--first-seed", "3", "--set", "b1.batch_size=16", "--no-docs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["kind"], r["ratio"], r["method"], r["seed"]) for r in out["rows"]] == [
        ("clean", 0.0, "b1", 3), ("ncr", 0.4, "b1", 3)]
    noisy = out["rows"][1]
    assert 0 <= noisy["auroc"] <= 1 and noisy["weight_auroc"] == noisy["auroc"]    # b1's weight is clean_prob
    assert out["rows"][0]["auroc"] is None and out["rows"][0]["rsum"] is not None  # no noise: nothing to detect
    assert [(s["kind"], s["seeds"]) for s in out["summary"]] == [("clean", 1), ("ncr", 1)]

    assert main(["datasets", "--json"]) == 0                                       # the user's store: untouched
    assert [d["name"] for d in json.loads(capsys.readouterr().out)] == ["demo"]
