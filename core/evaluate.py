"""Evaluation (methods.md §5): detection of noisy pairs and cross-modal retrieval.

The metric functions are pure (arrays in, numbers out). `evaluate_run` and `decision_agreement` read a run's
scores and ground truth from the store: injected noise when the dataset has it, else the person's decisions
(keep → clean; reject or fix → noisy; skip left out). Detection is measured on training-split pairs that are
not meta-data pairs; noisy is the positive class, scored by `1 − clean_prob`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.thresholds import detection_at_threshold

RECALL_KS = (1, 5, 10)


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order of `score` ascending, start and end of each run of equal scores in that order)."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    return order, starts, np.r_[starts[1:], len(s)]


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` for the positives of `truth` (both classes present): the chance a
    positive outscores a negative, ties counting half (the Mann-Whitney U with average ranks; the same
    number as scikit-learn's `roc_auc_score`, without importing it)."""
    truth, score = np.asarray(truth, bool), np.asarray(score, np.float64)
    order, starts, ends = _tie_groups(score)
    ranks = np.empty(len(score))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)   # 1-based average rank
    pos = int(truth.sum())
    neg = len(truth) - pos
    return float((ranks[truth].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """Average precision of `score` for the positives of `truth`: Σ (recall_k − recall_k−1) · precision_k over
    the distinct scores, highest first (scikit-learn's `average_precision_score`, without importing it)."""
    truth, score = np.asarray(truth, bool), np.asarray(score, np.float64)
    order, starts, ends = _tie_groups(-score)
    tps = np.cumsum(truth[order])[ends - 1]
    precision = tps / ends
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def detection_metrics(is_noisy: np.ndarray, clean_prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """AUROC and AUPRC of `1 − clean_prob` for the noisy class, plus the thresholded figures. AUROC/AUPRC are
    None when the truth has a single class."""
    truth = np.asarray(is_noisy, bool)
    score = 1.0 - np.asarray(clean_prob, np.float64)
    both = 0 < truth.sum() < len(truth)
    out: dict[str, Any] = {
        "auroc": roc_auc(truth, score) if both else None,
        "auprc": average_precision(truth, score) if both else None,
        "n": int(len(truth)), "noisy": int(truth.sum()),
    }
    return out | detection_at_threshold(truth, clean_prob, threshold)


def recall_at_k(sim: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Image→text and text→image R@K (in %) and rSum.

    Args:
        sim: (I, C) similarity of every image to every caption of the evaluation split.
        caption_image: (C,) the row in `sim` of each caption's own image.
    Image→text ranks an image's captions and takes its best true caption's rank; text→image ranks the images
    for a caption. A rank counts the candidates scoring strictly higher (ties resolve in the query's favour).
    """
    sim = np.asarray(sim, np.float64)
    cap_img = np.asarray(caption_image, np.int64)
    n_img, n_cap = sim.shape
    true_mask = np.zeros((n_img, n_cap), bool)
    true_mask[cap_img, np.arange(n_cap)] = True
    best_true = np.where(true_mask, sim, -np.inf).max(axis=1)                      # (I,)
    i2t_rank = (sim > best_true[:, None]).sum(axis=1)
    has_caption = np.isfinite(best_true)
    own = sim[cap_img, np.arange(n_cap)]                                            # (C,)
    t2i_rank = (sim > own[None, :]).sum(axis=0)
    out: dict[str, float] = {}
    for k in ks:
        out[f"r{k}_i2t"] = float(100.0 * np.mean(i2t_rank[has_caption] < k))
    for k in ks:
        out[f"r{k}_t2i"] = float(100.0 * np.mean(t2i_rank < k))
    out["rsum"] = float(sum(out.values()))
    return out


def detection_truth(frame) -> tuple[np.ndarray, str] | None:
    """Which rows of `frame` have a truth, and its source: injected noise when known, else decisions.

    Returns (mask of rows with a truth value, "injected" or "decisions"), or None when there is none."""
    if frame["is_noisy"].notna().any():
        known = frame["is_noisy"].notna().to_numpy()
        return known, "injected"
    decided = frame["decision"].isin(["keep", "reject", "fix"]).to_numpy()
    if decided.any():
        return decided, "decisions"
    return None


def _truth_values(frame, source: str) -> np.ndarray:
    if source == "injected":
        return frame["is_noisy"].astype(bool).to_numpy()
    return frame["decision"].isin(["reject", "fix"]).to_numpy()


def measured_pairs(store, dataset_id: int, run_id: int | None = None) -> pd.DataFrame:
    """The pairs detection is measured on: the training split's, less the meta-data pairs (the methods learn
    from those), with run `run_id`'s scores when given."""
    frame = store.pairs_frame(dataset_id, run_id, split="train")
    meta_pairs = set(store.meta_frame(dataset_id)["pair_id"].dropna().astype(int))
    return frame[~frame["pair_id"].isin(meta_pairs)]


def evaluate_run(store, run_id: int) -> dict[str, Any]:
    """A run's detection figures (now, under its current threshold and the current decisions) and the retrieval
    figures it recorded at the end of training. Keys always present, None where not computable."""
    run = store.run(run_id)
    frame = measured_pairs(store, run.dataset_id, run_id)
    frame = frame[frame["clean_prob"].notna()]
    out: dict[str, Any] = {"run_id": run.id, "method": run.method, "state": run.state, "threshold": run.threshold,
                           "truth": None, "auroc": None, "auprc": None, "weight_auroc": None, "precision": None,
                           "recall": None, "f1": None, "flagged": int((frame["clean_prob"] < run.threshold).sum())}
    found = detection_truth(frame)
    if found is not None:
        known, source = found
        sub = frame[known]
        out |= detection_metrics(_truth_values(sub, source), sub["clean_prob"].to_numpy(), run.threshold)
        out["truth"] = source
        if sub["weight"].notna().all():     # how well the method's confidence weight alone separates the pairs
            out["weight_auroc"] = detection_metrics(_truth_values(sub, source), sub["weight"].to_numpy())["auroc"]
        out["flagged"] = int((frame["clean_prob"] < run.threshold).sum())
    retrieval = run.metrics.get("retrieval") or {}
    for k in RECALL_KS:
        for d in ("i2t", "t2i"):
            out[f"r{k}_{d}"] = retrieval.get(f"r{k}_{d}")
    out["rsum"] = retrieval.get("rsum")
    out["seconds_per_epoch"] = run.metrics.get("seconds_per_epoch")
    return out


def decision_agreement(store, run_id: int) -> dict[str, Any]:
    """How many of the person's decisions the run agrees with: keep ↔ not flagged, reject/fix ↔ flagged."""
    run = store.run(run_id)
    frame = store.pairs_frame(run.dataset_id, run_id)
    frame = frame[frame["decision"].isin(["keep", "reject", "fix"]) & frame["clean_prob"].notna()]
    if frame.empty:
        return {"agree": 0, "total": 0, "rate": None}
    expected_noisy = frame["decision"].isin(["reject", "fix"]).to_numpy()
    agree = int(np.sum(expected_noisy == frame["flagged"].astype(bool).to_numpy()))
    return {"agree": agree, "total": int(len(frame)), "rate": agree / len(frame)}
