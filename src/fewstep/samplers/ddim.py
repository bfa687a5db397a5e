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

import torch

from ..errors import FewstepError
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .spacings import alpha_bar_at


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


def generalized_table(name: str, t, alpha_bar, alpha_bar_next, mean_std, std, settings: dict) -> StepTable:
    """The table of DDIM's eq. 12 with mean from ``mean_std`` (lambda) and noise ``std`` (sigma).

    Inputs are in increasing-time order; the table runs them in reverse (noise to data).
    """
    a = (alpha_bar_next / alpha_bar).sqrt()
    direction = (1 - alpha_bar_next - mean_std**2).clamp(min=0).sqrt()
    b = direction - (alpha_bar_next * (1 - alpha_bar) / alpha_bar).sqrt()
    flip = lambda v: torch.as_tensor(v, dtype=torch.float64).flip(0).clone()  # noqa: E731
    return StepTable(name=name, t=flip(t), a=flip(a), b=flip(b), s=flip(std), alpha_bar=flip(alpha_bar), settings=settings)


def ddim_table(schedule: NoiseSchedule, timesteps, eta: float = 0.0, final_alpha_bar: float = 1.0) -> StepTable:
    """DDIM on increasing model times ``timesteps`` (integers or floats) with stochasticity ``eta``.

    ``final_alpha_bar`` is the level the last step lands on: 1 (clean data, diffusers'
    ``set_alpha_to_one=True``) or e.g. ``alpha_bar[0]``.
    """
    if eta < 0:
        raise FewstepError(f"DDIM eta must be >= 0, got {eta}")
    t, ab, ab_next = step_levels(schedule, timesteps, final_alpha_bar)
    sigma = eta * posterior_std(ab, ab_next)
    settings = {"timesteps": t.tolist(), "eta": float(eta), "final_alpha_bar": float(final_alpha_bar)}
    return generalized_table("ddim", t, ab, ab_next, sigma, sigma, settings)
