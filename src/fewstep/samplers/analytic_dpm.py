"""Analytic-DPM (Bao et al. 2022): the optimal reverse variance, estimated by Monte Carlo.

For a step from level ab_n to ab_s with the forward posterior q_lambda(x_s | x_n, x0) of DDIM's
eq. 12 (std lambda_n; lambda = sigma_tilde is DDPM, lambda = 0 is DDIM), Theorem 1 gives the
KL-optimal Gaussian reverse variance

    sigma*_n^2 = lambda_n^2 + gamma_n^2 (1 - ab_n) / ab_n * (1 - Gamma_n),
    gamma_n = sqrt(ab_s) - sqrt(1 - ab_s - lambda_n^2) sqrt(ab_n / (1 - ab_n)),
    Gamma_n = E_{q(x_n)} ||eps_theta(x_n, n)||^2 / d,

with the mean of eq. 12 unchanged. Gamma_n is estimated on training data (x_n = sqrt(ab_n) x0 +
sqrt(1 - ab_n) eps) and clamped to [0, 1], which keeps sigma*^2 within the paper's bounds
[lambda^2, lambda^2 + gamma^2 (1 - ab)/ab] (its Theorem 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FewstepError
from ..fields import opt
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .ddim import generalized_table, posterior_std, step_levels
from .spacings import alpha_bar_at

MEANS = ("ddpm", "ddim")


@dataclass
class AnalyticDPMSettings:
    mean: str = opt("ddpm", "mean of the step: ddpm (Markov posterior) or ddim (lambda = 0)", choices=MEANS)
    gamma: list[float] | None = opt(
        None,
        "Gamma_n per step (increasing time); null = estimate it on the training "
        "data with the model (fewstep.samplers.estimate_gamma)",
        min=0.0,
    )
    n_samples: int = opt(2048, "training points of the Monte-Carlo estimate of Gamma_n", min=1)


@torch.no_grad()
def estimate_gamma(
    model,
    schedule: NoiseSchedule,
    timesteps,
    data: torch.Tensor,
    n_samples: int = 2048,
    seed: int = 0,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Gamma_n = E ||eps_theta(x_n, t_n)||^2 / d at each of ``timesteps``, by Monte Carlo on ``data``."""
    t = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
    gen = torch.Generator().manual_seed(seed)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dtype = param.dtype if param is not None else data.dtype
    device = param.device if param is not None else data.device
    out = torch.empty(len(t), dtype=torch.float64)
    for j, tj in enumerate(t):
        ab = float(alpha_bar_at(schedule, tj))
        total, count = 0.0, 0
        for start in range(0, n_samples, batch_size):
            m = min(batch_size, n_samples - start)
            x0 = data[torch.randint(0, len(data), (m,), generator=gen)].to(device=device, dtype=dtype)
            eps = torch.randn(x0.shape, generator=gen).to(device=device, dtype=dtype)
            x = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
            pred = model(x, torch.full((m,), float(tj), dtype=dtype, device=device))
            total += float(pred.double().pow(2).flatten(1).mean(1).sum())
            count += m
        out[j] = total / count
    return out


def analytic_dpm_table(
    schedule: NoiseSchedule,
    timesteps,
    gamma: torch.Tensor,
    mean: str = "ddpm",
    noise_at_last_step: bool = False,
    clip_x0: float | None = None,
) -> StepTable:
    """The Analytic-DPM table on increasing ``timesteps`` given Gamma_n (from :func:`estimate_gamma`).

    ``mean`` picks lambda (``ddpm``: sigma_tilde, ``ddim``: 0). Without ``noise_at_last_step`` the
    step to clean data is deterministic, as in the paper's samplers.
    """
    if mean not in MEANS:
        raise FewstepError(f"unknown Analytic-DPM mean {mean!r}; choose one of {', '.join(MEANS)}")
    t, ab, ab_next = step_levels(schedule, timesteps)
    gamma = torch.as_tensor(gamma, dtype=torch.float64).flatten()
    if gamma.shape != t.shape:
        raise FewstepError(f"got {len(gamma)} Gamma values for {len(t)} time-steps")
    lam = posterior_std(ab, ab_next) if mean == "ddpm" else torch.zeros_like(ab)
    coef = ab_next.sqrt() - (1 - ab_next - lam**2).clamp(min=0).sqrt() * (ab / (1 - ab)).sqrt()
    var = lam**2 + coef**2 * (1 - ab) / ab * (1 - gamma.clamp(0, 1))
    std = var.sqrt()
    if not noise_at_last_step:
        std[0] = 0.0  # the step to clean data is deterministic in the paper's samplers
    settings = {"timesteps": t.tolist(), "mean": mean, "gamma": gamma.tolist()}
    return generalized_table("analytic_dpm", t, ab, ab_next, lam, std, settings, noise_at_last_step, clip_x0)


def analytic_dpm_from_data(
    model,
    schedule: NoiseSchedule,
    timesteps,
    data: torch.Tensor,
    mean: str = "ddpm",
    n_samples: int = 2048,
    seed: int = 0,
    noise_at_last_step: bool = False,
) -> StepTable:
    """Estimate Gamma_n on ``data`` with ``model`` and build the table."""
    gamma = estimate_gamma(model, schedule, timesteps, data, n_samples, seed)
    return analytic_dpm_table(schedule, timesteps, gamma, mean, noise_at_last_step)
