"""`bench mscn-diagnose`: MSCN's head and purification against the injected truth, on a tiny demo (real engine, CPU)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from core.benchmarks.mscn_diagnose import epoch_figures
from core.cli import main


def test_mscn_diagnose_reports_every_epoch(capsys, concord_env) -> None:
    # 60 images: the 2% seed then holds positives of more than one image, which MSCN's random negatives need
    assert main(["demo", "--images", "60", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    # one network: its set-aside pairs are then the run's `purified` (with two, the figures are network A's)
    assert main(["bench", "mscn-diagnose", "--kind", "ncr", "--epochs", "3", "--set", "batch_size=16",
                 "--set", "warmup_epochs=1", "--set", "co_training=false", "--no-docs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    figures = out["epochs_figures"]
    assert [f["epoch"] for f in figures] == [1, 2, 3] and out["warmup_epochs"] == 1
    # the warm-up epoch has no meta step and no purification; the first meta epoch purifies; the last does not
    assert "meta_loss" not in figures[0] and "set_aside" not in figures[0]
    assert "meta_loss" in figures[1] and figures[1]["set_aside"] == figures[1]["purified"]
    assert "set_aside" not in figures[2]
    for f in figures:
        assert 0 <= f["p_auroc"] <= 1 and 0 < f["meta_positive"] < 1 and f["rsum"] is not None
    assert 0 <= out["final"]["auroc"] <= 1 and out["final"]["rsum"] is not None


class _Stub:
    """The parts of an MSCN run `epoch_figures` reads: 4 training pairs (0 and 2 noisy) with head scores p, two
    meta positives and two meta negatives, one network whose purification set pairs 0 and 1 aside."""

    data = SimpleNamespace(train=np.arange(4), is_noisy=np.array([1.0, 0.0, 1.0, 0.0]))
    nets = [SimpleNamespace(keep=np.array([False, False, True, True]))]
    config = SimpleNamespace()

    def __init__(self, purifies: bool) -> None:
        self.purifies = purifies

    def purifies_after(self, epoch: int) -> bool:
        return self.purifies

    def pair_and_meta_scores(self, net):
        """p of the 4 training pairs; p of the meta pairs and their labels."""
        return np.array([0.2, 0.9, 0.6, 0.5]), np.array([0.8, 0.4, 0.6, 0.2]), np.array([1, 1, 0, 0])

    def retrieval_on_test(self):
        return {"rsum": 123.4}


def test_epoch_figures_by_hand() -> None:
    f = epoch_figures(_Stub(purifies=False), 0)
    # p on clean pairs 1, 3: (0.9 + 0.5) / 2; on noisy 0, 2: (0.2 + 0.6) / 2; noisy below clean in 3 of 4 comparisons
    assert f["epoch"] == 1 and f["p_clean"] == 0.7 and f["p_noisy"] == 0.4 and f["p_auroc"] == 0.75
    # meta: positives 0.8, 0.4 (mean 0.6); negatives 0.6, 0.2 (mean 0.4); 3 of 4 (pos, neg) comparisons right
    assert (f["meta_positive"], f["meta_negative"], f["meta_auroc"]) == pytest.approx((0.6, 0.4, 0.75))
    assert f["rsum"] == 123.4 and "set_aside" not in f
    f = epoch_figures(_Stub(purifies=True), 1)
    # set aside: pairs 0 (noisy) and 1 (clean); kept: 2 (noisy) and 3 (clean)
    assert (f["set_aside"], f["set_aside_noisy_share"], f["kept_noisy_share"]) == (2, 0.5, 0.5)
