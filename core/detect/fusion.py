"""The fused score: a small calibrated classifier over every per-pair signal, fitted on labelled pairs.

Pure functions: a signal matrix and labels in, a `FusedModel` out; the model turns any signal matrix into a
clean probability. It is a standardised L2-regularised logistic regression (scikit-learn), whose output is a
calibrated probability on the pairs it was fitted on, whose coefficients say which signals carry it, and which
refits in milliseconds on a few thousand labelled pairs. Missing signals (NaN: an image with one caption has no
siblings) are filled with the labelled pairs' median, so they pull neither way; a signal that does not vary over
the *scored* pairs (missing for every one of them: the sibling terms where each image has one caption, which a
constructed mismatch still has) is left out of the fit, since it cannot rank them. With column *groups* (the signals
of each embedding space) one regression is fitted per group and their logits are averaged, which is again one
linear model over the standardised signals: the labelled pairs then weigh signals within a group, never one
group against another. Given the *scored* pairs' signals (unlabelled), the groups' standardised logits are weighted
instead by how well each splits those pairs into two modes (`group_weights`), the premise of NCR's loss split: no
label is used for it. With `nonnegative`, a second fit keeps every coefficient ≥ 0 (every signal is higher when a
pair looks matched), and the two fused logits are weighed against each other the same way, the unconstrained one
also by how closely it ranks the scored pairs like the constrained one (`fit_weights`): where the labelled pairs
teach signs the scored pairs do not follow, the constrained fit splits those pairs better and counts more.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from core.mixtures import ashman_d, fit_gmm

CV_FOLDS = 5
_T = TypeVar("_T")
MIXTURE_ROWS = 5_000
"""At most this many scored pairs (evenly spaced rows: the same ones on every refit) weigh the groups and the fits:
their mixtures and spreads take a tenth of a second."""


@dataclass(frozen=True)
class Weighing:
    """How a fused logit weighs what it combines, from the scored pairs (`group_weights`): each fit's column
    groups, then the fits (the unconstrained one and, with `nonnegative`, the one whose coefficients are ≥ 0)."""

    groups: np.ndarray   # (fits, groups), each row summing to 1
    fits: np.ndarray     # (fits,), summing to 1


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
    group_weights: tuple[float, ...] | None = None   # each column group's weight, summed over the fits by theirs
                                                     # (None: no groups)
    fit_weights: tuple[float, float] | None = None   # the unconstrained and the non-negative fit's (None: one fit)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        x = np.where(np.isnan(x), self.fill, x)
        return (x - self.mean) / self.scale

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.standardise(x) @ self.coef + self.intercept

    def clean_prob(self, x: np.ndarray) -> np.ndarray:
        """Probability that each row's pair is matched."""
        return expit(self.logit(x))

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


def nonnegative_logistic(z: np.ndarray, y: np.ndarray, c: float, start: tuple[np.ndarray, float] | None = None
                         ) -> tuple[np.ndarray, float]:
    """(coefficients, intercept) of scikit-learn's class-balanced L2 logistic regression (½‖β‖² + C·Σ
    wᵢ·log(1 + e^(−mᵢ)), balanced wᵢ) with every coefficient bounded at 0 from below (L-BFGS-B): the same fit
    as `LogisticRegression(C=c, class_weight="balanced")` wherever that one's coefficients are all positive.
    `start`: where the solver starts (e.g. the unconstrained fit; negative coefficients are raised to 0). Where the
    solver stops short of its tolerances (iterations, line search) its last point is returned: the lowest objective
    it reached."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.int64)
    w = np.where(y == 1, len(y) / (2.0 * y.sum()), len(y) / (2.0 * (len(y) - y.sum())))
    sign = 2.0 * y - 1.0

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        beta, b = p[:-1], p[-1]
        margin = sign * (z @ beta + b)
        g = -c * w * sign * expit(-margin)
        return 0.5 * beta @ beta + c * float(w @ np.logaddexp(0.0, -margin)), np.r_[beta + z.T @ g, g.sum()]

    p0 = np.zeros(z.shape[1] + 1) if start is None else np.r_[np.maximum(start[0], 0.0), start[1]]
    fit = minimize(objective, p0, jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * z.shape[1] + [(None, None)],
                   options={"maxiter": 2000, "ftol": 1e-10, "gtol": 1e-6})
    return fit.x[:-1], float(fit.x[-1])


CONSTANT_BELOW = 1e-6
"""A signal whose spread over the labelled pairs is below this is constant there (float noise): it is not scaled
up, or the pairs where it does vary would get logits of millions."""


def _prepare(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fill = np.nanmedian(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0) if len(x) else np.zeros(x.shape[1])
    fill = np.where(np.isnan(fill), 0.0, fill)
    filled = np.where(np.isnan(x), fill, x)
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > CONSTANT_BELOW, scale, 1.0)
    return filled, fill, mean, scale


def _absent(scored: np.ndarray) -> np.ndarray:
    """The columns that do not vary over the scored pairs (filled; missing for all of them, e.g. the sibling terms
    where every image has one caption): they cannot rank those pairs, so the labelled pairs' values there (a
    constructed mismatch does have a sibling: the positive's caption it was made from) must not take weight."""
    return np.ptp(scored, axis=0) < CONSTANT_BELOW


