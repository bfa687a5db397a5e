"""The sampler registry: ``sampler.kind`` -> the builder of its step table, each kind with its own settings.

A sampler is chosen by the ``sampler`` config section: the kind, the steps (a number K with a
spacing, or explicit model times), the two options every Gaussian table has (noise at the last step,
clipping of the x0-prediction) and one sub-section of settings per kind, owned by that kind's module
(as each diffusers scheduler owns its config). Adding a sampler: write its module with a settings
dataclass and a table builder, add the settings as a field of :class:`SamplerConfig` and register
the builder in ``KINDS``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import FewstepError
from ..fields import opt
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .analytic_dpm import AnalyticDPMSettings, analytic_dpm_table, estimate_gamma
from .ddim import DDIMSettings, ddim_table
from .ddpm import DDPMSettings, ddpm_table
from .dpm_solver import DPMSolverSettings, dpm_solver_2m_table, dpm_solver_pp_2m_table
from .fastdpm import FastDPMSettings, fastdpm_table, step_subsequence, var_times
from .spacings import SPACINGS, round_distinct, spacing

KIND_NAMES = ("ddpm", "ddim", "fastdpm", "analytic_dpm", "dpm_solver_2m", "dpm_solver_pp_2m")


@dataclass
class SamplerConfig:
    kind: str = opt(
        "ddpm",
        "sampler: ddpm (ancestral, eq. 3), ddim, fastdpm, analytic_dpm, dpm_solver_2m or "
        "dpm_solver_pp_2m (multistep ODE solvers); its settings are in the section of the same name",
        choices=KIND_NAMES,
    )
    steps: int | None = opt(None, "number of steps K (model evaluations); null = all T steps (ddpm only)", min=1)
    spacing: str = opt(
        "uniform",
        "how the K steps are spaced: uniform in time, quadratic, uniform in log-SNR, karras "
        "(EDM rho = 7); fastdpm uses its own schedule setting",
        choices=SPACINGS,
    )
    timesteps: list[float] | None = opt(
        None, "explicit increasing model times in [0, T-1] (replaces steps and spacing; ddpm needs integers)", min=0.0
    )
    noise_at_last_step: bool | None = opt(
        None,
        "noise at the last step; null = the sampler's convention (ddpm: yes, "
        "as the paper's toy sampler; the others: no). Policy-gradient fine-tuning "
        "adds it where it is missing",
    )
    clip_x0: float | None = opt(
        None,
        "clip the x0-prediction to [-r, r] inside every step (diffusers' clip_sample "
        "with clip_sample_range r); null = no clipping",
        above=0.0,
    )
    ddpm: DDPMSettings = opt(DDPMSettings(), "settings of sampler kind ddpm")
    ddim: DDIMSettings = opt(DDIMSettings(), "settings of sampler kind ddim")
    fastdpm: FastDPMSettings = opt(FastDPMSettings(), "settings of sampler kind fastdpm")
    analytic_dpm: AnalyticDPMSettings = opt(AnalyticDPMSettings(), "settings of sampler kind analytic_dpm")
    dpm_solver: DPMSolverSettings = opt(DPMSolverSettings(), "settings of dpm_solver_2m and dpm_solver_pp_2m")


def model_times(cfg: SamplerConfig, schedule: NoiseSchedule) -> torch.Tensor:
    """The increasing model times the sampler evaluates (float64), checked against the schedule."""
    T = schedule.T
    if cfg.kind == "fastdpm":
        if cfg.steps is None:
            raise FewstepError("sampler kind fastdpm needs sampler.steps")
        if cfg.steps > T:
            raise FewstepError(f"sampler.steps={cfg.steps} is more than the model's T={T} steps")
        f = cfg.fastdpm
        return (
            step_subsequence(schedule, cfg.steps, f.schedule)
            if f.approach == "STEP"
            else var_times(schedule, cfg.steps, f.schedule)
        )
    if cfg.timesteps is not None:
        t = torch.tensor(cfg.timesteps, dtype=torch.float64)
        if len(t) == 0 or (t[1:] <= t[:-1]).any() or t[0] < 0 or t[-1] > T - 1:
            raise FewstepError(f"sampler.timesteps must increase strictly within [0, {T - 1}], got {cfg.timesteps}")
        if cfg.kind == "ddpm" and (t != t.round()).any():
            raise FewstepError(f"sampler.timesteps must be integers for sampler kind ddpm, got {cfg.timesteps}")
        return t
    if cfg.steps is None:
        if cfg.kind == "ddpm":
            return torch.arange(T, dtype=torch.float64)
        raise FewstepError(f"sampler kind {cfg.kind} needs sampler.steps (or sampler.timesteps)")
    if cfg.kind == "ddpm" and cfg.steps > T:
        raise FewstepError(f"sampler.steps={cfg.steps} is more than the model's T={T} integer steps")
    t = spacing(cfg.spacing, schedule, cfg.steps)
    return round_distinct(t) if cfg.kind == "ddpm" else t


def _last_noise(cfg: SamplerConfig) -> bool:
    return cfg.kind == "ddpm" if cfg.noise_at_last_step is None else cfg.noise_at_last_step


def _ddpm(cfg, schedule, times, model, data):
    return ddpm_table(schedule, times, cfg.ddpm.variance, _last_noise(cfg), cfg.clip_x0)


def _ddim(cfg, schedule, times, model, data):
    return ddim_table(schedule, times, cfg.ddim.eta, noise_at_last_step=_last_noise(cfg), clip_x0=cfg.clip_x0)


def _fastdpm(cfg, schedule, times, model, data):
    f = cfg.fastdpm
    return fastdpm_table(schedule, cfg.steps, f.approach, f.schedule, f.kappa, f.reverse, _last_noise(cfg), cfg.clip_x0)


def _analytic_dpm(cfg, schedule, times, model, data):
    a = cfg.analytic_dpm
    if a.gamma is not None:
        if len(a.gamma) != len(times):
            raise FewstepError(f"sampler.analytic_dpm.gamma has {len(a.gamma)} values for {len(times)} steps")
        gamma = torch.tensor(a.gamma, dtype=torch.float64)
    elif model is None or data is None:
        raise FewstepError(
            "sampler kind analytic_dpm estimates Gamma_n with the model on training data; "
            "none was given here, so set sampler.analytic_dpm.gamma"
        )
    else:
        gamma = estimate_gamma(model, schedule, times, data, a.n_samples)
    return analytic_dpm_table(schedule, times, gamma, a.mean, _last_noise(cfg), cfg.clip_x0)


def _multistep(builder):
    def build(cfg, schedule, times, model, data):
        if cfg.clip_x0 is not None:
            raise FewstepError(f"sampler.clip_x0 needs a first-order sampler; {cfg.kind} is multistep")
        if cfg.noise_at_last_step:
            raise FewstepError(f"sampler.noise_at_last_step does not apply to the ODE solver {cfg.kind}")
        return builder(schedule, times, lower_order_final=cfg.dpm_solver.lower_order_final)

    return build


Builder = Callable[[SamplerConfig, NoiseSchedule, torch.Tensor, object, object], StepTable]
KINDS: dict[str, Builder] = {
    "ddpm": _ddpm,
    "ddim": _ddim,
    "fastdpm": _fastdpm,
    "analytic_dpm": _analytic_dpm,
    "dpm_solver_2m": _multistep(dpm_solver_2m_table),
    "dpm_solver_pp_2m": _multistep(dpm_solver_pp_2m_table),
}


def build_table(cfg: SamplerConfig, schedule: NoiseSchedule, model=None, data: torch.Tensor | None = None) -> StepTable:
    """The step table ``cfg`` describes for a model trained on ``schedule``.

    ``model`` and ``data`` (training points) are needed only by samplers estimated on data
    (Analytic-DPM without a recorded Gamma).
    """
    if cfg.kind not in KINDS:
        raise FewstepError(f"unknown sampler kind {cfg.kind!r}; choose one of {', '.join(KINDS)}")
    with _naming_the_keys(cfg, schedule):
        return KINDS[cfg.kind](cfg, schedule, model_times(cfg, schedule), model, data)


@contextlib.contextmanager
def _naming_the_keys(cfg: SamplerConfig, schedule: NoiseSchedule):
    """A sampler that cannot be built says which settings (config keys) and which schedule it was."""
    try:
        yield
    except FewstepError as exc:
        if str(exc).startswith("sampler."):
            raise
        chosen = f"sampler.kind={cfg.kind}, " + (
            f"sampler.timesteps={cfg.timesteps}"
            if cfg.timesteps is not None
            else f"sampler.steps={cfg.steps}, sampler.spacing={cfg.spacing}"
        )
        raise FewstepError(f"{chosen} on a model with T={schedule.T} steps: {exc}") from None


def check_sampler(cfg: SamplerConfig, schedule: NoiseSchedule) -> None:
    """Build what can be built before any training, so a bad sampler setting fails up front."""
    if cfg.kind == "analytic_dpm" and cfg.analytic_dpm.gamma is None:
        with _naming_the_keys(cfg, schedule):
            model_times(cfg, schedule)
        return
    build_table(cfg, schedule)
