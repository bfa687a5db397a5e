"""Align Your Steps and the Watson et al. ELBO dynamic programme."""

import math

import pytest
import torch

from _sampler_models import GaussianEps, random_net
from fewstep.schedule_opt import (
    align_your_steps,
    brute_force_path,
    coordinate_search,
    elbo_costs,
    klub_costs,
    min_cost_path,
    watson_dp,
)
from fewstep.schedules import make_schedule


def _data(n=2048):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.4 + 0.5


def test_watson_costs_are_the_ddpm_elbo_terms():
    """On consecutive steps t -> t-1 the edge cost is Ho et al.'s
    L_{t-1} = beta^2/(2 sigma^2 alpha (1-ab)) E||eps - eps_hat||^2."""
    schedule = make_schedule("linear", 50)
    grid = torch.arange(49, -1, -1, dtype=torch.float64)
    eps_err = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)[grid.long()]
    ab = schedule.alpha_bar[grid.long()]
    x0_err = (1 - ab) / ab * eps_err  # ||x0 - x0_hat||^2 = (1-ab)/ab ||eps - eps_hat||^2
    cost = elbo_costs(schedule, grid, x0_err)
    for u in range(0, 48, 7):
        t = int(grid[u])
        beta, alpha = schedule.beta[t], schedule.alpha[t]
        sigma2 = schedule.beta_tilde[t]
        ho = beta**2 / (2 * sigma2 * alpha * (1 - schedule.alpha_bar[t])) * eps_err[u]
        assert float(cost[u, u + 1]) == pytest.approx(float(ho), rel=1e-9)
    # the decoder edge from t: Gaussian NLL with variance 1 - ab_t
    assert float(cost[3, 50]) == pytest.approx(
        0.5 * math.log(2 * math.pi * (1 - ab[3])) + float(x0_err[3] / (2 * (1 - ab[3])))
    )


def test_watson_dp_matches_brute_force():
    schedule = make_schedule("linear", 1000)
    grid = torch.tensor([999.0, 700.0, 400.0, 200.0, 80.0, 20.0, 0.0])
    model = random_net(seed=1)
    result = watson_dp(model, schedule, 3, _data(), grid=grid, n_mc=512)
    from fewstep.schedule_opt import grid_errors

    cost = elbo_costs(schedule, grid, grid_errors(model, schedule, grid, _data(), 512))
    path, value = brute_force_path(cost, 3)
    assert result.times.tolist() == grid[path[:-1]].tolist() and result.loss == pytest.approx(value)
    assert len(result.times) == 3 and result.times[0] == 999


def test_klub_costs_and_coordinate_search():
    schedule = make_schedule("linear", 1000)
    grid = torch.tensor([999.0, 800.0, 600.0, 400.0, 250.0, 120.0, 50.0, 10.0, 0.0])
    model = GaussianEps(schedule, [0.5, 0.5], 0.4)
    cost = klub_costs(model, schedule, grid, _data(), n=512)
    M = len(grid)
    assert torch.allclose(cost.diagonal(), torch.zeros(M, dtype=torch.float64))
    upper = cost[torch.triu(torch.ones(M, M, dtype=torch.bool), 1)]
    assert (upper >= 0).all()
    # an interval's cost grows as it extends towards the data end
    assert (cost[0, 2:] >= cost[0, 1:-1]).all()
    path, trace = coordinate_search(cost, [0, 2, 4, M - 1])
    assert path[0] == 0 and path[-1] == M - 1 and all(a < b for a, b in zip(path, path[1:]))
    assert all(b <= a + 1e-12 for a, b in zip(trace, trace[1:]))
    assert trace[-1] >= min_cost_path(cost, 3)[1] - 1e-12  # a local search cannot beat the exact optimum


def test_align_your_steps_schedule():
    schedule = make_schedule("linear", 1000)
    result = align_your_steps(random_net(seed=2), schedule, 4, _data(), grid_size=30, n_mc=256)
    assert len(result.times) == 5 and result.times[0] == 999 and result.times[-1] == 0
    assert (result.times.diff() < 0).all()


def _klub_gap(sigma_u, sigma, s0):
    """E||D(x0 + s eps, s) - D(x0 + s_u eps, s_u)||^2 / d for N(mu, s0^2 I) data (same eps), closed form.

    D(x, s) = mu + s0^2 / (s0^2 + s^2) (x - mu) and x0 = mu + s0 z give D - mu = s0^3 c z + s0^2 g eps
    with c = 1 / (s0^2 + s^2), g = s / (s0^2 + s^2).
    """
    c = lambda s: 1 / (s0**2 + s**2)  # noqa: E731
    g = lambda s: s / (s0**2 + s**2)  # noqa: E731
    return s0**6 * (c(sigma) - c(sigma_u)) ** 2 + s0**4 * (g(sigma) - g(sigma_u)) ** 2


def test_klub_costs_match_the_gaussian_closed_form():
    """The AYS weight is 1 / sigma^3 (AYS eq. 7-8): with the exact (linear) Gaussian denoiser each interval's
    KLUB is known in closed form; a sigma^2 (or any other) weight misses it by orders of magnitude."""
    schedule = make_schedule("linear", 1000)
    mu, s0 = torch.tensor([0.5, 0.5], dtype=torch.float64), 0.4
    data = mu + s0 * torch.randn(8192, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = torch.arange(999.0, 299.0, -3.0, dtype=torch.float64)
    cost = klub_costs(GaussianEps(schedule, mu, s0), schedule, grid, data, n=8192)
    assert torch.allclose(cost.diagonal(), torch.zeros(len(grid), dtype=torch.float64))
    ab = schedule.alpha_bar[grid.long()]
    sigma = ((1 - ab) / ab).sqrt()  # variance-exploding sigma, decreasing along the grid
    M = len(grid)
    for u, v in [(0, 60), (0, M - 1), (40, 120), (150, M - 1)]:
        cells = torch.arange(u + 1, v + 1)
        riemann = (_klub_gap(sigma[u], sigma[cells], s0) * (sigma[cells - 1] - sigma[cells]) / sigma[cells] ** 3).sum()
        assert float(cost[u, v]) == pytest.approx(float(riemann), rel=0.05), (u, v)
        s = torch.logspace(float(sigma[v].log10()), float(sigma[u].log10()), 20_001, dtype=torch.float64)
        integral = torch.trapezoid(_klub_gap(sigma[u], s, s0) / s**3, s)
        assert float(cost[u, v]) == pytest.approx(float(integral), rel=0.15), (u, v)  # + quadrature error