def group_weights(logits: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each group's weight from its logit over the scored pairs ((g, n), unlabelled): its Ashman's D (a
    two-component mixture fitted to the standardised logit: how far apart the matched and the mismatched mode
    are), normalised to sum to 1; equal weights where no group splits the pairs; 1 for a single group."""
    logits = np.asarray(logits, np.float64)
    if len(logits) == 1:
        return np.ones(1)
    return _normalised(np.array([ashman_d(fit_gmm(row / _spread(row), max_iter=100, seed=seed)) for row in logits]))


def fit_weights(logits: np.ndarray, seed: int = 0) -> np.ndarray:
    """The unconstrained and the non-negative fused logit's weights from their logits over the scored pairs ((2, n),
    unlabelled): each one's Ashman's D (`group_weights`), the unconstrained one's times its correlation with the
    non-negative one (clipped at 0). The unconstrained fit refines the constrained one where it ranks the pairs
    like it (correlation 0.95–0.997 on 35 of 37 benchmark cells, where the weights barely move); where the signs
    the labelled pairs taught reorder the scored pairs (fashion-mnist at 85 % random swaps: 0.65, 0.09), it counts
    for less. One logit: 1."""
    logits = np.asarray(logits, np.float64)
    weights = group_weights(logits, seed)
    if len(logits) == 1:
        return weights
    agreement = float(np.corrcoef(logits)[0, 1]) if (logits.std(axis=1) > 0).all() else 0.0
    return _normalised(weights * [max(agreement, 0.0), 1.0])


def _normalised(d: np.ndarray) -> np.ndarray:
    return d / d.sum() if d.sum() > 0 else np.full(len(d), 1.0 / len(d))


def group_multipliers(weights: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """What each group's raw logit ((g, n) over the scored pairs) is scaled by in the fused logit: weight × s̄ /
    spread (s̄ the weighted mean spread), so the fused logit ranks pairs by Σ weight·logit/spread at about the
    groups' own scale."""
    spread = np.array([_spread(row) for row in np.asarray(logits, np.float64)])
    return np.asarray(weights) * float(np.asarray(weights) @ spread) / spread


def _spread(row: np.ndarray) -> float:
    s = float(row.std())
    return s if s > 0 else 1.0


def _combine(coefs: np.ndarray, intercepts: np.ndarray, z_scored: np.ndarray, weights: np.ndarray | None,
             seed: int, weigh: Callable[[np.ndarray, int], np.ndarray] = group_weights
             ) -> tuple[np.ndarray, float, np.ndarray]:
    """One linear model (coef, intercept, weights) from several (rows of `coefs`, `intercepts`): their logits over
    the standardised scored pairs weighed by `weights` (None: by `weigh`), times `group_multipliers`."""
    logits = (z_scored @ coefs.T + intercepts).T
    weights = weigh(logits, seed) if weights is None else np.asarray(weights, np.float64)
    multipliers = group_multipliers(weights, logits)
    return multipliers @ coefs, float(multipliers @ intercepts), weights


