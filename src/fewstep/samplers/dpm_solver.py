"""DPM-Solver(2M) and DPM-Solver++(2M) (Lu et al. 2022a, 2022b), second-order multistep ODE solvers.

Notation: alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma) (half log-SNR).
A step goes from level s (the current input x, model time t_s) to level n, h = lambda_n - lambda_s,
and the previous step started from level p (input x_prev), r = (lambda_s - lambda_p) / h.

**DPM-Solver(2M)**, noise prediction (Lu et al. 2022b, Alg. 2 with eps in place of x0; diffusers
``algorithm_type="dpmsolver"``, midpoint):

    x_n = (alpha_n / alpha_s) x - sigma_n (e^h - 1) [(1 + 1/(2r)) eps_s - 1/(2r) eps_p],

a step-table row with a = alpha_n / alpha_s, b = -sigma_n (e^h - 1)(1 + 1/(2r)) and
c = sigma_n (e^h - 1) / (2r) multiplying eps_prev.

**DPM-Solver++(2M)**, data prediction (Lu et al. 2022b, Alg. 2; diffusers ``"dpmsolver++"``):

    x_n = (sigma_n / sigma_s) x + phi_n [(1 + 1/(2r)) x0_s - 1/(2r) x0_p],   phi_n = alpha_n (1 - e^-h),

with x0_s = (x - sigma_s eps_s) / alpha_s and x0_p = (x_prev - sigma_p eps_p) / alpha_p. Both
x0-predictions are linear in (x, eps, x_prev, eps_prev), so this is a step-table row too:
a = sigma_n / sigma_s + d0 / alpha_s, b = -d0 sigma_s / alpha_s, c = -d1 sigma_p / alpha_p and
d = d1 / alpha_p, with d0 = phi_n (1 + 1/(2r)) and d1 = -phi_n / (2r).

Steps are first order (r undefined) at the start, and at the end when the last step lands on data
(h infinite) or with ``lower_order_final`` (diffusers' default below 15 steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..fields import opt
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .ddim import step_levels


@dataclass
class DPMSolverSettings:
    lower_order_final: bool = opt(True, "first-order last step (diffusers' default for fewer than 15 steps)")


def _levels(schedule: NoiseSchedule, timesteps, final_alpha_bar: float):
    """Table-order (noise to data) times, alpha, sigma, lambda of each input and of each output level."""
    t, ab, ab_next = step_levels(schedule, timesteps, final_alpha_bar)
    t, ab, ab_next = t.flip(0), ab.flip(0), ab_next.flip(0)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    alpha_n, sigma_n = ab_next.sqrt(), (1 - ab_next).clamp(min=0).sqrt()
    lam = alpha.log() - sigma.log()
    return t, ab, alpha, sigma, lam, alpha_n, sigma_n


def _inv_2r(
    lam: torch.Tensor, alpha_n: torch.Tensor, sigma_n: torch.Tensor, lands_on_data: bool, lower_order_final: bool
) -> torch.Tensor:
    """1 / (2 r) = h / (2 h_prev) per step, 0 on first-order steps."""
    second = torch.ones(len(lam), dtype=torch.bool)
    second[0] = False
    if lands_on_data or lower_order_final:
        second[-1] = False
    lam_next = torch.where(second, alpha_n.log() - sigma_n.clamp(min=1e-300).log(), lam + 1)
    h = lam_next - lam
    h_prev = torch.cat([torch.ones(1, dtype=torch.float64), lam[1:] - lam[:-1]])
    return torch.where(second, h / (2 * h_prev), torch.zeros_like(h))


def _previous(v: torch.Tensor) -> torch.Tensor:
    """The value of the previous step (1 at step 0, where the multistep terms are zero anyway)."""
    return torch.cat([torch.ones(1, dtype=torch.float64), v[:-1]])


def dpm_solver_2m_table(
    schedule: NoiseSchedule, timesteps, final_alpha_bar: float = 1.0, lower_order_final: bool = True
) -> StepTable:
    """DPM-Solver(2M) (noise prediction) on increasing model times.

    ``final_alpha_bar`` = 1 lands on clean data (the last step is then the x0-prediction); diffusers'
    ``final_sigmas_type="sigma_min"`` corresponds to ``final_alpha_bar = alpha_bar[0]``.
    """
    t, ab, alpha, sigma, lam, alpha_n, sigma_n = _levels(schedule, timesteps, final_alpha_bar)
    inv_2r = _inv_2r(lam, alpha_n, sigma_n, final_alpha_bar >= 1.0, lower_order_final)
    first = alpha_n * sigma / alpha - sigma_n  # sigma_n (e^h - 1), finite also when sigma_n = 0
    settings = {
        "timesteps": t.flip(0).tolist(),
        "final_alpha_bar": float(final_alpha_bar),
        "lower_order_final": lower_order_final,
    }
    return StepTable(
        name="dpm_solver_2m",
        t=t,
        a=alpha_n / alpha,
        b=-first * (1 + inv_2r),
        c=first * inv_2r,
        s=torch.zeros_like(t),
        alpha_bar=ab,
        settings=settings,
    )


def dpm_solver_pp_2m_table(
    schedule: NoiseSchedule, timesteps, final_alpha_bar: float = 1.0, lower_order_final: bool = True
) -> StepTable:
    """DPM-Solver++(2M) (data prediction) on increasing model times, as a table with c and d columns."""
    t, ab, alpha, sigma, lam, alpha_n, sigma_n = _levels(schedule, timesteps, final_alpha_bar)
    inv_2r = _inv_2r(lam, alpha_n, sigma_n, final_alpha_bar >= 1.0, lower_order_final)
    phi = alpha_n - alpha * sigma_n / sigma  # alpha_n (1 - e^-h)
    d0, d1 = phi * (1 + inv_2r), -phi * inv_2r
    alpha_p, sigma_p = _previous(alpha), _previous(sigma)
    settings = {
        "timesteps": t.flip(0).tolist(),
        "final_alpha_bar": float(final_alpha_bar),
        "lower_order_final": lower_order_final,
    }
    return StepTable(
        name="dpm_solver_pp_2m",
        t=t,
        a=sigma_n / sigma + d0 / alpha,
        b=-d0 * sigma / alpha,
        c=-d1 * sigma_p / alpha_p,
        d=d1 / alpha_p,
        s=torch.zeros_like(t),
        alpha_bar=ab,
        settings=settings,
    )
