"""What a clean-probability threshold does: which pairs it flags and, against ground truth, how well.

A pair is flagged when its `clean_prob` is below the threshold (the same rule the store applies with a
run's saved threshold). Pure functions over arrays, shared by the Explore page and evaluation.
"""
from __future__ import annotations

import numpy as np


def flagged_mask(clean_prob: np.ndarray, threshold: float) -> np.ndarray:
    """True where a pair is flagged (`clean_prob < threshold`); a missing score (NaN) is never flagged."""
    return np.asarray(clean_prob, dtype=np.float64) < float(threshold)


def detection_at_threshold(is_noisy: np.ndarray, clean_prob: np.ndarray, threshold: float) -> dict:
    """Detection of the noisy pairs by flagging at `threshold`.

    Returns `flagged` (count), `precision` (noisy among flagged), `recall` (flagged among noisy) and
    `f1`; a ratio whose denominator is zero is None.
    """
    noisy = np.asarray(is_noisy, dtype=bool)
    flagged = flagged_mask(clean_prob, threshold)
    if noisy.shape != flagged.shape:
        raise ValueError(f"is_noisy has {noisy.shape[0]} values but clean_prob {flagged.shape[0]}")
    hits = int((noisy & flagged).sum())
    n_flagged, n_noisy = int(flagged.sum()), int(noisy.sum())
    precision = hits / n_flagged if n_flagged else None
    recall = hits / n_noisy if n_noisy else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"flagged": n_flagged, "precision": precision, "recall": recall, "f1": f1}
