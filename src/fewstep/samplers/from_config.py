"""The step table of ``config.sampler`` for the kinds other than ``ddpm`` (see SamplerConfig's help)."""
from __future__ import annotations

import torch

from ..errors import FewstepError
from ..schedules import NoiseSchedule
from ..steps import StepTable


def sampler_times(sampler, schedule: NoiseSchedule) -> torch.Tensor:
    """Increasing model times: ``sampler.timesteps``, else ``sampler.steps`` spaced by ``sampler.spacing``."""
    from .spacings import spacing

    if sampler.timesteps is not None:
        return torch.tensor(sampler.timesteps, dtype=torch.float64)
    if sampler.steps is None:
        raise FewstepError(f"sampler kind {sampler.kind} needs sampler.steps (or sampler.timesteps)")
    return spacing(sampler.spacing, schedule, sampler.steps)


def table_for_kind(sampler, schedule: NoiseSchedule) -> StepTable:
    from .analytic_dpm import analytic_dpm_table
    from .ddim import ddim_table
    from .dpm_solver import dpm_solver_2m_table
    from .fastdpm import fastdpm_table

    kind = sampler.kind
    if kind == "fastdpm":
        if sampler.steps is None:
            raise FewstepError("sampler kind fastdpm needs sampler.steps")
        return fastdpm_table(schedule, sampler.steps, sampler.fastdpm_approach, sampler.fastdpm_schedule,
                             sampler.kappa, sampler.fastdpm_reverse)
    times = sampler_times(sampler, schedule)
    if kind == "ddpm":  # sampler.steps with a spacing: the K spaced steps, rounded to distinct integers
        from ..steps import ddpm_table
        from .spacings import round_distinct

        return ddpm_table(schedule, round_distinct(times).long(), sampler.variance, sampler.noise_at_last_step)
    if kind == "ddim":
        return ddim_table(schedule, times, sampler.eta)
    if kind == "dpm_solver_2m":
        return dpm_solver_2m_table(schedule, times)
    if kind == "analytic_dpm":
        if sampler.analytic_gamma is None:
            raise FewstepError("sampler kind analytic_dpm needs sampler.analytic_gamma (estimate it with "
                               "fewstep.samplers.estimate_gamma on the training data)")
        return analytic_dpm_table(schedule, times, torch.tensor(sampler.analytic_gamma), sampler.analytic_mean,
                                  sampler.noise_at_last_step)
    raise FewstepError(f"unknown sampler kind {kind!r}")
