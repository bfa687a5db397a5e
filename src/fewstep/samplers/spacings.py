"""Time-step spacings, and the continuous model time of a discrete schedule.

Every spacing returns ``K`` model times as an *increasing* float64 tensor in ``[t_min, t_max]``
(the convention of :func:`fewstep.steps.ddpm_table`; step tables run them in reverse, from noise
to data). Model time ``t`` has signal level ``alpha_bar_at(schedule, t)``: at integer ``t`` this
is ``schedule.alpha_bar[t]`` (diffusers indexing) and between integers ``log alpha_bar`` is
interpolated linearly, with ``alpha_bar(-1) = 1`` (clean data). The MLP epsilon-model takes
float time, so continuous times can be fed to it directly (FastDPM's VAR, log-SNR and Karras
spacings produce them).

Spacings (K steps, endpoints included):

* ``time_uniform``: t_i = t_min + i (t_max - t_min) / (K - 1)        (DDIM "linear")
* ``time_quadratic``: t_i = t_min + (i / (K - 1))^2 (t_max - t_min)   (DDIM "quadratic", Song et al. 2021)
* ``logsnr_uniform``: log-SNR uniform between the endpoints        (DPM-Solver, Lu et al. 2022, Sec. 3.3)
* ``karras``: sigma_i = (sigma_max^(1/rho) + i/(K-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
  sigma = sqrt((1 - alpha_bar) / alpha_bar), rho = 7 (EDM, Karras et al. 2022, eq. 5)
"""

from __future__ import annotations

import torch

from ..errors import FewstepError
from ..schedules import NoiseSchedule

SPACINGS = ("uniform", "quadratic", "logsnr", "karras")


def _log_alpha_bar_grid(schedule: NoiseSchedule) -> torch.Tensor:
    """log alpha_bar at model times -1, 0, ..., T-1 (time -1 is clean data, log 1 = 0)."""
    return torch.cat([torch.zeros(1, dtype=torch.float64), schedule.alpha_bar.log()])


def alpha_bar_at(schedule: NoiseSchedule, t: torch.Tensor | float) -> torch.Tensor:
    """alpha_bar at (possibly non-integer) model times ``t`` in [-1, T-1], log-linear between integers."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if (t < -1).any() or (t > schedule.T - 1).any():
        raise FewstepError(f"model times must lie in [-1, {schedule.T - 1}], got {t.min().item()}..{t.max().item()}")
    grid = _log_alpha_bar_grid(schedule)
    pos = t + 1.0
    lo = pos.floor().long().clamp(max=schedule.T - 1)
    frac = pos - lo
    hi = (lo + 1).clamp(max=schedule.T)
    return (grid[lo] * (1 - frac) + grid[hi] * frac).exp()


def time_at_alpha_bar(schedule: NoiseSchedule, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """The inverse of :func:`alpha_bar_at`: model times in [-1, T-1] with the given signal levels."""
    target = -torch.as_tensor(alpha_bar, dtype=torch.float64).log()
    grid = -_log_alpha_bar_grid(schedule)  # increasing from 0
    if (target < grid[0] - 1e-12).any() or (target > grid[-1] + 1e-9).any():
        raise FewstepError("signal level outside the range of the noise schedule")
    target = target.clamp(grid[0], grid[-1])
    hi = torch.searchsorted(grid, target).clamp(1, len(grid) - 1)
    lo = hi - 1
    frac = (target - grid[lo]) / (grid[hi] - grid[lo])
    return lo.to(torch.float64) + frac - 1.0


def _check(schedule: NoiseSchedule, K: int, t_min: float, t_max: float | None) -> float:
    t_max = float(schedule.T - 1) if t_max is None else float(t_max)
    if K < 1:
        raise FewstepError(f"a spacing needs K >= 1 steps, got {K}")
    if not (0 <= t_min < t_max <= schedule.T - 1) and not (K == 1 and t_min <= t_max):
        raise FewstepError(
            f"spacing endpoints must satisfy 0 <= t_min < t_max <= {schedule.T - 1}, got {t_min}, {t_max}"
        )
    return t_max


def _fractions(K: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, K, dtype=torch.float64) if K > 1 else torch.ones(1, dtype=torch.float64)


def time_uniform(schedule: NoiseSchedule, K: int, t_min: float = 0.0, t_max: float | None = None) -> torch.Tensor:
    """K model times uniform in time."""
    t_max = _check(schedule, K, t_min, t_max)
    return t_min + _fractions(K) * (t_max - t_min)


def time_quadratic(schedule: NoiseSchedule, K: int, t_min: float = 0.0, t_max: float | None = None) -> torch.Tensor:
    """K model times quadratic in the step index (dense near the data end)."""
    t_max = _check(schedule, K, t_min, t_max)
    return t_min + _fractions(K) ** 2 * (t_max - t_min)


def logsnr_uniform(schedule: NoiseSchedule, K: int, t_min: float = 0.0, t_max: float | None = None) -> torch.Tensor:
    """K model times uniform in lambda = log sqrt(SNR) = log(alpha / sigma)."""
    t_max = _check(schedule, K, t_min, t_max)
    ab = alpha_bar_at(schedule, torch.tensor([t_min, t_max]))
    lam = 0.5 * (ab / (1 - ab)).log()
    lams = lam[0] + _fractions(K) * (lam[1] - lam[0])
    t = time_at_alpha_bar(schedule, torch.sigmoid(2 * lams))
    t[0], t[-1] = t_min, t_max  # exact endpoints despite round-off
    return t


def karras(
    schedule: NoiseSchedule, K: int, t_min: float = 0.0, t_max: float | None = None, rho: float = 7.0
) -> torch.Tensor:
    """K model times whose sigma = sqrt((1 - ab) / ab) follow EDM's rho-spacing (eq. 5 of Karras et al.)."""
    t_max = _check(schedule, K, t_min, t_max)
    ab = alpha_bar_at(schedule, torch.tensor([t_min, t_max]))
    sigma = ((1 - ab) / ab).sqrt()
    inv = sigma ** (1.0 / rho)
    sigmas = (inv[0] + _fractions(K) * (inv[1] - inv[0])) ** rho  # increasing from sigma_min
    t = time_at_alpha_bar(schedule, 1.0 / (1.0 + sigmas**2))
    t[0], t[-1] = t_min, t_max
    return t


def spacing(
    name: str, schedule: NoiseSchedule, K: int, t_min: float = 0.0, t_max: float | None = None, integer: bool = False
) -> torch.Tensor:
    """The named spacing; ``integer`` rounds to distinct integer times (for integer-time samplers)."""
    makers = {"uniform": time_uniform, "quadratic": time_quadratic, "logsnr": logsnr_uniform, "karras": karras}
    if name not in makers:
        raise FewstepError(f"unknown spacing {name!r}; choose one of {', '.join(SPACINGS)}")
    t = makers[name](schedule, K, t_min, t_max)
    if integer:
        t = round_distinct(t)
    return t


def round_distinct(t: torch.Tensor) -> torch.Tensor:
    """Round increasing times to integers, nudging collisions upward so they stay strictly increasing."""
    out = t.round().to(torch.float64).clone()
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + 1
    if len(out) and out[-1] > t[-1].round():
        raise FewstepError(f"cannot place {len(t)} distinct integer steps in [{t[0].item()}, {t[-1].item()}]")
    return out
