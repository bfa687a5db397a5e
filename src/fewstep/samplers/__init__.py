"""Fast samplers as step tables (issue 4): DDIM, FastDPM, Analytic-DPM, DPM-Solver, and spacings.

Every builder takes increasing model times (integers or floats: the MLP epsilon-model takes
continuous time) and returns a :class:`fewstep.steps.StepTable` running from noise to data.
DDPM on a sub-sequence is :func:`fewstep.steps.ddpm_table`.
"""
from .analytic_dpm import analytic_dpm_from_data, analytic_dpm_table, estimate_gamma
from .ddim import ddim_table, generalized_table, posterior_std, step_levels
from .dpm_solver import dpm_solver_2m_table, dpm_solver_pp_2m_coefficients, dpm_solver_pp_2m_sample
from .fastdpm import fastdpm_table, step_subsequence, var_times, variance_schedule
from .spacings import SPACINGS, alpha_bar_at, karras, logsnr_uniform, spacing, time_at_alpha_bar, time_quadratic, time_uniform

__all__ = [
    "SPACINGS", "alpha_bar_at", "analytic_dpm_from_data", "analytic_dpm_table", "ddim_table", "dpm_solver_2m_table",
    "dpm_solver_pp_2m_coefficients", "dpm_solver_pp_2m_sample", "estimate_gamma", "fastdpm_table", "generalized_table",
    "karras", "logsnr_uniform", "posterior_std", "spacing", "step_levels", "step_subsequence", "time_at_alpha_bar",
    "time_quadratic", "time_uniform", "var_times", "variance_schedule",
]
