"""`bench cost`: every method's epoch timed against B1's on the same tiny demo (the real engine, CPU)."""
from __future__ import annotations

import json

from core.cli import main


def test_cost_times_every_method_against_b1(capsys, concord_env) -> None:
    assert main(["demo", "--images", "30", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["bench", "cost", "--methods", "npc,npc-released,mscn", "--batches", "1", "--set", "batch_size=16",
                 "--no-docs", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(figures["seconds_per_epoch"]) == ["b1", "npc", "npc-released", "mscn"]
    assert figures["ratio_to_b1"]["b1"] == 1.0 and all(v > 0 for v in figures["seconds_per_epoch"].values())
    assert set(figures["bank_build_s"]) == {"npc", "npc-released"}
    assert (figures["pairs"], figures["batch_size"], figures["batches_timed"]) == (120, 16, 1)
