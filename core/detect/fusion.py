"""The fused score: a small calibrated classifier over every per-pair signal, fitted on labelled pairs.

Pure functions: a signal matrix and labels in, a `FusedModel` out; the model turns any signal matrix into a
clean probability. It is a standardised L2-regularised logistic regression (scikit-learn), whose output is a
calibrated probability on the pairs it was fitted on, whose coefficients say which signals carry it, and which
refits in milliseconds on a few thousand labelled pairs. Missing signals (NaN: an image with one caption has no
siblings) are filled with the labelled pairs' median, so they pull neither way.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

CV_FOLDS = 5
RATIO_SAMPLE = 20_000
"""Target rows a reliability ratio is measured on at most (a seeded sample): Spearman's correlation settles long before."""


@dataclass(frozen=True)
class FusedModel:
    """A fitted fused classifier: per-signal fill value, standardisation, coefficients (1 = matched)."""

    names: tuple[str, ...]
    fill: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    cv_auroc: float | None      # cross-validated AUROC on the labelled pairs (None: too few of a class)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        x = np.where(np.isnan(x), self.fill, x)
        return (x - self.mean) / self.scale

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.standardise(x) @ self.coef + self.intercept

    def clean_prob(self, x: np.ndarray) -> np.ndarray:
        """Probability that each row's pair is matched."""
        return 1.0 / (1.0 + np.exp(-self.logit(x)))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each signal's share of each row's logit (coef × standardised value): negative pushes towards
        mismatched."""
        return self.standardise(x) * self.coef

    def weights(self) -> list[dict[str, float]]:
        """The signals by the size of their (standardised) coefficient: what carries the score."""
        order = np.argsort(-np.abs(self.coef), kind="stable")
        return [{"signal": self.names[i], "coef": float(self.coef[i])} for i in order]


def _logistic(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)


def _prepare(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fill = np.nanmedian(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0) if len(x) else np.zeros(x.shape[1])
    fill = np.where(np.isnan(fill), 0.0, fill)
    filled = np.where(np.isnan(x), fill, x)
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return filled, fill, mean, scale


def cross_validated_auroc(x: np.ndarray, y: np.ndarray, c: float = 0.1, seed: int = 0,
                          folds: int = CV_FOLDS) -> float | None:
    """AUROC (positive class: mismatched) of out-of-fold predictions; None with fewer than `folds` of a class."""
    y = np.asarray(y, np.int64)
    if min(int(y.sum()), int((1 - y).sum())) < folds:
        return None
    out = np.empty(len(y))
    for fit_on, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        out[held] = fit_fused(x[fit_on], y[fit_on], names=None, c=c, seed=seed, cv=False).clean_prob(x[held])
    return float(roc_auc_score(1 - y, -out))


def fit_fused(x: np.ndarray, y: np.ndarray, names: tuple[str, ...] | list[str] | None, c: float = 0.1,
              seed: int = 0, cv: bool = True) -> FusedModel:
    """Fit the fused classifier.

    Args:
        x: (n, s) signals of the labelled pairs (NaN where a signal is missing).
        y: (n,) 1 matched, 0 mismatched; both classes must be present.
        names: the signals' names (columns of `x`).
        c: inverse L2 regularisation strength (scikit-learn's C); small keeps the weights even.
        seed: of the solver and of the cross-validation folds.
        cv: also measure the cross-validated AUROC (`FusedModel.cv_auroc`).
    Classes are weighted to balance, so the posterior does not lean to the larger class of labels.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"{len(y)} labels for signals of shape {x.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("the fused classifier needs matched and mismatched labelled pairs")
    filled, fill, mean, scale = _prepare(x)
    model = _logistic(c, seed).fit((filled - mean) / scale, y)
    names = tuple(names) if names is not None else tuple(f"s{i}" for i in range(x.shape[1]))
    return FusedModel(names, fill, mean, scale, model.coef_.ravel().astype(np.float64), float(model.intercept_[0]),
                      cross_validated_auroc(x, y, c, seed) if cv else None)


def reliability_ratios(x_target: np.ndarray, x_labelled: np.ndarray, base_target: np.ndarray,
                       base_labelled: np.ndarray, seed: int = 0) -> np.ndarray:
    """How much of its agreement with a score it is not part of each column keeps on the target pairs.

    Per column: Spearman's correlation with `base_*` (a classifier's logit over the other columns) on the target
    rows, divided by the same on the labelled rows, clipped to [0, 1]; 1 where either is undefined or the labelled
    one is not positive (no evidence of a change). Rows where the column is NaN are left out; at most
    `RATIO_SAMPLE` target rows are used. Arrays in: (n_t, s), (n_l, s), (n_t,), (n_l,); (s,) out.
    """
    x_target, x_labelled = np.asarray(x_target, np.float64), np.asarray(x_labelled, np.float64)
    base_target, base_labelled = np.asarray(base_target, np.float64), np.asarray(base_labelled, np.float64)
    if len(x_target) > RATIO_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(len(x_target), RATIO_SAMPLE, replace=False))
        x_target, base_target = x_target[rows], base_target[rows]

    def corr(values: np.ndarray, base: np.ndarray) -> float:
        ok = np.isfinite(values)
        if ok.sum() < 3 or np.ptp(values[ok]) == 0 or np.ptp(base[ok]) == 0:
            return float("nan")
        return float(spearmanr(values[ok], base[ok]).statistic)

    out = np.ones(x_target.shape[1])
    for j in range(x_target.shape[1]):
        on_target, on_labelled = corr(x_target[:, j], base_target), corr(x_labelled[:, j], base_labelled)
        if np.isfinite(on_target) and np.isfinite(on_labelled) and on_labelled > 0:
            out[j] = min(max(on_target / on_labelled, 0.0), 1.0)
    return out


def fit_fused_shifted(x: np.ndarray, y: np.ndarray, x_target: np.ndarray, shifted: np.ndarray,
                      names: tuple[str, ...] | list[str] | None, c: float = 0.1, seed: int = 0) -> FusedModel:
    """`fit_fused` on the labelled pairs, then each `shifted` column's coefficient scaled by its
    `reliability_ratios` on the target pairs `x_target` (the pairs the score is for), against a classifier fitted
    on the other columns alone.

    For signals whose meaning differs between the labelled and the target pairs: the sibling terms of a clean
    (trusted) split compare a caption with clean siblings, those of the noisy training split with mostly wrong ones
    at high noise, so the weight learnt on the first over-trusts them on the second. Their rank correlation with
    the other signals' score falls with that change and needs no ground truth. `shifted`: (s,) bool.
    """
    model = fit_fused(x, y, names, c, seed)
    shifted = np.asarray(shifted, bool)
    if not shifted.any() or shifted.all():
        return model
    x = np.asarray(x, np.float64)
    x_target = np.asarray(x_target, np.float64)
    base = fit_fused(x[:, ~shifted], y, None, c, seed, cv=False)
    ratios = reliability_ratios(x_target[:, shifted], x[:, shifted], base.logit(x_target[:, ~shifted]),
                                base.logit(x[:, ~shifted]), seed)
    coef = model.coef.copy()
    coef[shifted] *= ratios
    return replace(model, coef=coef)
