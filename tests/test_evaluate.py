"""Evaluation math on hand-computed cases (methods.md §5)."""
from __future__ import annotations

import numpy as np
import pytest

from core.evaluate import detection_at_threshold, detection_metrics, recall_at_k


def test_recall_at_k_3x3() -> None:
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.3, 0.2, 0.8],
                    [0.1, 0.5, 0.4]])
    r = recall_at_k(sim, np.array([0, 1, 2]))
    # i2t ranks: image0 → 0, image1 → 2 (0.3, 0.8 above 0.2), image2 → 1 (0.5 above 0.4)
    # t2i ranks: caption0 → 0, caption1 → 1 (0.5 above 0.2), caption2 → 1 (0.8 above 0.4)
    assert r["r1_i2t"] == pytest.approx(100 / 3) and r["r5_i2t"] == 100 and r["r10_i2t"] == 100
    assert r["r1_t2i"] == pytest.approx(100 / 3) and r["r5_t2i"] == 100 and r["r10_t2i"] == 100
    assert r["rsum"] == pytest.approx(400 + 200 / 3)


def test_recall_at_k_takes_the_best_of_an_images_captions() -> None:
    sim = np.array([[0.5, 0.9, 0.7, 0.1],
                    [0.6, 0.2, 0.3, 0.8]])
    r = recall_at_k(sim, np.array([0, 0, 1, 1]))
    # i2t: image0's best true caption (0.9) ranks first; image1's (0.8) too.
    # t2i: caption0 (0.5 < 0.6) and caption2 (0.3 < 0.7) rank second; captions 1 and 3 first.
    assert r["r1_i2t"] == 100 and r["r1_t2i"] == 50 and r["r5_t2i"] == 100
    assert r["rsum"] == pytest.approx(550)


def test_detection_counts_noisy_as_positive() -> None:
    noisy = np.array([1, 1, 0, 0, 0], bool)
    clean_prob = np.array([0.1, 0.6, 0.2, 0.8, 0.9])
    d = detection_at_threshold(noisy, clean_prob, 0.5)   # flagged: pairs 0 and 2
    assert d == {"flagged": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    m = detection_metrics(noisy, clean_prob)
    # noisy scores 0.9, 0.4 vs clean 0.8, 0.2, 0.1: 5 of 6 ordered pairs correct
    assert m["auroc"] == pytest.approx(5 / 6)
    assert detection_metrics(np.zeros(3, bool), np.array([0.1, 0.2, 0.3]))["auroc"] is None
    assert detection_at_threshold(noisy, np.ones(5), 0.5)["precision"] is None
