"""The fine-step reference path of a pretrained model, and the discretisation error measured against it.

**Reference.** The probability-flow ODE of a pretrained epsilon-model is solved from a fixed batch
of starts x_T by DDIM (eta = 0) through *every* integer model time T-1, T-2, ..., 0 and a last
step onto clean data (signal level 1, model time -1). Its states X_j at times tau_j = T-1-j
(j = 0..T, tau_T = -1), the model outputs E_j = eps(X_j, tau_j) and the end point X_T (in data
units) are kept (:class:`FineReference`). One fine DDIM step reads, with alpha = sqrt(ab),
sigma = sqrt(1 - ab) and rho = alpha / sigma,

    X_{j+1} / sigma_{j+1} = X_j / sigma_j + (rho_{j+1} - rho_j) D_j,   D_j = (X_j - sigma_j E_j) / alpha_j,

so along the reference path y = x / sigma is a piecewise-linear function of rho whose slope is the
model's x0-prediction D (the convex-combination identity of :mod:`.discretisation` on the fine grid).

**Discretisation error** (a low-noise comparison metric). For a few-step sampler started from the
same x_T, the mean over the batch of ||x_out - X_T||^2 / d, where x_out is the sampler's output in
data units. It is the error the schedule controls, without the sampling noise of a distance
between point clouds (W2 on 2,000 samples has a floor near 0.05 on the toys); it does not see
the model's own error (the reference is the model's ODE solution, not the data). Report it with
its spread over several independent x_T batches (:func:`error_over_batches`).

The reference itself is only first-order accurate; :func:`fine_reference` accepts ``refine`` > 1
sub-steps per integer time to check that the K-step errors are far above the reference's own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FewstepError
from ..rollout import rollout
from ..samplers.spacings import alpha_bar_at
from ..schedules import NoiseSchedule
from ..steps import StepTable
from .discretisation import bound_sampler_table


@dataclass
class FineReference:
    """The fine DDIM path from a batch of starts: ``states[j]`` at model time ``times[j]``.

    ``times`` decrease from T-1 to -1 (clean data); ``states`` is [T+1, n, *shape] (float64),
    ``eps`` [T, n, *shape] the model output at each state but the last.
    """

    times: torch.Tensor
    states: torch.Tensor
    eps: torch.Tensor

    @property
    def x_T(self) -> torch.Tensor:
        return self.states[0]

    @property
    def output(self) -> torch.Tensor:
        """The reference sample: the end of the fine path, in data units."""
        return self.states[-1]

    def index(self, times: torch.Tensor) -> torch.Tensor:
        """Positions on the fine path of integer model ``times`` (-1 = clean data)."""
        times = torch.as_tensor(times, dtype=torch.float64)
        idx = (self.times[0] - times).round().long()
        if (times != times.round()).any() or (idx < 0).any() or (idx >= len(self.times)).any():
            raise FewstepError(f"times {times.tolist()} are not on the reference's integer grid")
        return idx


def _model_key(model, schedule: NoiseSchedule, x_T: torch.Tensor, refine: int) -> str:
    digest = hashlib.sha1()
    for tensor in [*model.state_dict().values(), schedule.beta, x_T]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(str(refine).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def fine_reference(
    model, schedule: NoiseSchedule, x_T: torch.Tensor, refine: int = 1, cache_dir: str | Path | None = None
) -> FineReference:
    """The fine-step DDIM path of ``model`` from ``x_T`` (see the module docstring).

    ``refine`` sub-steps are taken inside each integer interval (continuous model times); states
    are kept at integer times only. With ``cache_dir`` the result is stored under a key of the
    model weights, the schedule, the starts and ``refine``, and read back on the next call.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"reference-{_model_key(model, schedule, x_T, refine)}.pt"
        if path.is_file():
            return FineReference(**torch.load(path, weights_only=True))
    dtype = next(model.parameters()).dtype
    T = schedule.T
    # refine sub-steps per unit time on [0, T-1]; the last step (time 0 to clean data) is never split,
    # since the model is not trained below time 0
    fine = torch.cat(
        [torch.linspace(T - 1, 0, refine * (T - 1) + 1, dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)]
    )
    on_grid = (fine - fine.round()).abs() < 1e-9
    ab = alpha_bar_at(schedule, fine)
    x = x_T.to(torch.float64)
    states, eps_out = [x], []
    for k in range(len(fine) - 1):
        eps = model(x.to(dtype), torch.full((len(x),), float(fine[k]), dtype=dtype)).to(torch.float64)
        x0_hat = (x - (1 - ab[k]).sqrt() * eps) / ab[k].sqrt()
        x = ab[k + 1].sqrt() * x0_hat + (1 - ab[k + 1]).sqrt() * eps
        if on_grid[k + 1]:
            states.append(x)
        if on_grid[k]:
            eps_out.append(eps)
    ref = FineReference(fine[on_grid].clone(), torch.stack(states), torch.stack(eps_out))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"times": ref.times, "states": ref.states, "eps": ref.eps}, path)
    return ref


@torch.no_grad()
def table_output(model, table: StepTable, x_T: torch.Tensor) -> torch.Tensor:
    """The output (float64) of a deterministic sampler ``table`` from ``x_T``."""
    dtype = next(model.parameters()).dtype
    noise = torch.zeros(table.K + 1, *x_T.shape, dtype=dtype)
    noise[0] = x_T.to(dtype)
    return rollout(model, table, noise, states_only=True).x0.to(torch.float64)


def ddim_output(model, schedule: NoiseSchedule, times, x_T: torch.Tensor) -> torch.Tensor:
    """The output (data units, float64) of DDIM through decreasing ``times`` t_0 > ... > t_K from ``x_T``.

    The model runs at t_0..t_{K-1}; t_K = -1 lands on clean data (as the fixed samplers do), a t_K >= 0
    on that level with the output rescaled by 1 / alpha(t_K) (:func:`.bound_sampler_table`).
    """
    return table_output(model, bound_sampler_table(schedule, times), x_T)


def output_error(output: torch.Tensor, reference: FineReference) -> float:
    """Mean over the batch of ||output - reference output||^2 / d (any sampler run from ``reference.x_T``)."""
    if output.shape != reference.output.shape:
        raise FewstepError(
            f"output of shape {tuple(output.shape)} does not match the reference's {tuple(reference.output.shape)}"
        )
    return float((output.to(torch.float64) - reference.output).pow(2).flatten(1).mean(1).mean())


def discretisation_error(
    model, schedule: NoiseSchedule, times, x_T: torch.Tensor, reference: FineReference
) -> dict[str, float]:
    """The discretisation error of DDIM through ``times`` from ``x_T``: mean squared error per
    dimension against the fine reference from the same starts, and its root."""
    if not torch.equal(x_T.to(torch.float64), reference.x_T):
        raise FewstepError("the reference was computed from other starts x_T")
    mse = output_error(ddim_output(model, schedule, times, x_T), reference)
    return {"mse": mse, "rmse": mse**0.5}


def error_over_batches(errors: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation and range of per-batch errors (run-to-run spread)."""
    values = torch.tensor(errors, dtype=torch.float64)
    std = float(values.std()) if len(values) > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "batches": len(values),
    }
