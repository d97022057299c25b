"""Two-component mixtures on 1-d scores: the clean/noisy split every method ends with.

Pure functions: scores in, parameters and posteriors out. The Gaussian mixture is NCR's loss split (and
B0's score split); the Beta mixture is MSCN's purification (methods.md §3.6), written here with numpy and
scipy instead of the unmaintained pomegranate fork, and guarded against degenerate input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.mixture import GaussianMixture

EPS = 1e-3


@dataclass(frozen=True)
class GMMFit:
    """A fitted 2-component 1-d Gaussian mixture, components sorted by mean (0 = low)."""

    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) posterior of each component for scores `x`."""
        x = np.asarray(x, np.float64)[:, None]
        sd = np.sqrt(self.variances)[None, :]
        log_p = np.log(self.weights)[None, :] + stats.norm.logpdf(x, self.means[None, :], sd)
        log_p -= log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p)
        return p / p.sum(axis=1, keepdims=True)


def fit_gmm(x: np.ndarray, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4,
            seed: int = 0) -> GMMFit:
    """Fit a 2-component Gaussian mixture to 1-d scores (sklearn; NCR's settings by default).

    Args:
        x: the scores (any real values; NCR min-max normalises per-sample losses first).
        max_iter, tol, reg_covar: passed to sklearn (methods.md §1: 10, 1e-2, 5e-4; NPC uses max_iter 100).
        seed: the random state of the initialisation.
    Returns the fit with components sorted by mean. All-equal scores give two equal components, so every
    posterior is 0.5 rather than an error.
    """
    x = np.asarray(x, np.float64).reshape(-1, 1)
    if len(x) < 2 or np.ptp(x) == 0:
        m = float(x.mean()) if len(x) else 0.0
        return GMMFit(np.array([m, m]), np.array([reg_covar, reg_covar]), np.array([0.5, 0.5]))
    gmm = GaussianMixture(2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    gmm.fit(x)
    order = np.argsort(gmm.means_.ravel())
    return GMMFit(gmm.means_.ravel()[order], gmm.covariances_.ravel()[order], gmm.weights_[order])


def ashman_d(fit: GMMFit) -> float:
    """Ashman's D of a fitted two-component mixture: the distance between its means in units of their pooled
    spread, |μ1 − μ0|·√2 / √(σ0² + σ1²); above 2 the two modes are clearly apart, 0 when they coincide."""
    return float(abs(fit.means[1] - fit.means[0]) * np.sqrt(2.0) / np.sqrt(fit.variances.sum()))


def minmax(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Scale `x` to [0, 1] by the min and max of `reference` (default `x`), clipped; all-equal → zeros."""
    x = np.asarray(x, np.float64)
    ref = x if reference is None else np.asarray(reference, np.float64)
    lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def loss_split_clean_prob(losses: np.ndarray, fit_on: np.ndarray | None = None, max_iter: int = 10,
                          seed: int = 0) -> np.ndarray:
    """NCR's split: min-max normalise per-sample losses, fit a GMM, return the low-mean component's posterior.

    `fit_on` is a boolean mask of the scores the mixture is fitted on (the training pairs); the posterior is
    returned for every score, normalised by the fitted scores' range.
    """
    losses = np.asarray(losses, np.float64)
    mask = np.ones(len(losses), bool) if fit_on is None else np.asarray(fit_on, bool)
    scaled = minmax(losses, losses[mask])
    fit = fit_gmm(scaled[mask], max_iter=max_iter, seed=seed)
    return fit.posterior(scaled)[:, 0]


@dataclass(frozen=True)
class BetaMixture:
    """A 2-component Beta mixture on (0, 1): component 0 = noisy (low scores), 1 = clean."""

    alphas: np.ndarray
    betas: np.ndarray
    weights: np.ndarray

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) log of weight × density per component."""
        x = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)[:, None]
        return np.log(self.weights)[None, :] + stats.beta.logpdf(x, self.alphas[None, :], self.betas[None, :])

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) responsibilities, finite for any input in [0, 1]."""
        ll = self.log_likelihoods(x)
        ll -= ll.max(axis=1, keepdims=True)
        p = np.exp(ll)
        return p / p.sum(axis=1, keepdims=True)

    @property
    def means(self) -> np.ndarray:
        return self.alphas / (self.alphas + self.betas)

    def clean_posterior(self, x: np.ndarray) -> np.ndarray:
        """Posterior of the component with the higher mean (the matched pairs), never falling as the score rises.

        The log density ratio of two Betas, `Δα log x + Δβ log(1 − x)`, has at most one turning point
        `x* = Δα / (Δα + Δβ)`. Past it on the wrong side (a wide matched component rising again in the low tail,
        or a wide mismatched one in the high tail) the raw posterior runs backwards, and the score is held at `x*`:
        otherwise scores below every mismatched pair's can be called clean. Seen on the demo once a reviewer's
        rejections (scored near 0) made the mismatched component narrow: 73 of 98 rejected pairs came out clean."""
        clean = int(np.argmax(self.means))
        d_alpha = self.alphas[clean] - self.alphas[1 - clean]
        d_beta = self.betas[clean] - self.betas[1 - clean]
        x = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
        if d_alpha * d_beta > 0:
            turn = d_alpha / (d_alpha + d_beta)
            x = np.maximum(x, turn) if d_alpha < 0 else np.minimum(x, turn)
        return self.posterior(x)[:, clean]

    def log_likelihood(self, x: np.ndarray) -> float:
        ll = self.log_likelihoods(x)
        m = ll.max(axis=1, keepdims=True)
        return float((m[:, 0] + np.log(np.exp(ll - m).sum(axis=1))).sum())


def beta_moments(x: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted method-of-moments Beta parameters (α, β) of samples in (0, 1).

    Degenerate input (no weight, or variance 0 or too large for a Beta) gets a concentrated but valid Beta
    around the weighted mean instead of NaN."""
    x = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
    w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return 1.0, 1.0
    mean = float((w * x).sum() / total)
    var = float((w * (x - mean) ** 2).sum() / total)
    max_var = mean * (1 - mean)
    if var <= 1e-8 or var >= max_var:
        var = min(max(var, 1e-4 * max_var), 0.99 * max_var)
    common = max_var / var - 1
    return max(mean * common, 1e-2), max((1 - mean) * common, 1e-2)


