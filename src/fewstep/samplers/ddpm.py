"""Ancestral DDPM (Ho et al. 2020) on all T steps or on a sub-sequence, and the policy-gradient-ready table.

On an increasing sub-sequence tau the betas are respaced from alpha_bar: beta'_k = 1 -
alpha_bar[tau_k] / alpha_bar[tau_{k-1}] (alpha_bar before the first element is 1), which is what
diffusers' DDPMScheduler does with custom time-steps. The mean is mu_theta = (x - beta' /
sqrt(1 - alpha_bar) eps) / sqrt(1 - beta'), the eps form of eq. 2's posterior mean, and the
variance Sigma = beta' I or beta_tilde' I (eq. 3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import FewstepError
from ..fields import opt
from ..schedules import NoiseSchedule, schedule_from_alpha_bar
from ..steps import StepTable

VARIANCES = ("beta", "beta_tilde")


@dataclass
class DDPMSettings:
    variance: str = opt(
        "beta",
        "step variance Sigma of eq. 3: beta (the paper's toys; diffusers' fixed_large) or "
        "beta_tilde (the posterior variance; diffusers' fixed_small)",
        choices=VARIANCES,
    )


def ddpm_table(
    schedule: NoiseSchedule,
    timesteps=None,
    variance: str = "beta",
    noise_at_last_step: bool = False,
    clip_x0: float | None = None,
) -> StepTable:
    """Ancestral DDPM on all T steps (``timesteps=None``) or on increasing integer ``timesteps``.

    Ho et al. add no noise at the last step; ``noise_at_last_step`` keeps the variance's own value
    there (sqrt(beta') with ``beta``; 0 with ``beta_tilde``, as diffusers' fixed_small). Policy
    gradient needs noise at every step: :func:`for_policy_gradient` adds it where it is missing.
    ``clip_x0`` is diffusers' ``clip_sample_range`` (None: no clipping).
    """
    if variance not in VARIANCES:
        raise FewstepError(f"unknown DDPM variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    tau = torch.arange(schedule.T) if timesteps is None else torch.as_tensor(timesteps, dtype=torch.float64)
    if tau.ndim != 1 or len(tau) == 0:
        raise FewstepError("DDPM time-steps must be a non-empty list of integers")
    if (tau != tau.round()).any():
        raise FewstepError(f"DDPM time-steps must be integers, got {tau.tolist()}")
    tau = tau.long()
    if (tau[1:] <= tau[:-1]).any() or tau[0] < 0 or tau[-1] >= schedule.T:
        raise FewstepError(f"DDPM time-steps must increase strictly within [0, {schedule.T - 1}], got {tau.tolist()}")
    table = ddpm_on_levels(schedule.alpha_bar[tau], tau.to(torch.float64), variance, noise_at_last_step, clip_x0)
    return dataclasses.replace(table, settings={**table.settings, "timesteps": tau.tolist()})


def ddpm_on_levels(
    alpha_bar: torch.Tensor,
    model_times: torch.Tensor,
    variance: str = "beta",
    noise_at_last_step: bool = False,
    clip_x0: float | None = None,
) -> StepTable:
    """Ancestral DDPM steps between noise levels ``alpha_bar`` (decreasing values), the model
    evaluated at ``model_times`` (integer or continuous); both given increasing in time."""
    sub = schedule_from_alpha_bar("levels", alpha_bar)
    std = (sub.beta if variance == "beta" else sub.beta_tilde).sqrt()
    if not noise_at_last_step:
        std = torch.cat([std.new_zeros(1), std[1:]])
    a = 1.0 / sub.alpha.sqrt()
    b = -sub.beta / ((1.0 - sub.alpha_bar).sqrt() * sub.alpha.sqrt())

    def flip(v: torch.Tensor) -> torch.Tensor:  # the table runs from noise to data
        return v.to(torch.float64).flip(0).clone()

    return StepTable(
        name="ddpm",
        t=flip(model_times),
        a=flip(a),
        b=flip(b),
        s=flip(std),
        alpha_bar=flip(sub.alpha_bar),
        clip_x0=clip_x0,
        settings={"variance": variance, "noise_at_last_step": noise_at_last_step},
    )


def as_ddpm(table: StepTable, variance: str = "beta", noise_at_last_step: bool = True) -> StepTable:
    """Ancestral DDPM on the same noise levels and model times as ``table``."""
    out = ddpm_on_levels(table.alpha_bar.flip(0), table.t.flip(0), variance, noise_at_last_step, table.clip_x0)
    return dataclasses.replace(out, settings={**out.settings, "from": table.name})


def for_policy_gradient(table: StepTable) -> StepTable:
    """``table`` made ready for policy-gradient fine-tuning, which needs a Gaussian density at every step.

    * A first-order table whose steps are all stochastic is returned as it is.
    * A first-order table whose only deterministic step is the last one (FastDPM and Analytic-DPM
      with their DDPM reverse process, DDPM as Ho et al. sample it) keeps its means; the last step
      gets the std of the DDPM step it replaces, sqrt(1 - alpha_bar(t_0)) (sqrt(beta_1) at t_0 = 0).
    * Any other table (deterministic steps inside the chain, or a multistep solver whose steps
      cannot be scored one at a time) becomes ancestral DDPM (Sigma = beta, noise at every step)
      on its noise levels and model times (:func:`as_ddpm`).
    """
    if table.scoreable:
        return table
    inner_stochastic = bool((table.s[:-1] > 0).all())
    if table.is_markov and inner_stochastic:
        s = table.s.clone()
        s[-1] = (1.0 - table.alpha_bar[-1]).sqrt()
        return dataclasses.replace(table, s=s, name=table.name, settings={**table.settings, "noise_at_last_step": True})
    return as_ddpm(table)
