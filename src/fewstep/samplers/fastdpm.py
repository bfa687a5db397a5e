"""FastDPM (Kong and Ping 2021, "On Fast Sampling of Diffusion Probabilistic Models").

FastDPM picks K reverse steps in one of two ways (Sec. 4.1-4.2):

* **STEP**: a sub-sequence of the T integer steps, linear (tau_i = round(i (T-1)/(K-1))) or
  quadratic (tau_i = round(c i^2), c chosen so tau_{K-1} = 0.8 T, the DDIM/FastDPM choice).
* **VAR**: a short variance schedule beta_hat_1..K (linear, or quadratic = linear in sqrt(beta)),
  whose cumulative products gamma_bar_i = prod_{j<=i} (1 - beta_hat_j) are mapped to continuous
  model times t_i with alpha_bar(t_i) = gamma_bar_i (Sec. 4.2; FastDPM bisects the continuous
  extension of the linear schedule's product, this project interpolates log alpha_bar, see
  :func:`fewstep.samplers.spacings.alpha_bar_at`). This project picks beta_hat_1 = beta_1 and
  the last beta_hat by bisection so that gamma_bar_K = alpha_bar(T-1): the sampler starts at the
  model's terminal noise level.

The reverse process (Sec. 4.3) is DDPM-rev (posterior mean, std kappa * sigma_tilde) or DDIM-rev
(DDIM with eta = kappa); kappa = 0 gives the deterministic sampler in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FewstepError
from ..fields import opt
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .ddim import generalized_table, posterior_std, step_levels
from .spacings import round_distinct, time_at_alpha_bar

APPROACHES = ("STEP", "VAR")
SUB_SEQUENCES = ("linear", "quadratic")
REVERSE = ("ddpm", "ddim")


@dataclass
class FastDPMSettings:
    approach: str = opt(
        "STEP", "STEP (a sub-sequence of the T steps) or VAR (a short variance schedule)", choices=APPROACHES
    )
    schedule: str = opt(
        "linear", "the STEP sub-sequence or the VAR variance schedule: linear or quadratic", choices=SUB_SEQUENCES
    )
    kappa: float = opt(
        0.0,
        "noise scale of the reverse process (0: deterministic, 1: full; the paper's fine-tuning "
        "initialisation uses 1 with reverse ddpm)",
        min=0.0,
        max=1.0,
    )
    reverse: str = opt("ddim", "reverse process: ddpm (posterior mean) or ddim (eta = kappa)", choices=REVERSE)


def step_subsequence(schedule: NoiseSchedule, K: int, kind: str = "linear") -> torch.Tensor:
    """FastDPM STEP: K increasing integer steps of [0, T-1] (linear or quadratic)."""
    T = schedule.T
    if K < 1 or K > T:
        raise FewstepError(f"FastDPM STEP needs 1 <= K <= T={T}, got K={K}")
    i = torch.arange(K, dtype=torch.float64)
    if kind == "linear":
        t = i * (T - 1) / max(K - 1, 1)
    elif kind == "quadratic":
        t = i**2 * (0.8 * T) / max(K - 1, 1) ** 2
    else:
        raise FewstepError(f"unknown FastDPM sub-sequence {kind!r}; choose one of {', '.join(SUB_SEQUENCES)}")
    return round_distinct(t.clamp(max=T - 1))


def variance_schedule(schedule: NoiseSchedule, K: int, kind: str = "linear") -> torch.Tensor:
    """FastDPM VAR: K betas, linear or quadratic from beta_1, ending where gamma_bar_K = alpha_bar(T-1)."""
    if kind not in SUB_SEQUENCES:
        raise FewstepError(f"unknown FastDPM variance schedule {kind!r}; choose one of {', '.join(SUB_SEQUENCES)}")
    start = float(schedule.beta[0])
    target = float(schedule.alpha_bar[-1].log())

    def betas(end: float) -> torch.Tensor:
        if kind == "linear":
            return torch.linspace(start, end, K, dtype=torch.float64)
        return torch.linspace(start**0.5, end**0.5, K, dtype=torch.float64) ** 2

    if K == 1:
        return torch.tensor([1 - float(schedule.alpha_bar[-1])], dtype=torch.float64)
    lo, hi = start, 1.0 - 1e-12
    if float(torch.log1p(-betas(lo)).sum()) < target:
        raise FewstepError(
            f"FastDPM VAR: {K} steps reach the terminal noise level with betas below beta_1; use fewer steps"
        )
    for _ in range(200):  # bisection on the last beta: log gamma_bar_K decreases with it
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(torch.log1p(-betas(mid)).sum()) > target else (lo, mid)
    return betas(0.5 * (lo + hi))


def var_times(schedule: NoiseSchedule, K: int, kind: str = "linear") -> torch.Tensor:
    """FastDPM VAR: the continuous model times of the K levels gamma_bar_i (increasing)."""
    gamma_bar = torch.cumprod(1 - variance_schedule(schedule, K, kind), 0)
    t = time_at_alpha_bar(schedule, gamma_bar).clamp(0, schedule.T - 1)
    t[-1] = schedule.T - 1
    if (t[1:] <= t[:-1]).any():
        raise FewstepError("FastDPM VAR produced non-increasing times (too many steps for the schedule)")
    return t


def fastdpm_table(
    schedule: NoiseSchedule,
    K: int,
    approach: str = "STEP",
    kind: str = "linear",
    kappa: float = 0.0,
    reverse: str = "ddim",
    noise_at_last_step: bool = False,
    clip_x0: float | None = None,
) -> StepTable:
    """The FastDPM sampler with K steps (see the module docstring for the options)."""
    if approach not in APPROACHES:
        raise FewstepError(f"unknown FastDPM approach {approach!r}; choose one of {', '.join(APPROACHES)}")
    if reverse not in REVERSE:
        raise FewstepError(f"unknown FastDPM reverse process {reverse!r}; choose one of {', '.join(REVERSE)}")
    if not 0.0 <= kappa <= 1.0:
        raise FewstepError(f"FastDPM kappa must lie in [0, 1], got {kappa}")
    times = step_subsequence(schedule, K, kind) if approach == "STEP" else var_times(schedule, K, kind)
    t, ab, ab_next = step_levels(schedule, times)
    sigma_tilde = posterior_std(ab, ab_next)
    mean_std = sigma_tilde if reverse == "ddpm" else kappa * sigma_tilde
    settings = {"timesteps": t.tolist(), "approach": approach, "kind": kind, "kappa": float(kappa), "reverse": reverse}
    return generalized_table(
        "fastdpm", t, ab, ab_next, mean_std, kappa * sigma_tilde, settings, noise_at_last_step, clip_x0
    )
