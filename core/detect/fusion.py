"""The fused score: a small calibrated classifier over every per-pair signal, fitted on labelled pairs.

Pure functions: a signal matrix and labels in, a `FusedModel` out; the model turns any signal matrix into a
clean probability. It is a standardised L2-regularised logistic regression (scikit-learn), whose output is a
calibrated probability on the pairs it was fitted on, whose coefficients say which signals carry it, and which
refits in milliseconds on a few thousand labelled pairs. Missing signals (NaN: an image with one caption has no
siblings) are filled with the labelled pairs' median, so they pull neither way. With column *groups* (the signals
of each embedding space) one regression is fitted per group and their logits are averaged, which is again one
linear model over the standardised signals: the labelled pairs then weigh signals within a group, never one
group against another. Given the *scored* pairs' signals (unlabelled), the groups' standardised logits are weighted
instead by how well each splits those pairs into two modes (`group_weights`), the premise of NCR's loss split: no
label is used for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from core.mixtures import ashman_d, fit_gmm

CV_FOLDS = 5
MIXTURE_ROWS = 5_000
"""At most this many scored pairs' logits fit each group's mixture (`group_weights`): a tenth of a second."""


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
    group_weights: tuple[float, ...] | None = None   # each column group's weight (`group_weights`; None: no groups)

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


def group_weights(logits: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each group's weight from its logit over the scored pairs ((g, n), unlabelled): its Ashman's D (a
    two-component mixture fitted to the standardised logit: how far apart the matched and the mismatched mode
    are), normalised to sum to 1; equal weights where no group splits the pairs."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[1] > MIXTURE_ROWS:           # evenly spaced rows: the same subset on every refit
        logits = logits[:, np.linspace(0, logits.shape[1] - 1, MIXTURE_ROWS).astype(np.int64)]
    d = np.array([ashman_d(fit_gmm(row / _spread(row), max_iter=100, seed=seed)) for row in logits])
    return d / d.sum() if d.sum() > 0 else np.full(len(logits), 1.0 / len(logits))


def group_multipliers(weights: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """What each group's raw logit ((g, n) over the scored pairs) is scaled by in the fused logit: weight × s̄ /
    spread (s̄ the weighted mean spread), so the fused logit ranks pairs by Σ weight·logit/spread at about the
    groups' own scale."""
    spread = np.array([_spread(row) for row in np.asarray(logits, np.float64)])
    return np.asarray(weights) * float(np.asarray(weights) @ spread) / spread


def _spread(row: np.ndarray) -> float:
    s = float(row.std())
    return s if s > 0 else 1.0


def cross_validated_auroc(x: np.ndarray, y: np.ndarray, c: float = 0.1, seed: int = 0,
                          folds: int = CV_FOLDS, groups: Sequence[Sequence[int]] | None = None,
                          scored: np.ndarray | None = None, weights: np.ndarray | None = None) -> float | None:
    """AUROC (positive class: mismatched) of out-of-fold predictions; None with fewer than `folds` of a class."""
    y = np.asarray(y, np.int64)
    if min(int(y.sum()), int((1 - y).sum())) < folds:
        return None
    out = np.empty(len(y))
    for fit_on, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = fit_fused(x[fit_on], y[fit_on], names=None, c=c, seed=seed, cv=False, groups=groups, scored=scored,
                          weights=weights)
        out[held] = model.clean_prob(x[held])
    return float(roc_auc_score(1 - y, -out))


def fit_fused(x: np.ndarray, y: np.ndarray, names: tuple[str, ...] | list[str] | None, c: float = 0.1,
              seed: int = 0, cv: bool = True, groups: Sequence[Sequence[int]] | None = None,
              scored: np.ndarray | None = None, weights: np.ndarray | None = None) -> FusedModel:
    """Fit the fused classifier.

    Args:
        x: (n, s) signals of the labelled pairs (NaN where a signal is missing).
        y: (n,) 1 matched, 0 mismatched; both classes must be present.
        names: the signals' names (columns of `x`).
        c: inverse L2 regularisation strength (scikit-learn's C); small keeps the weights even.
        seed: of the solver and of the cross-validation folds.
        cv: also measure the cross-validated AUROC (`FusedModel.cv_auroc`).
        groups: column indices of groups fitted apart, their logits averaged (a column may be in several; one
            not in any gets no weight); None: one regression over every column.
        scored: (m, s) signals of the pairs to be scored (unlabelled, NaN where missing): with `groups`, the
            groups' logits are weighted by `group_weights` over them; None: averaged.
        weights: the groups' weights, fixed (the cross-validation's folds take the whole fit's); None: from
            `scored`.
    Classes are weighted to balance, so the posterior does not lean to the larger class of labels.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"{len(y)} labels for signals of shape {x.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("the fused classifier needs matched and mismatched labelled pairs")
    filled, fill, mean, scale = _prepare(x)
    z = (filled - mean) / scale
    column_groups = [np.arange(x.shape[1])] if groups is None else [np.asarray(g, np.int64) for g in groups]
    coefs = np.zeros((len(column_groups), x.shape[1]))
    intercepts = np.zeros(len(column_groups))
    for i, cols in enumerate(column_groups):
        model = _logistic(c, seed).fit(z[:, cols], y)
        coefs[i, cols], intercepts[i] = model.coef_.ravel(), float(model.intercept_[0])
    equal = np.full(len(column_groups), 1.0 / len(column_groups))
    multipliers = equal
    if groups is not None and scored is not None and len(scored):
        z_scored = (np.where(np.isnan(scored), fill, scored) - mean) / scale
        logits = (z_scored @ coefs.T + intercepts).T
        weights = group_weights(logits, seed) if weights is None else np.asarray(weights, np.float64)
        multipliers = group_multipliers(weights, logits)
    elif groups is not None:
        weights = equal
    names = tuple(names) if names is not None else tuple(f"s{i}" for i in range(x.shape[1]))
    return FusedModel(names, fill, mean, scale, multipliers @ coefs, float(multipliers @ intercepts),
                      cross_validated_auroc(x, y, c, seed, groups=groups, scored=scored, weights=weights) if cv
                      else None, None if groups is None else tuple(float(w) for w in weights))
