"""Samplers as step tables: DDPM, DDIM, FastDPM, Analytic-DPM, DPM-Solver(2M) and ++(2M), and spacings.

Every builder takes increasing model times (integers or floats: the epsilon-models take continuous
time) and returns a :class:`fewstep.steps.StepTable` running from noise to data; ``build_table``
picks one from the ``sampler`` config section.
"""

from .analytic_dpm import AnalyticDPMSettings, analytic_dpm_from_data, analytic_dpm_table, estimate_gamma
from .ddim import DDIMSettings, ddim_table, generalized_table, posterior_std, step_levels
from .ddpm import DDPMSettings, as_ddpm, ddpm_on_levels, ddpm_table, for_policy_gradient
from .dpm_solver import DPMSolverSettings, dpm_solver_2m_table, dpm_solver_pp_2m_table
from .fastdpm import FastDPMSettings, fastdpm_table, step_subsequence, var_times, variance_schedule
from .registry import KINDS, SamplerConfig, build_table, check_sampler, model_times
from .spacings import (
    SPACINGS,
    alpha_bar_at,
    karras,
    logsnr_uniform,
    round_distinct,
    spacing,
    time_at_alpha_bar,
    time_quadratic,
    time_uniform,
)

__all__ = [
    "KINDS",
    "SPACINGS",
    "AnalyticDPMSettings",
    "DDIMSettings",
    "DDPMSettings",
    "DPMSolverSettings",
    "FastDPMSettings",
    "SamplerConfig",
    "alpha_bar_at",
    "analytic_dpm_from_data",
    "analytic_dpm_table",
    "as_ddpm",
    "build_table",
    "check_sampler",
    "ddim_table",
    "ddpm_on_levels",
    "ddpm_table",
    "dpm_solver_2m_table",
    "dpm_solver_pp_2m_table",
    "estimate_gamma",
    "fastdpm_table",
    "for_policy_gradient",
    "generalized_table",
    "karras",
    "logsnr_uniform",
    "model_times",
    "posterior_std",
    "round_distinct",
    "spacing",
    "step_levels",
    "step_subsequence",
    "time_at_alpha_bar",
    "time_quadratic",
    "time_uniform",
    "var_times",
    "variance_schedule",
]
