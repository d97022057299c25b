"""The rank metrics of `core.evaluate` (numpy, so `evaluate` needs no scikit-learn): hand-computed cases and
agreement with scikit-learn's definitions, ties included."""
from __future__ import annotations

import numpy as np
import pytest

from core.evaluate import average_precision, roc_auc


def test_hand_computed_with_a_tie() -> None:
    truth = np.array([1, 0, 1, 0], bool)
    score = np.array([0.9, 0.5, 0.5, 0.1])
    # positive pairs (pos, neg): (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) ½, (0.5, 0.1) 1 -> 3.5 / 4
    assert roc_auc(truth, score) == 0.875
    # thresholds 0.9: tp 1 of 1 kept (P 1, R ½); 0.5: tp 2 of 3 kept (P ⅔, R 1) -> ½·1 + ½·⅔
    assert average_precision(truth, score) == pytest.approx(0.5 + 1 / 3, abs=1e-15)


def test_same_numbers_as_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score
    rng = np.random.default_rng(3)
    for n in (7, 100, 5000):
        truth = rng.random(n) < 0.3
        truth[:2] = [True, False]
        score = np.round(rng.random(n), 2)   # many ties
        assert roc_auc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
        assert average_precision(truth, score) == pytest.approx(average_precision_score(truth, score), abs=1e-12)
