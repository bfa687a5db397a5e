"""This project's discretisation loss for few-step schedules (after Huang, arXiv 2412.10786).

The paper's full text is not available; this is the formulation fewstep implements.

**Sampler.** A first-order deterministic sampler (DDIM, eta = 0) visits model times
t_0 > t_1 > ... > t_K and evaluates the model at t_0..t_{K-1}. With alpha = sqrt(ab),
sigma = sqrt(1 - ab) and rho = alpha / sigma = sqrt(SNR), one DDIM step reads
x_{i+1} / sigma_{i+1} = x_i / sigma_i + (rho_{i+1} - rho_i) x0_hat_i, so

    x_K / alpha_K = (rho_0 / rho_K) x_{t_0} / alpha_0 + sum_{i<K} w_i x0_hat(x_i, t_i),
    w_i = (rho_{i+1} - rho_i) / rho_K,   rho_0 / rho_K + sum_i w_i = 1,

a convex combination of the scaled start and the model's x0-predictions. The sampler's output
is x_K / alpha_K (:func:`bound_sampler_table`); t_K is the data end (model time 0 by default).

**Loss.** Replacing each x0_hat(x_i, t_i) along the chain by its value on the forward process,
x_i = alpha_i x0 + sigma_i eps, Jensen's inequality bounds the squared error of the output by

    L(t) = E_{x0, eps} sum_i w_i ||x0_hat(alpha_i x0 + sigma_i eps, t_i) - x0||^2 / d

plus a term fixed by the endpoints (rho_0 / rho_K times the start's error). L is estimated by
Monte Carlo on training data, with no sampling chain. Because the i-th term depends only on the
pair (t_i, t_{i+1}), L is a sum over consecutive pairs: its exact minimum over a grid of
candidate times is a shortest path (:mod:`.dp`).
"""

from __future__ import annotations

import torch

from ..samplers.ddim import generalized_table, step_levels
from ..samplers.spacings import alpha_bar_at
from ..schedules import NoiseSchedule
from ..steps import StepTable


def log_alpha_bar(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """log alpha_bar at continuous times, differentiable in ``t`` (same interpolation as alpha_bar_at)."""
    grid = torch.cat([torch.zeros(1, dtype=torch.float64), schedule.alpha_bar.log()]).to(t.device)
    pos = (t.to(torch.float64) + 1.0).clamp(0, schedule.T)
    lo = pos.detach().floor().long().clamp(max=schedule.T - 1)
    frac = pos - lo
    return grid[lo] * (1 - frac) + grid[lo + 1] * frac


def rho(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """sqrt(SNR) = alpha / sigma at model times ``t`` (differentiable)."""
    lab = log_alpha_bar(schedule, t)
    return (lab - torch.log(-torch.expm1(lab))).mul(0.5).exp()


def loss_weights(schedule: NoiseSchedule, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_i for i < K, rho_0 / rho_K) for decreasing ``times`` t_0 > ... > t_K; they sum to 1."""
    r = rho(schedule, times)
    return (r[1:] - r[:-1]) / r[-1], r[0] / r[-1]


def x0_errors(model, schedule: NoiseSchedule, times: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """e(t) = mean over the batch of ||x0_hat(alpha x0 + sigma eps, t) - x0||^2 / d at each time [G].

    The same (x0, eps) pairs are used at every time (common random numbers), and the result is
    differentiable in ``times`` and in the model's parameters.
    """
    G, n = len(times), len(x0)
    lab = log_alpha_bar(schedule, times).to(x0.dtype)
    alpha, sigma = (0.5 * lab).exp(), (-torch.expm1(lab)).sqrt()
    shape = (G, *([1] * x0.ndim))
    a, s = alpha.view(shape), sigma.view(shape)
    x_t = (a * x0 + s * eps).flatten(0, 1)
    eps_hat = model(x_t, times.to(x0.dtype).repeat_interleave(n)).view(G, n, *x0.shape[1:])
    x0_hat = (x_t.view(G, n, *x0.shape[1:]) - s * eps_hat) / a
    return (x0_hat - x0).pow(2).flatten(2).mean(2).mean(1)


def discretisation_loss(
    model, schedule: NoiseSchedule, times: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """L(t) = sum_i w_i e(t_i) for decreasing ``times`` (K + 1 points; the last is not evaluated)."""
    w, _ = loss_weights(schedule, times)
    return (w.to(x0.dtype) * x0_errors(model, schedule, times[:-1], x0, eps)).sum()


@torch.no_grad()
def grid_errors(
    model,
    schedule: NoiseSchedule,
    grid: torch.Tensor,
    data: torch.Tensor,
    n: int = 2048,
    seed: int = 0,
    chunk: int = 16,
) -> torch.Tensor:
    """e(t) at every grid time, Monte Carlo with ``n`` training points and common noise."""
    gen = torch.Generator().manual_seed(seed)
    x0 = data[torch.randint(0, len(data), (n,), generator=gen)]
    eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    return torch.cat(
        [x0_errors(model, schedule, grid[i : i + chunk], x0, eps).double() for i in range(0, len(grid), chunk)]
    )


def pair_costs(schedule: NoiseSchedule, grid: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """cost[u, v] = (rho_v - rho_u) / rho_K * e(grid[u]) for a grid ordered from noise to data."""
    r = rho(schedule, torch.as_tensor(grid, dtype=torch.float64))
    return (r[None, :] - r[:, None]) / r[-1] * errors[:, None]


def bound_sampler_table(schedule: NoiseSchedule, times) -> StepTable:
    """The sampler of the bound: DDIM (eta = 0) through decreasing ``times``, output x_K / alpha_K.

    The model is evaluated at t_0..t_{K-1}; the last step lands on level t_K and is rescaled by
    1 / alpha_K so that the chain ends in data units.
    """
    times = torch.as_tensor(times, dtype=torch.float64)
    final = float(alpha_bar_at(schedule, times[-1]))
    t, ab, ab_next = step_levels(schedule, times[:-1].flip(0), final)
    scale = torch.ones_like(ab)
    scale[0] = final**-0.5  # increasing-time order: index 0 is the last step
    table = generalized_table(
        "schedule_opt",
        t,
        ab,
        ab_next,
        torch.zeros_like(ab),
        torch.zeros_like(ab),
        {"timesteps": t.tolist(), "final_time": float(times[-1])},
    )
    return StepTable(
        name=table.name,
        t=table.t,
        a=table.a * scale.flip(0),
        b=table.b * scale.flip(0),
        s=table.s,
        alpha_bar=table.alpha_bar,
        settings=table.settings,
    )
