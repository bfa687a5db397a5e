"""Few-step schedule optimisation: this project's discretisation loss (Phase 1), fine-tuning at the
chosen steps (Phase 2), the Align-Your-Steps and Watson et al. ELBO baselines; the path bound along the
sampler's own path with its fine-step reference and measured discretisation error, refinement on that
error, and Phase 2 by distillation."""

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
from .distill import anchor_drift, finetune_on_path
from .dp import brute_force_path, min_cost_path
from .finetune import alternate, eps_loss_weights, evaluated_steps, finetune_at_steps
from .optimise import CumulativeSoftmax, ScheduleResult, candidate_grid, optimise_adam, optimise_dp
from .path_bound import flow_jacobians, optimise_path_dp, path_costs, schedule_cost, telescoped_errors
from .reference import (
    FineReference,
    ddim_output,
    discretisation_error,
    error_over_batches,
    fine_reference,
    output_error,
)
from .refine import coordinate_refine, refine_ddim
from .watson import elbo_costs, watson_dp

__all__ = [
    "CumulativeSoftmax",
    "FineReference",
    "ScheduleResult",
    "align_your_steps",
    "alternate",
    "anchor_drift",
    "bound_sampler_table",
    "brute_force_path",
    "candidate_grid",
    "coordinate_refine",
    "coordinate_search",
    "ddim_output",
    "discretisation_error",
    "discretisation_loss",
    "elbo_costs",
    "eps_loss_weights",
    "error_over_batches",
    "evaluated_steps",
    "fine_reference",
    "finetune_at_steps",
    "finetune_on_path",
    "flow_jacobians",
    "grid_errors",
    "klub_costs",
    "log_alpha_bar",
    "loss_weights",
    "min_cost_path",
    "optimise_adam",
    "optimise_dp",
    "optimise_path_dp",
    "output_error",
    "pair_costs",
    "path_costs",
    "refine_ddim",
    "rho",
    "schedule_cost",
    "telescoped_errors",
    "watson_dp",
    "x0_errors",
]
