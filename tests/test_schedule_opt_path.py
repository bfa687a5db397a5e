"""The fine reference, the discretisation error, the path bound and its DP, refinement and distillation.

Gaussian data N(mu, s^2 I) make the model exact and linear: the probability-flow ODE keeps
z = (x - alpha mu) / sqrt(ab s^2 + 1 - ab) fixed, so its clean end is mu + s z and the flow's
Jacobian to clean data from level ab is s / sqrt(ab s^2 + 1 - ab) times the identity.
"""

import pytest
import torch

from _sampler_models import GaussianEps, random_net
from fewstep.samplers.spacings import alpha_bar_at
from fewstep.schedule_opt.dp import brute_force_path, min_cost_path
from fewstep.schedule_opt.path_bound import (
    flow_jacobians,
    optimise_path_dp,
    path_costs,
    schedule_cost,
    telescoped_errors,
)
from fewstep.schedule_opt.reference import (
    ddim_output,
    discretisation_error,
    error_over_batches,
    fine_reference,
    output_error,
)
from fewstep.schedule_opt.refine import coordinate_refine, refine_ddim
from fewstep.schedules import make_schedule

MU, S, T = torch.tensor([0.5, -0.3], dtype=torch.float64), 0.4, 200
SCHEDULE = make_schedule("linear", T)
GRID = torch.tensor([199.0, 170, 140, 110, 85, 60, 40, 25, 12, 5, 0, -1])


