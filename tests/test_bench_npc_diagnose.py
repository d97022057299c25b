"""`bench npc-diagnose`: NPC's bank and weights against the injected truth, on a tiny demo (real engine, CPU)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from core.benchmarks.npc_diagnose import epoch_figures
from core.cli import main


def test_npc_diagnose_reports_every_epoch(capsys, concord_env) -> None:
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["bench", "npc-diagnose", "--kind", "ncr", "--epochs", "2", "--set", "batch_size=16", "--no-docs",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    figures = out["epochs_figures"]
    assert [f["epoch"] for f in figures] == [1, 2] and out["warmup_epochs"] == 1
    assert "bank" not in figures[0] and all("r_auroc" in f for f in figures[1:])
    for f in figures[1:]:
        assert 0 <= f["bank_noisy_share"] <= 1 and 0 <= f["w_noisy"] <= 1 and len(f["r_quantiles"]) == 5
    assert 0 <= out["final"]["auroc"] <= 1 and out["final"]["rsum"] is not None


class _Pool:
    n_train = 4

    def __len__(self) -> int:
        return 5


class _Stub:
    """The parts of an NPC run `epoch_figures` reads: 4 training pairs (0 and 2 noisy), a pool of 5 (pair 4 is a
    meta-data positive), after one warm-up epoch."""

    data = SimpleNamespace(train=np.arange(4), is_noisy=np.array([1.0, 0.0, 1.0, 0.0]))
    ctx = SimpleNamespace(seed=0)
    pool = _Pool()
    warmup = 1
    model = None
    clean = np.array([True, True, False, False, True])      # pair 0 (noisy), pair 1 and the meta pair 4
    i_entry = np.array([1, 0, 1, 4, 1])
    t_entry = np.array([4, 4, 0, 1, -1])
    w = np.array([0.5, 1.0, 0.7, 0.76])
    r = np.array([0.55, 1.2, 0.9, 0.999])

    def per_sample_losses(self, model, rows, seed) -> np.ndarray:
        return np.array([3.0, 1.0, 2.0, 0.5])


def test_epoch_figures_by_hand() -> None:
    stub = _Stub()
    assert epoch_figures(stub, 0) == {"epoch": 1, "loss_auroc": 1.0}            # warm-up: losses only
    f = epoch_figures(stub, 1)
    assert f["bank"] == 3 and f["bank_noisy_share"] == 1 / 3
    # entries used: i 1,0,1,4,1 and t 4,4,0,1 → pair 0 (noisy) twice among 9; distinct {0, 1, 4}; pair 1 4 times
    assert (f["entries_distinct"], f["entry_max_uses"]) == (3, 4) and f["entries_noisy_share"] == 2 / 9
    assert (f["w_noisy"], f["w_clean"], f["w_below_1"]) == (0.6, 0.88, 0.75)
    assert f["r_auroc"] == 1.0                                # both noisy pairs have the lowest r
    assert f["r_quantiles"][2] == round(float(np.median(stub.r)), 4)
