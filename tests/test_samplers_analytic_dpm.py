"""Analytic-DPM: Gamma_n by Monte Carlo and the optimal variance, checked on Gaussian data in closed form."""

import pytest
import torch

from _sampler_models import GaussianEps
from fewstep.samplers import analytic_dpm_table, estimate_gamma, posterior_std, step_levels
from fewstep.schedules import make_schedule


@pytest.mark.parametrize("mean", ["ddpm", "ddim"])
def test_optimal_variance_is_true_reverse_variance_for_gaussian_data(mean):
    schedule = make_schedule("linear", 1000)
    mu, s = torch.tensor([0.3, -0.2]), 0.5
    tau = [0, 100, 300, 600, 999]
    data = mu + s * torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = GaussianEps(schedule, mu, s)
    gamma = estimate_gamma(model, schedule, tau, data, n_samples=20_000, seed=1)
    t, ab, ab_next = step_levels(schedule, tau)
    v = ab * s**2 + 1 - ab
    exact_gamma = (1 - ab) / v  # E||E[eps|x_t]||^2/d = (1 - ab) / v
    assert torch.allclose(gamma, exact_gamma, atol=0.01, rtol=0.01)
    # sigma* depends on 1 - Gamma, a small difference at high noise: check the formula with the exact Gamma
    table = analytic_dpm_table(schedule, tau, exact_gamma, mean=mean, noise_at_last_step=True)
    # For Gaussian data q(x_s | x_n) is Gaussian with variance lambda^2 + gamma^2 Var(x0 | x_n),
    # Var(x0 | x_n) = s^2 (1 - ab) / v: the optimal sigma* must equal it.
    lam = posterior_std(ab, ab_next) if mean == "ddpm" else torch.zeros_like(ab)
    coef = ab_next.sqrt() - (1 - ab_next - lam**2).sqrt() * (ab / (1 - ab)).sqrt()
    exact = lam**2 + coef**2 * s**2 * (1 - ab) / v
    assert torch.allclose(table.s.flip(0) ** 2, exact, rtol=1e-9)
    # the variance lies between the paper's bounds
    assert (table.s.flip(0) ** 2 >= lam**2 - 1e-12).all()


def test_last_step_deterministic_by_default():
    schedule = make_schedule("linear", 1000)
    table = analytic_dpm_table(schedule, [0, 500, 999], torch.tensor([0.5, 0.5, 0.9]))
    assert table.s[-1] == 0 and (table.s[:-1] > 0).all()
