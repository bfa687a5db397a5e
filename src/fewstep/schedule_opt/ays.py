"""Align Your Steps (Sabour, Fidler and Kreis 2024): schedules that minimise a KL upper bound (KLUB).

In the variance-exploding variables x = x0 + sigma eps (sigma = sqrt((1 - ab) / ab), the
denoiser D(x, sigma) = x0_hat), an SDE solver that freezes the denoiser at the start sigma_i of
each interval differs from the true reverse SDE by a drift whose Girsanov KL is

    KLUB(sigma_0 > ... > sigma_K)
        = sum_i int_{sigma_{i+1}}^{sigma_i} E ||D(x0 + s eps, s) - D(x0 + sigma_i eps, sigma_i)||^2 / s^3 ds

(AYS eq. 7-8, with the same eps along the interval). This project estimates every interval on a
grid of candidate times by Monte Carlo on training data (common random numbers), then runs AYS's
coordinate search: each interior point in turn moves to the grid point between its neighbours
that minimises its two adjacent intervals, sweeping until the KLUB improves by less than ``tol``
(relative) in a sweep (early stopping) or ``max_sweeps`` is reached.
"""

from __future__ import annotations

import torch

from ..schedules import NoiseSchedule
from .discretisation import log_alpha_bar
from .optimise import ScheduleResult, candidate_grid


@torch.no_grad()
def klub_costs(
    model, schedule: NoiseSchedule, grid: torch.Tensor, data: torch.Tensor, n: int = 1024, seed: int = 0
) -> torch.Tensor:
    """cost[u, v] = the KLUB of the interval from grid[u] down to grid[v] (grid decreasing in time)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x0 = data[torch.randint(0, len(data), (n,), generator=gen)].to(dtype)
    eps = torch.randn(x0.shape, generator=gen, dtype=dtype)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    lab = log_alpha_bar(schedule, grid)
    alpha, sigma_vp = (0.5 * lab).exp(), (-torch.expm1(lab)).sqrt()
    sigma = sigma_vp / alpha
    denoised = []
    for t, a, s in zip(grid, alpha, sigma_vp):
        x_t = float(a) * x0 + float(s) * eps
        eps_hat = model(x_t, torch.full((n,), float(t), dtype=dtype))
        denoised.append(((x_t - float(s) * eps_hat) / float(a)).flatten(1).double())
    D = torch.stack(denoised).flatten(1)  # [M, n * d]
    # g[u, s] = E||D_s - D_u||^2 / d from one Gram matrix (float64: no cancellation at these sizes)
    norms = D.pow(2).sum(1)
    gap = ((norms[:, None] + norms[None, :] - 2 * D @ D.T) / D.shape[1]).clamp(min=0)
    ds = torch.cat([torch.zeros(1, dtype=torch.float64), sigma[:-1] - sigma[1:]])  # width of the cell ending at s
    density = gap * (ds / sigma**3)[None, :]
    # interval u -> v integrates the cells s = u+1..v: a cumulative sum along s
    cum = density.cumsum(1)
    return cum - cum.diagonal()[:, None]


def coordinate_search(
    cost: torch.Tensor, init: list[int], tol: float = 1e-4, max_sweeps: int = 50
) -> tuple[list[int], list[float]]:
    """AYS's coordinate search on grid indices (first and last fixed); returns the path and KLUB per sweep."""
    path = list(init)
    total = lambda p: float(sum(cost[a, b] for a, b in zip(p[:-1], p[1:])))  # noqa: E731
    trace = [total(path)]
    for _ in range(max_sweeps):
        for j in range(1, len(path) - 1):
            lo, hi = path[j - 1], path[j + 1]
            candidates = torch.arange(lo + 1, hi)
            if len(candidates) == 0:
                continue
            local = cost[lo, candidates] + cost[candidates, hi]
            path[j] = int(candidates[local.argmin()])
        trace.append(total(path))
        if trace[-2] - trace[-1] <= tol * abs(trace[-2]):
            break
    return path, trace


def align_your_steps(
    model,
    schedule: NoiseSchedule,
    K: int,
    data: torch.Tensor,
    grid: torch.Tensor | None = None,
    grid_size: int = 120,
    n_mc: int = 1024,
    seed: int = 0,
    tol: float = 1e-4,
) -> ScheduleResult:
    """The AYS schedule with K model evaluations: decreasing times T-1 = t_0 > ... > t_K = 0."""
    grid = candidate_grid(schedule, grid_size) if grid is None else torch.as_tensor(grid, dtype=torch.float64)
    cost = klub_costs(model, schedule, grid, data, n_mc, seed)
    init = torch.linspace(0, len(grid) - 1, K + 1).round().long().tolist()  # uniform in grid index
    path, trace = coordinate_search(cost, init, tol)
    return ScheduleResult(grid[path], trace[-1], [{"sweep": i, "klub": v} for i, v in enumerate(trace)])
