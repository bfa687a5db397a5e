"""Phase 1: optimise the K-step schedule against the discretisation loss (see :mod:`.discretisation`).

Two optimisers of the same L(t), endpoints t_0 = t_first and t_K = t_last fixed:

* :func:`optimise_adam`: interior times t_i = t_first - (t_first - t_last) * cumsum(softmax(z))_i
  (a cumulative softmax of K free logits z: always strictly decreasing, endpoints exact), fitted by
  Adam on fresh Monte-Carlo minibatches of L. The bound can be over-optimised, so every
  ``eval_every`` steps a held-out sample-quality ``metric(times)`` is computed and the best
  schedule by that metric is kept (early stopping after ``patience`` evaluations without gain).
* :func:`optimise_dp`: the exact minimiser of the Monte-Carlo estimate of L over a grid of
  candidate times, by dynamic programming (L is a sum over consecutive pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from ..progress import bar as progress_bar

from ..errors import FewstepError
from ..schedules import NoiseSchedule
from ..samplers.spacings import spacing
from .discretisation import discretisation_loss, grid_errors, pair_costs
from .dp import min_cost_path


@dataclass
class ScheduleResult:
    """Decreasing times t_0 > ... > t_K (K + 1 points, the model runs at the first K) and how they were found."""

    times: torch.Tensor
    loss: float
    history: list[dict] = field(default_factory=list)


def candidate_grid(
    schedule: NoiseSchedule, size: int, t_first: float | None = None, t_last: float = 0.0
) -> torch.Tensor:
    """Decreasing integer candidate times: the union of time-uniform and log-SNR-uniform spacings."""
    t_first = float(schedule.T - 1) if t_first is None else t_first
    pts = torch.cat(
        [spacing("uniform", schedule, size, t_last, t_first), spacing("logsnr", schedule, size, t_last, t_first)]
    )
    return torch.unique(pts.round()).flip(0).to(torch.float64)


def optimise_dp(
    model,
    schedule: NoiseSchedule,
    K: int,
    data: torch.Tensor,
    grid: torch.Tensor | None = None,
    grid_size: int = 200,
    n_mc: int = 2048,
    seed: int = 0,
) -> ScheduleResult:
    """Exact minimiser of the Monte-Carlo discretisation loss over ``grid`` (decreasing times)."""
    grid = candidate_grid(schedule, grid_size) if grid is None else torch.as_tensor(grid, dtype=torch.float64)
    errors = grid_errors(model, schedule, grid, data, n_mc, seed)
    path, value = min_cost_path(pair_costs(schedule, grid, errors), K)
    return ScheduleResult(grid[path], value, [{"grid_points": len(grid)}])


class CumulativeSoftmax(torch.nn.Module):
    """Strictly decreasing times from K free logits: t_i = t_first - (t_first - t_last) sum_{j<i} softmax(z)_j."""

    def __init__(self, times: torch.Tensor):
        super().__init__()
        times = torch.as_tensor(times, dtype=torch.float64)
        if (times[1:] >= times[:-1]).any():
            raise FewstepError("initial schedule must be strictly decreasing")
        self.t_first, self.t_last = float(times[0]), float(times[-1])
        gaps = (times[:-1] - times[1:]) / (self.t_first - self.t_last)
        self.logits = torch.nn.Parameter(gaps.log())

    def forward(self) -> torch.Tensor:
        frac = torch.cumsum(torch.softmax(self.logits, 0), 0)
        inner = self.t_first - (self.t_first - self.t_last) * frac[:-1]
        ends = self.logits.new_tensor
        return torch.cat([ends([self.t_first]), inner, ends([self.t_last])])


def optimise_adam(
    model,
    schedule: NoiseSchedule,
    init_times: torch.Tensor,
    data: torch.Tensor,
    metric: Callable[[torch.Tensor], float] | None = None,
    steps: int = 300,
    lr: float = 0.05,
    batch_size: int = 512,
    eval_every: int = 25,
    patience: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> ScheduleResult:
    """Adam on the cumulative-softmax logits, early-stopped on a held-out ``metric`` when given."""
    param = CumulativeSoftmax(init_times)
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    trainable = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    dtype = next(model.parameters()).dtype
    history, best, best_times, waited = [], float("inf"), param().detach().clone(), 0
    for step in progress_bar(range(steps + 1), enabled=progress, desc="schedule (Adam)", leave=False):
        if step % eval_every == 0 or step == steps:
            times = param().detach().clone()
            score = metric(times) if metric is not None else float("nan")
            history.append({"step": step, "metric": score, "times": times.tolist()})
            if metric is not None:
                if score < best:
                    best, best_times, waited = score, times, 0
                else:
                    waited += 1
                    if waited >= patience:
                        break
            else:
                best_times = times
        if step == steps:
            break
        x0 = data[torch.randint(0, len(data), (batch_size,), generator=gen)].to(dtype)
        eps = torch.randn(x0.shape, generator=gen, dtype=dtype)
        loss = discretisation_loss(model, schedule, param(), x0, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history[-1].setdefault("loss", float(loss.detach()))
    for p, flag in zip(model.parameters(), trainable):
        p.requires_grad_(flag)
    return ScheduleResult(best_times, best if metric is not None else float("nan"), history)
