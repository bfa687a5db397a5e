"""Noise schedules of the forward process (paper eq. 1-2), computed in float64.

Indexing follows diffusers: ``beta[i]`` for ``i = 0..T-1`` is the paper's beta_{i+1}, so
``alpha_bar[i]`` is the signal level of the model input at time-step ``i`` and the model is
trained with time input ``i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import FewstepError

SCHEDULES = ("linear", "cosine", "sigmoid")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete forward process q(x_{i+1} | x_i) = N(sqrt(1 - beta) x_i, beta I).

    All tensors are float64 of length T. ``posterior_*`` are the coefficients of
    mu_tilde in eq. 2 for the step from level ``i`` to level ``i-1`` (level -1 is clean data):
    mu_tilde = posterior_x0_coef[i] * x0 + posterior_xt_coef[i] * x_i, variance beta_tilde[i].
    """

    name: str
    beta: torch.Tensor

    @property
    def T(self) -> int:
        return int(self.beta.shape[0])

    @property
    def alpha(self) -> torch.Tensor:
        return 1.0 - self.beta

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alpha, dim=0)

    @property
    def alpha_bar_prev(self) -> torch.Tensor:
        """alpha_bar one level lower, with alpha_bar_prev[0] = 1 (clean data)."""
        return torch.cat([self.beta.new_ones(1), self.alpha_bar[:-1]])

    @property
    def beta_tilde(self) -> torch.Tensor:
        """Posterior variance of eq. 2: (1 - alpha_bar_prev) / (1 - alpha_bar) * beta."""
        return (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar) * self.beta

    @property
    def posterior_x0_coef(self) -> torch.Tensor:
        return self.alpha_bar_prev.sqrt() * self.beta / (1.0 - self.alpha_bar)

    @property
    def posterior_xt_coef(self) -> torch.Tensor:
        return self.alpha.sqrt() * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each level."""
        return self.alpha_bar / (1.0 - self.alpha_bar)


def linear_betas(T: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020): beta linear from 1e-4 to 0.02 (diffusers' ``linear``, for any T)."""
    return torch.linspace(start, end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol and Dhariwal (2021): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) * pi/2)."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1.0 - f[1:] / f[:-1]).clamp(max=max_beta)


def sigmoid_betas(T: int, low: float = 1e-5, high: float = 1e-2) -> torch.Tensor:
    """The toy schedule of the SFT-PG paper: sigmoid(linspace(-6, 6, T)) * (high - low) + low."""
    return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (high - low) + low


def make_schedule(name: str, T: int) -> NoiseSchedule:
    """The named schedule with T steps (``linear``, ``cosine`` or ``sigmoid``)."""
    if T < 1:
        raise FewstepError(f"schedule T must be >= 1, got {T}")
    makers = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}
    if name == "diffusers":
        raise FewstepError("a diffusers schedule comes with its model; load the model to get it")
    if name not in makers:
        raise FewstepError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return NoiseSchedule(name, makers[name](T))


def schedule_from_alpha_bar(name: str, alpha_bar: torch.Tensor) -> NoiseSchedule:
    """The schedule whose cumulative product is ``alpha_bar`` (used to respace a sub-sequence)."""
    alpha_bar = alpha_bar.to(torch.float64)
    prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return NoiseSchedule(name, 1.0 - alpha_bar / prev)
