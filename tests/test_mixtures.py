"""The two-component mixtures recover known components and survive degenerate input."""
from __future__ import annotations

import numpy as np
import pytest

from core.mixtures import (BetaMixture, GMMFit, ashman_d, beta_moments, fit_beta_mixture, fit_gmm,
                           loss_split_clean_prob, minmax)


def test_gmm_recovers_known_means() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.7, 0.1, 2000)])
    fit = fit_gmm(x, max_iter=100)
    assert fit.means == pytest.approx([0.2, 0.7], abs=0.05)
    assert fit.weights == pytest.approx([0.6, 0.4], abs=0.05)
    post = fit.posterior(np.array([0.2, 0.7]))
    assert post[0, 0] > 0.99 and post[1, 1] > 0.99


def test_gmm_on_all_equal_scores_is_undecided() -> None:
    fit = fit_gmm(np.full(10, 0.3))
    assert np.allclose(fit.posterior(np.array([0.3, 0.9])), 0.5)


def test_loss_split_gives_low_losses_high_clean_probability() -> None:
    rng = np.random.default_rng(1)
    losses = np.concatenate([rng.normal(1.0, 0.1, 400), rng.normal(3.0, 0.2, 100)])
    p = loss_split_clean_prob(losses, max_iter=100)
    assert p[:400].mean() > 0.95 and p[400:].mean() < 0.05
    assert minmax(np.array([2.0, 4.0, 3.0])) == pytest.approx([0, 1, 0.5])


def test_beta_mixture_recovers_known_components() -> None:
    rng = np.random.default_rng(2)
    noisy, clean = rng.beta(2, 8, 2500), rng.beta(8, 2, 2500)
    bmm = fit_beta_mixture(np.concatenate([noisy, clean]), rng.beta(2, 8, 200), rng.beta(8, 2, 200), max_iter=50)
    assert bmm.means == pytest.approx([0.2, 0.8], abs=0.05)
    post = bmm.clean_posterior(np.concatenate([noisy, clean]))
    assert post[:2500].mean() < 0.1 and post[2500:].mean() > 0.9


@pytest.mark.parametrize("alphas, betas, turn, tail", [
    ([20.0, 2.0], [20.0, 1.0], 18 / 37, 0.05),    # a wide matched component rises again in the low tail
    ([1.0, 30.0], [2.0, 10.0], 29 / 37, 0.999),   # a wide mismatched component takes over the high tail
])
def test_beta_clean_posterior_never_falls_as_the_score_rises(alphas, betas, turn, tail) -> None:
    bmm = BetaMixture(np.array(alphas), np.array(betas), np.array([0.5, 0.5]))
    raw = bmm.posterior(np.array([tail, turn]))[:, 1]
    assert abs(raw[0] - raw[1]) > 0.8                             # the raw posterior runs backwards out there
    assert bmm.clean_posterior(np.array([tail]))[0] == pytest.approx(raw[1])   # held at the turning point
    grid = np.linspace(0, 1, 1001)
    assert (np.diff(bmm.clean_posterior(grid)) >= -1e-12).all()
    # where the ratio has no turning point the posterior is the raw one
    plain = BetaMixture(np.array([2.0, 8.0]), np.array([8.0, 2.0]), np.array([0.5, 0.5]))
    assert np.allclose(plain.clean_posterior(grid), plain.posterior(grid)[:, 1])


@pytest.mark.parametrize("scores", [np.full(50, 0.4), np.r_[np.zeros(25), np.ones(25)], np.zeros(5)])
def test_beta_mixture_posteriors_are_finite_on_degenerate_scores(scores: np.ndarray) -> None:
    bmm = fit_beta_mixture(scores, np.full(5, 0.1), np.full(5, 0.1))
    post = bmm.posterior(scores)
    assert np.isfinite(post).all() and np.allclose(post.sum(axis=1), 1)
    assert np.isfinite(bmm.alphas).all() and np.isfinite(bmm.betas).all()


def test_beta_moments_match_hand_computation() -> None:
    # mean 0.5, variance 0.05 → common = 0.25/0.05 − 1 = 4 → α = β = 2
    x = np.array([0.5 - np.sqrt(0.05), 0.5 + np.sqrt(0.05)])
    assert beta_moments(x) == pytest.approx((2.0, 2.0))


def test_ashman_d_by_hand() -> None:
    # |6 - 0|·√2 / √(1 + 1) = 6; |2.5 - 1|·√2 / √(0.5 + 4) = 1.5·√2 / √4.5 = 1; coinciding means: 0
    assert ashman_d(GMMFit(np.array([0.0, 6.0]), np.array([1.0, 1.0]), np.array([0.5, 0.5]))) == pytest.approx(6.0)
    assert ashman_d(GMMFit(np.array([1.0, 2.5]), np.array([0.5, 4.0]), np.array([0.3, 0.7]))) == pytest.approx(1.0)
    assert ashman_d(GMMFit(np.array([2.0, 2.0]), np.array([1.0, 3.0]), np.array([0.5, 0.5]))) == 0.0
