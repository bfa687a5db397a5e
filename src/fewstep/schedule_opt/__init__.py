"""Few-step schedule optimisation: this project's discretisation loss (Phase 1), fine-tuning at the
chosen steps (Phase 2), and the Align-Your-Steps and Watson et al. ELBO baselines."""

from .ays import align_your_steps, coordinate_search, klub_costs
from .discretisation import (
    bound_sampler_table,
    discretisation_loss,
    grid_errors,
    log_alpha_bar,
    loss_weights,
    pair_costs,
    rho,
    x0_errors,
)
from .dp import brute_force_path, min_cost_path
from .finetune import alternate, evaluated_steps, finetune_at_steps
from .optimise import CumulativeSoftmax, ScheduleResult, candidate_grid, optimise_adam, optimise_dp
from .watson import elbo_costs, watson_dp

__all__ = [
    "CumulativeSoftmax",
    "ScheduleResult",
    "align_your_steps",
    "alternate",
    "bound_sampler_table",
    "brute_force_path",
    "candidate_grid",
    "coordinate_search",
    "discretisation_loss",
    "elbo_costs",
    "evaluated_steps",
    "finetune_at_steps",
    "grid_errors",
    "klub_costs",
    "log_alpha_bar",
    "loss_weights",
    "min_cost_path",
    "optimise_adam",
    "optimise_dp",
    "pair_costs",
    "rho",
    "watson_dp",
    "x0_errors",
]
