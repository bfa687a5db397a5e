"""Every sampler as a table of step coefficients.

Step ``k`` (``k = 0..K-1``, from noise towards data) maps ``x`` to

    x_next = a[k] * x + b[k] * eps(x, t[k]) + c[k] * eps_prev + s[k] * z,   z ~ N(0, I),

where ``eps(x, t)`` is the epsilon-model evaluated at model time ``t[k]`` and ``eps_prev`` the
model output of step ``k-1`` (zero for first-order samplers; DPM-Solver++(2M) uses it). A
Gaussian step with ``c[k] = 0`` is the conditional p_theta(x_t | x_{t+1}) of paper eq. 3 with
mean ``a x + b eps`` and covariance ``s^2 I``.

This module builds the DDPM tables (foundation); other samplers add builders that return the
same ``StepTable``, so one rollout and one scoring function serve them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import FewstepError
from .schedules import NoiseSchedule, schedule_from_alpha_bar

VARIANCES = ("beta", "beta_tilde")


@dataclass(frozen=True)
class StepTable:
    """Per-step coefficients, float64 tensors of length K (see the module docstring).

    ``alpha_bar`` is the signal level of each step's input (for plots and schedule methods);
    ``name`` says which sampler built the table; ``settings`` records how, for run configs.
    """

    name: str
    t: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    s: torch.Tensor
    alpha_bar: torch.Tensor
    c: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        K = self.t.shape[0]
        if self.c is None:
            object.__setattr__(self, "c", torch.zeros(K, dtype=torch.float64))
        for name in ("a", "b", "s", "c", "alpha_bar"):
            if getattr(self, name).shape != (K,):
                raise ValueError(f"step table column {name} has shape {tuple(getattr(self, name).shape)}, expected ({K},)")

    @property
    def K(self) -> int:
        return int(self.t.shape[0])

    @property
    def is_markov_gaussian(self) -> bool:
        """True when every step is Gaussian given only its input (no eps_prev term)."""
        return bool((self.c == 0).all())

    @property
    def is_fully_stochastic(self) -> bool:
        """True when every step has positive variance, so every step has a log-density."""
        return bool((self.s > 0).all())


def ddpm_table(
    schedule: NoiseSchedule,
    timesteps: torch.Tensor | list[int] | None = None,
    variance: str = "beta",
    noise_at_last_step: bool = False,
) -> StepTable:
    """Ancestral DDPM (Ho et al. 2020) on all T steps or on an increasing sub-sequence tau.

    On a sub-sequence the betas are respaced from alpha_bar: beta'_k = 1 - alpha_bar[tau_k] /
    alpha_bar[tau_{k-1}] (alpha_bar before the first element is 1), which is what diffusers'
    DDPMScheduler does with custom time-steps. The mean is mu_theta = (x - beta' /
    sqrt(1 - alpha_bar) * eps) / sqrt(1 - beta'), the eps form of eq. 2's posterior mean.
    ``variance`` picks Sigma = beta' I or beta_tilde' I (eq. 3). Ho et al. add no noise at the
    last step; policy-gradient fine-tuning needs a log-density at every step, so it sets
    ``noise_at_last_step`` (with ``variance="beta"``; beta_tilde is 0 there).
    """
    if variance not in VARIANCES:
        raise FewstepError(f"unknown DDPM variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    tau = torch.arange(schedule.T) if timesteps is None else torch.as_tensor(timesteps, dtype=torch.long)
    if tau.ndim != 1 or len(tau) == 0:
        raise FewstepError("DDPM time-steps must be a non-empty list of integers")
    if (tau[1:] <= tau[:-1]).any() or tau[0] < 0 or tau[-1] >= schedule.T:
        raise FewstepError(f"DDPM time-steps must increase strictly within [0, {schedule.T - 1}], got {tau.tolist()}")
    table = ddpm_on_levels(schedule.alpha_bar[tau], tau.to(torch.float64), variance, noise_at_last_step)
    table.settings["timesteps"] = tau.tolist()
    return table


def ddpm_on_levels(
    alpha_bar: torch.Tensor, model_times: torch.Tensor, variance: str = "beta", noise_at_last_step: bool = False
) -> StepTable:
    """Ancestral DDPM steps between increasing noise levels ``alpha_bar`` (decreasing values), the
    model evaluated at ``model_times`` (integer or continuous); both given from data to noise."""
    sub = schedule_from_alpha_bar("levels", alpha_bar)
    var = sub.beta if variance == "beta" else sub.beta_tilde
    std = var.sqrt()
    if not noise_at_last_step:
        std = torch.cat([std[1:].new_zeros(1), std[1:]])
    a = 1.0 / sub.alpha.sqrt()
    b = -sub.beta / ((1.0 - sub.alpha_bar).sqrt() * sub.alpha.sqrt())
    # The table runs from noise to data: reverse the level order.
    flip = lambda v: v.flip(0).clone()  # noqa: E731
    return StepTable(
        name="ddpm",
        t=flip(model_times.to(torch.float64)),
        a=flip(a),
        b=flip(b),
        s=flip(std),
        alpha_bar=flip(sub.alpha_bar),
        settings={"variance": variance, "noise_at_last_step": noise_at_last_step},
    )


def as_ddpm(table: StepTable, variance: str = "beta", noise_at_last_step: bool = True) -> StepTable:
    """Ancestral DDPM on the same noise levels and model times as ``table`` (e.g. an optimised
    deterministic schedule), so that shortcut fine-tuning, which needs a Gaussian step with
    positive variance everywhere, can start from any schedule."""
    out = ddpm_on_levels(table.alpha_bar.flip(0), table.t.flip(0), variance, noise_at_last_step)
    out.settings["from"] = table.name
    return out


def table_from_config(config, schedule: NoiseSchedule) -> StepTable:
    """The step table that ``config.sampler`` describes for a model trained on ``schedule``."""
    s = config.sampler
    if getattr(s, "kind", "ddpm") == "ddpm" and (s.timesteps is not None or getattr(s, "steps", None) is None):
        return ddpm_table(schedule, s.timesteps, s.variance, s.noise_at_last_step)
    from .samplers.from_config import table_for_kind  # lazy: the samplers import this module

    return table_for_kind(s, schedule)


def table_to_dict(table: StepTable) -> dict:
    """A JSON-able record of a table (saved in checkpoints so a run samples as it was tuned)."""
    cols = {name: getattr(table, name).tolist() for name in ("t", "a", "b", "s", "c", "alpha_bar")}
    return {"name": table.name, "settings": table.settings, **cols}


def table_from_dict(record: dict) -> StepTable:
    try:
        cols = {name: torch.tensor(record[name], dtype=torch.float64) for name in ("t", "a", "b", "s", "c", "alpha_bar")}
        return StepTable(name=record["name"], settings=record.get("settings", {}), **cols)
    except (KeyError, TypeError, ValueError) as exc:
        raise FewstepError(f"the recorded step table is malformed ({exc})") from None
