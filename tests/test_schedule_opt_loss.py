"""Discretisation loss, its optimisers (DP, cumulative-softmax Adam) and Phase 2: closed-form checks."""

import pytest
import torch

from _sampler_models import GaussianEps, random_net
from fewstep.rollout import chain
from fewstep.schedule_opt import (
    CumulativeSoftmax,
    bound_sampler_table,
    brute_force_path,
    candidate_grid,
    discretisation_loss,
    finetune_at_steps,
    grid_errors,
    loss_weights,
    min_cost_path,
    optimise_adam,
    optimise_dp,
    pair_costs,
)
from fewstep.schedules import make_schedule

MU, S = torch.tensor([0.5, -0.3], dtype=torch.float64), 0.4


def _gaussian_data(n=20_000, seed=0):
    return MU + S * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _closed_form_error(schedule, t):
    """e(t) = Var(x0 | x_t) per dimension for N(mu, s^2 I) data: s^2 (1 - ab) / (ab s^2 + 1 - ab)."""
    ab = schedule.alpha_bar[torch.as_tensor(t).long()]
    return S**2 * (1 - ab) / (ab * S**2 + 1 - ab)


def test_weights_are_convex():
    schedule = make_schedule("linear", 1000)
    times = torch.tensor([999.0, 640.5, 300.0, 41.0, 0.0])
    w, w_start = loss_weights(schedule, times)
    assert (w > 0).all() and w_start > 0
    assert float(w.sum() + w_start) == pytest.approx(1.0, abs=1e-12)