def _fit_groups(z: np.ndarray, y: np.ndarray, groups: list[np.ndarray], c: float, seed: int,
                nonnegative_from: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One regression per column group: (groups × columns) coefficients, 0 outside the group, and intercepts.
    `nonnegative_from`: the unconstrained fit's; fit the non-negative one instead (`nonnegative_logistic`),
    started there."""
    coefs = np.zeros((len(groups), z.shape[1]))
    intercepts = np.zeros(len(groups))
    for i, cols in enumerate(groups):
        if nonnegative_from is not None:
            start = (nonnegative_from[0][i, cols], nonnegative_from[1][i])
            coefs[i, cols], intercepts[i] = nonnegative_logistic(z[:, cols], y, c, start)
        else:
            model = _logistic(c, seed).fit(z[:, cols], y)
            coefs[i, cols], intercepts[i] = model.coef_.ravel(), float(model.intercept_[0])
    return coefs, intercepts


def cross_validated_auroc(x: np.ndarray, y: np.ndarray, c: float = 0.1, seed: int = 0,
                          folds: int = CV_FOLDS, groups: Sequence[Sequence[int]] | None = None,
                          scored: np.ndarray | None = None, weigh_groups: bool = True, nonnegative: bool = True,
                          weighing: Weighing | None = None) -> float | None:
    """AUROC (positive class: mismatched) of out-of-fold predictions (`fit_fused`'s arguments); None with fewer
    than `folds` of a class."""
    y = np.asarray(y, np.int64)
    if min(int(y.sum()), int((1 - y).sum())) < folds:
        return None
    out = np.empty(len(y))
    for fit_on, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = fit_fused(x[fit_on], y[fit_on], names=None, c=c, seed=seed, cv=False, groups=groups, scored=scored,
                          weigh_groups=weigh_groups, nonnegative=nonnegative, weighing=weighing)
        out[held] = model.clean_prob(x[held])
    return float(roc_auc_score(1 - y, -out))


def _one_blas_thread(fn: Callable[..., _T]) -> Callable[..., _T]:
    """`fn` with numpy's and scipy's BLAS on one thread (threadpoolctl; torch's own threads are not touched): the
    fit's (n, ≤ 30) products and L-BFGS-B's small vector steps ran two to six times slower on two threads (the
    more beside torch's busy threads). OpenBLAS's pool is process-wide and threadpoolctl lets one thread at a time
    limit it (the others' limits are skipped while it holds them), so fits take turns under a re-entrant lock (the
    cross-validation's folds nest) and each restores the thread count it found. A limit that other code holds in
    another thread meanwhile leaves the fit on the threads it found: slower, the same result."""
    lock = threading.RLock()

    @functools.wraps(fn)
    def limited(*args, **kwargs) -> _T:
        with lock, threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return limited


@_one_blas_thread
def fit_fused(x: np.ndarray, y: np.ndarray, names: tuple[str, ...] | list[str] | None, c: float = 0.1,
              seed: int = 0, cv: bool = True, groups: Sequence[Sequence[int]] | None = None,
              scored: np.ndarray | None = None, weigh_groups: bool = True, nonnegative: bool = True,
              weighing: Weighing | None = None) -> FusedModel:
    """Fit the fused classifier.

    Args:
        x: (n, s) signals of the labelled pairs (NaN where a signal is missing).
        y: (n,) 1 matched, 0 mismatched; both classes must be present.
        names: the signals' names (columns of `x`).
        c: inverse L2 regularisation strength (scikit-learn's C); small keeps the weights even.
        seed: of the solver and of the cross-validation folds.
        cv: also measure the cross-validated AUROC (`FusedModel.cv_auroc`).
        groups: column indices of groups fitted apart, their logits combined (a column may be in several; one
            not in any gets no weight); None: one regression over every column.
        scored: (m, s) signals of the pairs to be scored (unlabelled, NaN where missing; at most `MIXTURE_ROWS`
            evenly spaced rows are used): what the groups and the fits are weighed on; a signal that does not vary
            over them gets no weight (`_absent`). None: the groups' logits averaged, one fit, every signal.
        weigh_groups: with `scored`, weigh the groups by `group_weights`; False: average them.
        nonnegative: with `scored`, also fit with every coefficient ≥ 0 (`nonnegative_logistic`) and weigh the
            unconstrained and the non-negative fused logit by `fit_weights`.
        weighing: the weights, fixed (the cross-validation's folds take the whole fit's: weighing uses no label,
            but the whole fit's classifiers saw the held-out fold's, so the CV AUROC may lean a little high);
            None: from `scored`.
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
    if scored is not None:
        scored = np.asarray(scored, np.float64)
        if len(scored) > MIXTURE_ROWS:                  # the rows the cross-validation's folds get too
            scored = scored[np.linspace(0, len(scored) - 1, MIXTURE_ROWS).astype(np.int64)]
        scored_filled = np.where(np.isnan(scored), fill, scored)   # the folds fill `scored` with their own
        if len(scored) > 1:                             # one pair varies in nothing: no signal to tell absent
            z[:, _absent(scored_filled)] = 0.0
    column_groups = [np.arange(x.shape[1])] if groups is None else [np.asarray(g, np.int64) for g in groups]
    equal = np.full(len(column_groups), 1.0 / len(column_groups))
    weigh = scored is not None and len(scored) > 0
    fits = [_fit_groups(z, y, column_groups, c, seed)]
    if weigh and nonnegative:
        fits.append(_fit_groups(z, y, column_groups, c, seed, nonnegative_from=fits[0]))
    if not weigh:
        coef, intercept, weighing = equal @ fits[0][0], float(equal @ fits[0][1]), None
    else:
        z_scored = (scored_filled - mean) / scale
        per_fit = [_combine(coefs, intercepts, z_scored, None if weighing is None else weighing.groups[k], seed)
                   if weigh_groups else (equal @ coefs, float(equal @ intercepts), equal)
                   for k, (coefs, intercepts) in enumerate(fits)]
        coef, intercept, fit_w = _combine(np.array([p[0] for p in per_fit]), np.array([p[1] for p in per_fit]),
                                          z_scored, None if weighing is None else weighing.fits, seed, fit_weights)
        weighing = Weighing(np.array([p[2] for p in per_fit]), fit_w)
    names = tuple(names) if names is not None else tuple(f"s{i}" for i in range(x.shape[1]))
    cv_auroc = (cross_validated_auroc(x, y, c, seed, groups=groups, scored=scored, weigh_groups=weigh_groups,
                                      nonnegative=nonnegative, weighing=weighing) if cv else None)
    shown = equal if weighing is None else weighing.fits @ weighing.groups
    return FusedModel(names, fill, mean, scale, coef, intercept, cv_auroc,
                      None if groups is None else tuple(float(w) for w in shown),
                      None if weighing is None or len(weighing.fits) < 2 else tuple(float(w) for w in weighing.fits))