def fit_beta_mixture(x: np.ndarray, neg_init: np.ndarray, pos_init: np.ndarray, max_iter: int = 10,
                     tol: float = 1e-2) -> BetaMixture:
    """EM for a 2-component Beta mixture on scores `x` (methods.md §3.6).

    Initialised with one Beta fitted (method of moments) to the meta-negative scores `neg_init` and one to the
    meta-positive scores `pos_init`, mixing weight 0.5; at most `max_iter` EM iterations, stopping when the
    log-likelihood gains less than `tol`. M-step: weighted method of moments. Scores are clamped to
    [1e-3, 1 - 1e-3]."""
    x = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
    a0, b0 = beta_moments(neg_init)
    a1, b1 = beta_moments(pos_init)
    model = BetaMixture(np.array([a0, a1]), np.array([b0, b1]), np.array([0.5, 0.5]))
    if len(x) == 0:
        return model
    prev = model.log_likelihood(x)
    for _ in range(max_iter):
        r = model.posterior(x)
        params = [beta_moments(x, r[:, k]) for k in range(2)]
        weights = np.clip(r.mean(axis=0), 1e-6, None)
        model = BetaMixture(np.array([p[0] for p in params]), np.array([p[1] for p in params]),
                            weights / weights.sum())
        ll = model.log_likelihood(x)
        if ll - prev < tol:
            break
        prev = ll
    return model
