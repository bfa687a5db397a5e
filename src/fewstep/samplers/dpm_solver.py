"""DPM-Solver(2M) and DPM-Solver++(2M) (Lu et al. 2022a, 2022b), second-order multistep ODE solvers.

Notation: alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma) (half log-SNR).
A step goes from level s (the current input, model time t_s) to level n, h = lambda_n - lambda_s,
and the previous step started from level p, r = (lambda_s - lambda_p) / h.

**DPM-Solver(2M)**, noise prediction (Lu et al. 2022b, Alg. 2 with eps in place of x0; diffusers
``algorithm_type="dpmsolver"``, midpoint):

    x_n = (alpha_n / alpha_s) x - sigma_n (e^h - 1) [(1 + 1/(2r)) eps_s - 1/(2r) eps_p],

which is exactly a step-table row: a = alpha_n / alpha_s, b = -sigma_n (e^h - 1)(1 + 1/(2r)),
c = sigma_n (e^h - 1) / (2r) multiplying eps_prev (first-order steps have c = 0).

**DPM-Solver++(2M)**, data prediction (Lu et al. 2022b, Alg. 2; diffusers ``"dpmsolver++"``):

    x_n = (sigma_n / sigma_s) x + phi_n [(1 + 1/(2r)) x0_s - 1/(2r) x0_p],   phi_n = alpha_n (1 - e^-h),
    x0_s = (x - sigma_s eps_s) / alpha_s.

Substituting x0_s gives the a and b columns, but x0_p = (x_p - sigma_p eps_p) / alpha_p involves
the *previous input* x_p, not only eps_prev; x_p is itself a combination of every earlier model
output, so DPM-Solver++(2M) is not a table with one eps_prev column. It is therefore given as
coefficients in the x0 form (:func:`dpm_solver_pp_2m_coefficients`) and run by
:func:`dpm_solver_pp_2m_sample` (deterministic; nothing to score).
"""
from __future__ import annotations

import torch

from ..schedules import NoiseSchedule
from ..steps import StepTable
from .ddim import step_levels


def _levels(schedule: NoiseSchedule, timesteps, final_alpha_bar: float):
    """Table-order (noise to data) times, alpha, sigma, lambda of each input and of each output level."""
    t, ab, ab_next = step_levels(schedule, timesteps, final_alpha_bar)
    t, ab, ab_next = t.flip(0), ab.flip(0), ab_next.flip(0)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    alpha_n, sigma_n = ab_next.sqrt(), (1 - ab_next).clamp(min=0).sqrt()
    lam = alpha.log() - sigma.log()
    return t, ab, alpha, sigma, lam, alpha_n, sigma_n


def _inv_2r(lam: torch.Tensor, alpha_n: torch.Tensor, sigma_n: torch.Tensor, lands_on_data: bool,
            lower_order_final: bool) -> torch.Tensor:
    """1 / (2 r) = h / (2 h_prev) per step, 0 on first-order steps.

    Step 0 is first order (no history); so is the last one when it lands on data (h infinite) or
    with ``lower_order_final`` (diffusers' default for fewer than 15 steps).
    """
    second = torch.ones(len(lam), dtype=torch.bool)
    second[0] = False
    if lands_on_data or lower_order_final:
        second[-1] = False
    lam_next = torch.where(second, alpha_n.log() - sigma_n.clamp(min=1e-300).log(), lam + 1)
    h = lam_next - lam
    h_prev = torch.cat([torch.ones(1, dtype=torch.float64), lam[1:] - lam[:-1]])
    return torch.where(second, h / (2 * h_prev), torch.zeros_like(h))


def dpm_solver_2m_table(schedule: NoiseSchedule, timesteps, final_alpha_bar: float = 1.0,
                        lower_order_final: bool = True) -> StepTable:
    """DPM-Solver(2M) (noise prediction) on increasing model times, as a multistep step table.

    ``final_alpha_bar`` = 1 lands on clean data (the last step is then the x0-prediction); diffusers'
    ``final_sigmas_type="sigma_min"`` corresponds to ``final_alpha_bar = alpha_bar[0]``.
    """
    t, ab, alpha, sigma, lam, alpha_n, sigma_n = _levels(schedule, timesteps, final_alpha_bar)
    inv_2r = _inv_2r(lam, alpha_n, sigma_n, final_alpha_bar >= 1.0, lower_order_final)
    first = alpha_n * sigma / alpha - sigma_n  # sigma_n (e^h - 1), finite also when sigma_n = 0
    settings = {"timesteps": t.flip(0).tolist(), "final_alpha_bar": float(final_alpha_bar),
                "lower_order_final": lower_order_final}
    return StepTable(name="dpm_solver_2m", t=t, a=alpha_n / alpha, b=-first * (1 + inv_2r), c=first * inv_2r,
                     s=torch.zeros_like(t), alpha_bar=ab, settings=settings)


def dpm_solver_pp_2m_coefficients(schedule: NoiseSchedule, timesteps, final_alpha_bar: float = 1.0,
                                  lower_order_final: bool = True) -> dict[str, torch.Tensor]:
    """Per-step coefficients of DPM-Solver++(2M): x_n = a x + d0 x0_s + d1 x0_p (table order).

    Also returns ``t``, ``alpha`` and ``sigma`` of each step's input (to form x0_s from eps).
    """
    t, ab, alpha, sigma, lam, alpha_n, sigma_n = _levels(schedule, timesteps, final_alpha_bar)
    inv_2r = _inv_2r(lam, alpha_n, sigma_n, final_alpha_bar >= 1.0, lower_order_final)
    phi = alpha_n - alpha * sigma_n / sigma  # alpha_n (1 - e^-h)
    return {"t": t, "alpha": alpha, "sigma": sigma, "a": sigma_n / sigma, "d0": phi * (1 + inv_2r), "d1": -phi * inv_2r}


@torch.no_grad()
def dpm_solver_pp_2m_sample(model, schedule: NoiseSchedule, timesteps, x_T: torch.Tensor,
                            final_alpha_bar: float = 1.0, lower_order_final: bool = True) -> torch.Tensor:
    """Run DPM-Solver++(2M) from ``x_T`` [n, *shape] on increasing ``timesteps``; return x_0."""
    co = dpm_solver_pp_2m_coefficients(schedule, timesteps, final_alpha_bar, lower_order_final)
    x, x0_prev = x_T, None
    for k in range(len(co["t"])):
        eps = model(x, torch.full((x.shape[0],), float(co["t"][k]), dtype=x.dtype, device=x.device))
        x0 = (x - float(co["sigma"][k]) * eps) / float(co["alpha"][k])
        x_new = float(co["a"][k]) * x + float(co["d0"][k]) * x0
        if float(co["d1"][k]) != 0.0:
            x_new = x_new + float(co["d1"][k]) * x0_prev
        x, x0_prev = x_new, x0
    return x
