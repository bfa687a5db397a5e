"""The ELBO dynamic programme of Watson et al. (2021), "Learning to Efficiently Sample from Diffusion Models".

Skipping from level t to level s < t with the respaced DDPM step (beta' = 1 - ab_t / ab_s,
variance beta_tilde' = (1 - ab_s) / (1 - ab_t) beta') contributes the KL term

    KL(q(x_s | x_t, x0) || p_theta(x_s | x_t)) / d = c^2 e(t) / (2 beta_tilde'),   c = sqrt(ab_s) beta' / (1 - ab_t),

to the negative ELBO per dimension, where e(t) = E||x0_hat(x_t, t) - x0||^2 / d (the posterior
means differ by c (x0 - x0_hat)). The last step (t to clean data) is a Gaussian decoder with mean
x0_hat and variance 1 - ab_t: 0.5 log(2 pi (1 - ab_t)) + e(t) / (2 (1 - ab_t)). The prior term is
fixed by t_0 = T - 1. Every term depends on one pair of consecutive steps, so the K-step
schedule that maximises the ELBO is a shortest path on the grid plus a data node (:mod:`.dp`).
The schedule is sampled with DDPM (beta_tilde') on the chosen integer steps.
"""

from __future__ import annotations

import math

import torch

from ..schedules import NoiseSchedule
from .discretisation import grid_errors
from .dp import min_cost_path
from .optimise import ScheduleResult


def elbo_costs(schedule: NoiseSchedule, grid: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """[M + 1, M + 1] negative-ELBO edge costs on decreasing integer ``grid`` plus a final data node."""
    ab = schedule.alpha_bar[torch.as_tensor(grid).long()]
    M = len(grid)
    cost = torch.full((M + 1, M + 1), float("inf"), dtype=torch.float64)
    ab_t, ab_s = ab[:, None], ab[None, :]
    beta = 1 - ab_t / ab_s
    var = (1 - ab_s) / (1 - ab_t) * beta
    c = ab_s.sqrt() * beta / (1 - ab_t)
    kl = c**2 * errors[:, None] / (2 * var)
    cost[:M, :M] = torch.where(torch.triu(torch.ones(M, M, dtype=torch.bool), 1), kl, cost[:M, :M])
    cost[:M, M] = 0.5 * torch.log(2 * math.pi * (1 - ab)) + errors / (2 * (1 - ab))
    return cost


def watson_dp(
    model,
    schedule: NoiseSchedule,
    K: int,
    data: torch.Tensor,
    grid: torch.Tensor | None = None,
    n_mc: int = 2048,
    seed: int = 0,
) -> ScheduleResult:
    """The ELBO-optimal K-step DDPM sub-sequence; ``times`` are the K evaluated steps, decreasing."""
    grid = (
        torch.arange(schedule.T - 1, -1, -1, dtype=torch.float64)
        if grid is None
        else torch.as_tensor(grid, dtype=torch.float64)
    )
    errors = grid_errors(model, schedule, grid, data, n_mc, seed)
    path, value = min_cost_path(elbo_costs(schedule, grid, errors), K)
    return ScheduleResult(grid[path[:-1]], value, [{"neg_elbo_per_dim": value}])
