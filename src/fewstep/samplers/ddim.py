"""DDIM (Song et al. 2021) and the generalised Gaussian step that FastDPM and Analytic-DPM reuse.

A step from signal level ``alpha_bar`` (model time t) to ``alpha_bar_next`` is DDIM's eq. 12:

    x_next = sqrt(ab_next) x0_hat + sqrt(1 - ab_next - lambda^2) eps_theta(x, t) + sigma z,
    x0_hat = (x - sqrt(1 - ab) eps_theta(x, t)) / sqrt(ab),

so a = sqrt(ab_next / ab) and b = sqrt(1 - ab_next - lambda^2) - sqrt(ab_next (1 - ab) / ab).
``lambda`` is the std of the non-Markovian forward posterior q_lambda(x_next | x, x0) that fixes
the mean; ``sigma`` the std actually used for sampling. DDIM uses sigma = lambda =
eta * sigma_tilde with sigma_tilde^2 = (1 - ab_next)/(1 - ab) (1 - ab/ab_next) (eq. 16); eta = 1
is ancestral DDPM on the same steps, eta = 0 the deterministic (probability-flow) sampler.
Analytic-DPM keeps lambda and replaces sigma by its optimal value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FewstepError
from ..fields import opt
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .spacings import alpha_bar_at


@dataclass
class DDIMSettings:
    eta: float = opt(
        0.0,
        "DDIM stochasticity (0: deterministic probability-flow sampler, 1: ancestral DDPM on the same steps)",
        min=0.0,
    )


def step_levels(schedule: NoiseSchedule, timesteps, final_alpha_bar: float = 1.0):
    """Increasing model times, their signal levels, and the level each step moves to.

    ``timesteps`` increase (data end first); the step at ``timesteps[i]`` moves to the level of
    ``timesteps[i - 1]``, and the one at ``timesteps[0]`` to ``final_alpha_bar`` (1 = clean data).
    """
    t = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
    if len(t) == 0 or (t[1:] <= t[:-1]).any():
        raise FewstepError(f"time-steps must be a non-empty strictly increasing list, got {t.tolist()}")
    if t[0] < 0 or t[-1] > schedule.T - 1:
        raise FewstepError(f"time-steps must lie in [0, {schedule.T - 1}], got {t.tolist()}")
    alpha_bar = alpha_bar_at(schedule, t)
    if not (alpha_bar[0] <= final_alpha_bar <= 1.0):
        raise FewstepError(f"final signal level {final_alpha_bar} must lie in [alpha_bar(t_0), 1]")
    alpha_bar_next = torch.cat([torch.tensor([final_alpha_bar], dtype=torch.float64), alpha_bar[:-1]])
    return t, alpha_bar, alpha_bar_next


def posterior_std(alpha_bar: torch.Tensor, alpha_bar_next: torch.Tensor) -> torch.Tensor:
    """sigma_tilde: std of q(x_next | x, x0) for the Markov (DDPM) forward process (DDIM eq. 16, eta = 1)."""
    return ((1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next)).clamp(min=0).sqrt()


def last_step_std(alpha_bar: torch.Tensor, alpha_bar_next: torch.Tensor) -> float:
    """The std of the DDPM step (Sigma = beta') from the first increasing level to the next: the
    noise a sampler adds at its last step with ``noise_at_last_step``."""
    return float((1 - alpha_bar[0] / alpha_bar_next[0]).clamp(min=0).sqrt())


def generalized_table(
    name: str,
    t,
    alpha_bar,
    alpha_bar_next,
    mean_std,
    std,
    settings: dict,
    noise_at_last_step: bool = False,
    clip_x0: float | None = None,
) -> StepTable:
    """The table of DDIM's eq. 12 with mean from ``mean_std`` (lambda) and noise ``std`` (sigma).

    Inputs are in increasing-time order; the table runs them in reverse (noise to data). With
    ``noise_at_last_step`` a deterministic last step gets the std of the DDPM step it replaces.
    """
    a = (alpha_bar_next / alpha_bar).sqrt()
    direction = (1 - alpha_bar_next - mean_std**2).clamp(min=0).sqrt()
    b = direction - (alpha_bar_next * (1 - alpha_bar) / alpha_bar).sqrt()
    std = torch.as_tensor(std, dtype=torch.float64).clone()
    if noise_at_last_step and std[0] == 0:
        std[0] = last_step_std(alpha_bar, alpha_bar_next)

    def flip(v) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float64).flip(0).clone()

    settings = {**settings, "noise_at_last_step": bool(noise_at_last_step)}
    return StepTable(
        name=name,
        t=flip(t),
        a=flip(a),
        b=flip(b),
        s=flip(std),
        alpha_bar=flip(alpha_bar),
        clip_x0=clip_x0,
        settings=settings,
    )


def ddim_table(
    schedule: NoiseSchedule,
    timesteps,
    eta: float = 0.0,
    final_alpha_bar: float = 1.0,
    noise_at_last_step: bool = False,
    clip_x0: float | None = None,
) -> StepTable:
    """DDIM on increasing model times ``timesteps`` (integers or floats) with stochasticity ``eta``.

    ``final_alpha_bar`` is the level the last step lands on: 1 (clean data, diffusers'
    ``set_alpha_to_one=True``) or e.g. ``alpha_bar[0]``.
    """
    if eta < 0:
        raise FewstepError(f"DDIM eta must be >= 0, got {eta}")
    t, ab, ab_next = step_levels(schedule, timesteps, final_alpha_bar)
    sigma = eta * posterior_std(ab, ab_next)
    settings = {"timesteps": t.tolist(), "eta": float(eta), "final_alpha_bar": float(final_alpha_bar)}
    return generalized_table("ddim", t, ab, ab_next, sigma, sigma, settings, noise_at_last_step, clip_x0)