def _starts(n=256, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def gaussian():
    model = GaussianEps(SCHEDULE, MU, S)
    return model, fine_reference(model, SCHEDULE, _starts())


@pytest.fixture(scope="module")
def net():
    model = random_net(seed=3)
    return model, fine_reference(model, SCHEDULE, _starts(64, 1))


@pytest.fixture(scope="module")
def net_costs(net):
    model, ref = net
    return path_costs(model, SCHEDULE, ref, GRID)


def test_reference_solves_the_gaussian_flow_and_is_cached(gaussian, tmp_path):
    model, ref = gaussian
    ab = alpha_bar_at(SCHEDULE, torch.tensor(T - 1.0))
    exact = MU + S * (ref.x_T - ab.sqrt() * MU) / (ab * S**2 + 1 - ab).sqrt()
    err_1 = (ref.output - exact).pow(2).mean().sqrt()
    err_2 = (fine_reference(model, SCHEDULE, ref.x_T, refine=2).output - exact).pow(2).mean().sqrt()
    assert err_1 < 0.01 and err_2 < 0.6 * err_1  # first order: halving the step roughly halves the error
    assert ref.times[0] == T - 1 and ref.times[-1] == -1 and ref.states.shape == (T + 1, 256, 2)
    cached = fine_reference(model, SCHEDULE, ref.x_T, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    assert torch.equal(fine_reference(model, SCHEDULE, ref.x_T, cache_dir=tmp_path).states, cached.states)


def test_discretisation_error_is_zero_on_the_reference_grid_and_positive_off_it(gaussian):
    model, ref = gaussian
    assert discretisation_error(model, SCHEDULE, ref.times, ref.x_T, ref)["mse"] < 1e-24
    coarse = discretisation_error(model, SCHEDULE, torch.tensor([199.0, 60.0, -1.0]), ref.x_T, ref)
    assert coarse["rmse"] == pytest.approx(coarse["mse"] ** 0.5) and coarse["rmse"] > 0.05
    with pytest.raises(Exception):
        discretisation_error(model, SCHEDULE, ref.times, _starts(seed=5), ref)
    spread = error_over_batches([1.0, 2.0, 3.0])
    assert spread["mean"] == 2.0 and spread["std"] == pytest.approx(1.0)


def test_local_error_is_the_convex_combination_along_the_reference(net):
    """delta_uv = sigma_v sum_j (rho_{j+1} - rho_j) (x0_hat(X_u) - x0_hat(X_j)) (eq. 2 of path_bound)."""
    model, ref = net
    ab = alpha_bar_at(SCHEDULE, ref.times)
    alpha, sigma = ab.sqrt(), (1 - ab).clamp(min=0).sqrt()
    D = (ref.states[:-1] - sigma[:-1, None, None] * ref.eps) / alpha[:-1, None, None]
    rho = alpha[:-1] / sigma[:-1]
    for u, v in [(0, 7), (20, 150), (100, 199)]:
        step = ddim_output(model, SCHEDULE, ref.times[[u, v]], ref.states[u]) * alpha[v]  # one DDIM step, level v
        widths = torch.diff(rho[u : v + 1])
        combo = sigma[v] * (widths[:, None, None] * (D[u] - D[u:v])).sum(0)
        assert torch.allclose(step - ref.states[v], combo, atol=1e-9)


def test_telescoped_terms_sum_to_the_error_and_bound_it(net):
    model, ref = net
    times = torch.tensor([199.0, 120, 40, 9, -1])
    terms = telescoped_errors(model, SCHEDULE, times, ref)
    error = ddim_output(model, SCHEDULE, times, ref.x_T) - ref.output
    assert torch.allclose(terms.sum(0), error, atol=1e-9)
    rms = lambda v: float(v.pow(2).mean().sqrt())  # noqa: E731
    assert rms(error) <= sum(rms(t) for t in terms) + 1e-12


def test_flow_jacobians_match_the_gaussian_closed_form(gaussian):
    model, ref = gaussian
    nodes = torch.tensor([0, 100, 190, T])
    G, scale = flow_jacobians(model, SCHEDULE, ref, nodes)
    ab = alpha_bar_at(SCHEDULE, ref.times[nodes])
    expected = (S / (ab * S**2 + 1 - ab).sqrt())[:, None, None, None] * torch.eye(2, dtype=torch.float64)
    assert scale == 1.0 and torch.allclose(G, expected.expand_as(G), rtol=0.02, atol=1e-3)


def test_path_bound_upper_bounds_the_measured_error_on_gaussian_data(gaussian):
    """Claimed where the model is linear: B >= B_exact >= RMS error, and B is close to it."""
    model, ref = gaussian
    grid, cost = path_costs(model, SCHEDULE, ref, GRID)
    for K in (1, 2, 3, 5):
        path, bound = min_cost_path(cost, K)
        times = grid[path]
        measured = discretisation_error(model, SCHEDULE, times, ref.x_T, ref)["rmse"]
        exact_bound = sum(float(t.pow(2).mean().sqrt()) for t in telescoped_errors(model, SCHEDULE, times, ref))
        assert measured <= exact_bound + 1e-9 <= bound + 1e-6, (K, measured, exact_bound, bound)
        assert bound <= 1.2 * measured, (K, bound, measured)
        assert schedule_cost(cost, grid, times) == pytest.approx(bound)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_path_dp_matches_brute_force(net, net_costs, K):
    model, ref = net
    grid, cost = net_costs
    (path, value), (bf_path, bf_value) = min_cost_path(cost, K), brute_force_path(cost, K)
    assert path == bf_path and value == pytest.approx(bf_value)
    result = optimise_path_dp(model, SCHEDULE, K, ref, grid=GRID)
    assert result.times.tolist() == grid[path].tolist() and result.loss == pytest.approx(value)


def test_gits_style_cost_is_the_one_step_error(net):
    model, ref = net
    _, raw = path_costs(model, SCHEDULE, ref, GRID, propagate="none")  # GITS-style: the plain one-step error
    start = ref.states[ref.index(GRID[2])]
    one_step = ddim_output(model, SCHEDULE, GRID[[2, 6]], start) * alpha_bar_at(SCHEDULE, GRID[6]).sqrt()
    assert float(raw[2, 6]) == pytest.approx(float((one_step - ref.states[ref.index(GRID[6])]).pow(2).mean().sqrt()))


def test_coordinate_refine_finds_the_minimum_and_never_increases(net):
    target = torch.tensor([100.0, 81.0, 40.0, 13.0, 0.0])
    result = coordinate_refine(lambda t: float((t - target).pow(2).sum()), torch.tensor([100.0, 90, 60, 30, 0]))
    assert result.times.tolist() == target.tolist() and result.loss == 0.0
    model, ref = net
    start = torch.tensor([199.0, 150, 100, 50, -1])
    refined = refine_ddim(model, SCHEDULE, start, ref, candidates=8, max_sweeps=2)
    errors = [h["error"] for h in refined.history]
    assert all(b <= a for a, b in zip(errors, errors[1:]))
    assert refined.loss == pytest.approx(output_error(ddim_output(model, SCHEDULE, refined.times, ref.x_T), ref))