def test_output_is_the_convex_combination():
    """x_K / alpha_K = (rho_0/rho_K) x_T/alpha_0 + sum_i w_i x0_hat_i along the bound's sampler."""
    schedule = make_schedule("linear", 1000)
    model = random_net(seed=2)
    times = torch.tensor([999.0, 700.0, 260.0, 55.0, 0.0])
    table = bound_sampler_table(schedule, times)
    noise = torch.randn(table.K + 1, 16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w, w_start = loss_weights(schedule, times)
    ab = schedule.alpha_bar[times.long()]
    combo, x = w_start * noise[0] / ab[0].sqrt(), noise[0]
    for k, _, _, x_next in chain(model, table, noise):
        eps = model(x, torch.full((16,), float(times[k]), dtype=torch.float64))
        combo = combo + w[k] * (x - (1 - ab[k]).sqrt() * eps) / ab[k].sqrt()
        x = x_next
    assert torch.allclose(x, combo, atol=1e-9)


def test_grid_errors_and_loss_match_gaussian_closed_form():
    schedule = make_schedule("linear", 1000)
    model = GaussianEps(schedule, MU, S)
    data = _gaussian_data()
    grid = torch.tensor([999.0, 500.0, 120.0, 10.0, 0.0])
    errors = grid_errors(model, schedule, grid, data, n=20_000)
    assert torch.allclose(errors, _closed_form_error(schedule, grid), rtol=0.03)
    gen = torch.Generator().manual_seed(1)
    x0 = data[:10_000]
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    w, _ = loss_weights(schedule, grid)
    exact = float((w * _closed_form_error(schedule, grid[:-1])).sum())
    assert float(discretisation_loss(model, schedule, grid, x0, eps)) == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize("K", [1, 2, 3, 5])
def test_dp_matches_brute_force(K):
    gen = torch.Generator().manual_seed(K)
    cost = torch.rand(9, 9, generator=gen, dtype=torch.float64)
    (path, value), (bf_path, bf_value) = min_cost_path(cost, K), brute_force_path(cost, K)
    assert path == bf_path and value == pytest.approx(bf_value)
    # and on the discretisation loss of a real (random) model on a small grid
    schedule = make_schedule("linear", 1000)
    grid = candidate_grid(schedule, 6)
    errors = grid_errors(random_net(seed=1), schedule, grid, _gaussian_data(512), n=512)
    costs = pair_costs(schedule, grid, errors)
    if K < len(grid):
        path, value = min_cost_path(costs, K)
        bf_path, bf_value = brute_force_path(costs, K)
        assert path == bf_path and value == pytest.approx(bf_value)


def test_cumulative_softmax_parameterisation():
    init = torch.tensor([999.0, 600.0, 250.0, 30.0, 0.0], dtype=torch.float64)
    param = CumulativeSoftmax(init)
    assert torch.allclose(param().detach(), init, atol=1e-9)
    with torch.no_grad():
        param.logits.copy_(torch.tensor([5.0, -3.0, 2.0, 0.1]))
    t = param().detach()
    assert t[0] == 999.0 and t[-1] == 0.0 and (t.diff() < 0).all()


def test_adam_lowers_the_loss_and_dp_is_no_worse_on_gaussian_data():
    schedule = make_schedule("linear", 1000)
    model, data = GaussianEps(schedule, MU, S), _gaussian_data(4096)
    init = torch.tensor([999.0, 750.0, 500.0, 250.0, 0.0])
    gen = torch.Generator().manual_seed(3)
    x0, eps = data[:4096], torch.randn(4096, 2, generator=gen, dtype=torch.float64)
    result = optimise_adam(model, schedule, init, data, steps=60, lr=0.2, batch_size=256, eval_every=60)
    before = float(discretisation_loss(model, schedule, init, x0, eps))
    after = float(discretisation_loss(model, schedule, result.times, x0, eps))
    assert after < 0.7 * before, (before, after)
    dp = optimise_dp(model, schedule, 4, data, grid_size=100, n_mc=2048)
    dp_value = float(discretisation_loss(model, schedule, dp.times, x0, eps))
    assert dp_value <= after * 1.05
    assert dp.times[0] == 999 and dp.times[-1] == 0 and (dp.times.diff() < 0).all()


def test_adam_early_stopping_keeps_the_best_metric():
    schedule = make_schedule("linear", 1000)
    model, data = GaussianEps(schedule, MU, S), _gaussian_data(1024)
    scores = iter([3.0, 1.0, 2.0, 2.5, 2.7, 9.0, 9.0])
    seen = []

    def metric(times):
        seen.append(times)
        return next(scores)

    result = optimise_adam(
        model,
        schedule,
        torch.tensor([999.0, 500.0, 0.0]),
        data,
        metric=metric,
        steps=100,
        eval_every=5,
        patience=3,
        batch_size=64,
    )
    assert result.loss == 1.0 and torch.equal(result.times, seen[1]) and len(seen) == 5


def test_phase2_lowers_eps_loss_at_chosen_steps():
    from fewstep.training.pretrain import EpsilonLoss

    schedule = make_schedule("linear", 1000)
    model, data = random_net(seed=4), _gaussian_data(2048)
    times = torch.tensor([999.0, 400.0, 60.0, 0.0])
    loss = EpsilonLoss(schedule, times[:-1].long())
    evaluate = lambda m: float(loss(m, data, torch.Generator().manual_seed(9)).mean())  # noqa: E731
    tuned = finetune_at_steps(
        model, schedule, times, data, weighting="w", steps=80, lr=3e-3, batch_size=128, ema_decay=0.9
    )
    assert evaluate(tuned) < 0.5 * evaluate(model)
    assert evaluate(model) == evaluate(random_net(seed=4))  # the original model is untouched


def test_alternate_runs_r_rounds_of_both_phases():
    from fewstep.schedule_opt import ScheduleResult, alternate

    schedule = make_schedule("linear", 1000)
    data = _gaussian_data(512)
    seen = []

    def phase1(model):
        seen.append(model)
        return ScheduleResult(torch.tensor([999.0, 300.0 + len(seen), 0.0], dtype=torch.float64), 0.0)

    start = random_net(seed=7)
    model, result = alternate(start, schedule, data, phase1, rounds=3, steps=3, lr=1e-3, batch_size=32)
    assert len(seen) == 3 and seen[0] is start and seen[1] is not start  # each round sees the last fine-tuned model
    assert result.times[1] == 303.0 and model is not seen[-1]


def test_phase2_eps_weights_equal_phase1_x0_weights():
    """Phase 1 weights the x0-error by w_i; the eps-error is ab / (1 - ab) times smaller, so its weight is
    w_i (1 - ab_i) / ab_i, normalised to mean 1 (not w_i itself)."""
    from fewstep.schedule_opt.finetune import eps_loss_weights

    schedule = make_schedule("linear", 1000)
    times = torch.tensor([999.0, 400.0, 60.0, 0.0])
    weights = eps_loss_weights(schedule, times)
    assert torch.allclose(weights, torch.tensor([2.9945, 0.0044825, 0.0010348], dtype=torch.float64), rtol=1e-3)
    w, _ = loss_weights(schedule, times)
    ab = schedule.alpha_bar[times[:-1].long()]
    x0_weights = weights * ab / (1 - ab)  # back on the x0-error: proportional to w
    assert torch.allclose(x0_weights / x0_weights.sum(), w / w.sum())
    with pytest.raises(Exception):
        eps_loss_weights(schedule, torch.tensor([999.0, 400.0, -1.0]))  # clean end: w collapses onto the last step
