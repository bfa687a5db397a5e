"""A discretisation bound along the sampler's own path, optimised exactly by dynamic programming.

The forward-process loss of :mod:`.discretisation` evaluates the model on forward-process states
alpha x0 + sigma eps, which the sampler does not visit, and counts an error only where it is made:
its minimiser piles steps at the data end. The bound here is built on the path the sampler
follows, the model's own probability-flow ODE, and counts each step's error where it ends up.

**Setting.** DDIM (eta = 0) through decreasing integer times t_0 = T-1 > t_1 > ... > t_K = -1
(clean data); Phi_i is its step t_i -> t_{i+1} and S_i = Phi_{K-1} o ... o Phi_i the rest of
the sampler from t_i (S_K the identity). X(t) is the fine-step reference path from the same
start x_T (:mod:`.reference`), which the sampler should reproduce: X(t_0) = x_T, target X(-1).

**Exact decomposition.** Since S_i = S_{i+1} o Phi_i, the output error telescopes:

    e = S_0(x_T) - X(-1) = sum_{i<K} [S_{i+1}(X(t_{i+1}) + delta_i) - S_{i+1}(X(t_{i+1}))],      (1)
    delta_i = Phi_i(X(t_i)) - X(t_{i+1}),

the local error of one step taken *from the reference state*, carried to the output by the rest
of the sampler. By the convex-combination identity (y = x / sigma moves by (rho' - rho) x0_hat
per DDIM step, rho = alpha / sigma), on the fine reference grid j,

    delta_i = sigma_{i+1} sum_j (rho_{j+1} - rho_j) [x0_hat(X(t_i), t_i) - x0_hat(X_j, tau_j)],      (2)
              over the fine steps j with t_i >= tau_j > t_{i+1},

the x0-prediction frozen at the start of the interval against the x0-predictions along the
reference path, integrated over the interval in rho: a local truncation error (for t_{i+1} = -1,
sigma -> 0 and rho -> inf with sigma rho -> 1, and delta = x0_hat(X(t_{K-1}), t_{K-1}) - X(-1)).

**Bound.** Minkowski's inequality in L2 (batch and dimensions) applied to (1) gives the rigorous

    RMS(e) <= B_exact(t) = sum_i RMS(S_{i+1}(X(t_{i+1}) + delta_i) - S_{i+1}(X(t_{i+1}))),             (3)

RMS(v) = (E ||v||^2 / d)^(1/2), computed by :func:`telescoped_errors`. B_exact depends on all later
steps through S_{i+1}. To first order in delta_i, and replacing the K-step sampler's Jacobian by
that of the reference flow, J_t = dX(-1) / dX(t) at X(t) (exact for the last interval, where both
are the identity), it becomes a sum over consecutive pairs:

    B(t) = sum_i c(t_i, t_{i+1}),   c(u, v) = RMS(J_v delta_uv),   delta_uv = Phi_{u->v}(X(u)) - X(v).    (4)

*What is bounded, under which assumption:* B upper-bounds the root-mean-square discretisation
error RMS(e) (:func:`.reference.discretisation_error`) whenever B >= B_exact, i.e. when the
first-order flow propagation does not understate how the sampler carries each local error; it
is exact to first order when the K-step sampler's Jacobian equals the flow's. Both are checked
in the tests (Gaussian data, where the model is linear) and measured on the toys (FINDINGS.md).
B is data-free: it needs the model and starts x_T only. Its minimum over a grid holding T-1 and
-1 is a shortest path (:mod:`.dp`); with every integer time as a candidate it is exact over all
integer schedules. Because delta_uv needs only the model output at X(u), which the reference
already holds, the whole cost matrix costs no model evaluation beyond the reference and the
Jacobians. c(u, v) is differentiable in continuous (u, v) through the model and an interpolated
path, so Adam could refine it off the grid; on the integer grid the DP is already exact.

**Propagation.** ``propagate="flow"`` uses J_v, accumulated backwards along the fine path
(adjoint: z^T J_j = z^T J_{j+1} (a_j I + b_j d eps / dx (X_j)) for the fine step X_{j+1} = a_j X_j +
b_j eps) with the coordinate vectors as probes z (exact norms) when d <= ``max_exact_dim``, else
``n_probes`` Gaussian probes (E_z (z^T J delta)^2 = ||J delta||^2). ``propagate="none"`` sets J = I:
the cost is the raw one-step local error in the sampler's (variance-preserving) units, the
GITS-style objective (Chen et al. 2024, "On the trajectory regularity of ODE-based diffusion
sampling", their DP with the one-step error against a teacher trajectory). It ignores that errors
made at high noise are shrunk or grown by the flow (by sqrt(ab s^2 + 1 - ab) / s for N(mu, s^2 I) data).
"""

from __future__ import annotations

import torch

from ..errors import FewstepError
from ..samplers.spacings import alpha_bar_at
from ..schedules import NoiseSchedule
from .dp import min_cost_path
from .optimise import ScheduleResult
from .discretisation import bound_sampler_table
from .reference import FineReference, fine_reference

PROPAGATIONS = ("flow", "none")


def _levels(schedule: NoiseSchedule, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ab = alpha_bar_at(schedule, times)
    return ab.sqrt(), (1 - ab).clamp(min=0).sqrt()


def flow_jacobians(
    model,
    schedule: NoiseSchedule,
    reference: FineReference,
    nodes: torch.Tensor,
    max_exact_dim: int = 16,
    n_probes: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """Probed Jacobians z^T J_t of the reference flow to clean data at the fine indices ``nodes``.

    Returns ``G`` [len(nodes), n, m, d] (rows z^T J for m probes per start) and the factor ``scale``
    with ||J v||^2 = scale * sum_m (G v)_m^2 (exactly for coordinate probes, in expectation else).
    """
    n, d = reference.x_T.shape[0], reference.x_T[0].numel()
    if d <= max_exact_dim:
        probes, scale = torch.eye(d, dtype=torch.float64), 1.0
    else:
        probes = torch.randn(n_probes, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        scale = 1.0 / n_probes
    wanted = {int(j): k for k, j in enumerate(nodes.tolist())}
    out = torch.empty(len(nodes), n, len(probes), d, dtype=torch.float64)
    G = probes.expand(n, -1, -1).clone()  # at clean data J = I
    last = len(reference.times) - 1
    if last in wanted:
        out[wanted[last]] = G
    alpha, sigma = _levels(schedule, reference.times)
    dtype = next(model.parameters()).dtype
    shape = reference.x_T.shape[1:]
    for j in range(last - 1, min(wanted) - 1, -1):
        a = alpha[j + 1] / alpha[j]
        b = sigma[j + 1] - alpha[j + 1] * sigma[j] / alpha[j]
        x = reference.states[j].to(dtype).requires_grad_(True)
        with torch.enable_grad():
            eps = model(x, torch.full((n,), float(reference.times[j]), dtype=dtype))
            vjps = [
                torch.autograd.grad(eps, x, G[:, k].reshape(n, *shape).to(dtype), retain_graph=k + 1 < G.shape[1])[0]
                for k in range(G.shape[1])
            ]
        G = a * G + b * torch.stack([v.reshape(n, d).to(torch.float64) for v in vjps], dim=1)
        if j in wanted:
            out[wanted[j]] = G
    return out, scale


def _grid_nodes(reference: FineReference, grid) -> tuple[torch.Tensor, torch.Tensor]:
    times = reference.times if grid is None else torch.as_tensor(grid, dtype=torch.float64)
    if (times[1:] >= times[:-1]).any() or times[0] != reference.times[0] or times[-1] != reference.times[-1]:
        raise FewstepError(f"the grid must decrease from {float(reference.times[0])} to {float(reference.times[-1])}")
    return times, reference.index(times)


@torch.no_grad()
def path_costs(
    model, schedule: NoiseSchedule, reference: FineReference, grid=None, propagate: str = "flow", **probe_options
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid times, cost[u, v] = c(grid[u], grid[v]) of eq. 4) for u < v; ``grid`` defaults to every time.

    ``grid`` must decrease from T-1 to -1 on integer times. Entries with u >= v are +inf.
    """
    if propagate not in PROPAGATIONS:
        raise FewstepError(f"unknown propagation {propagate!r}; choose one of {', '.join(PROPAGATIONS)}")
    times, nodes = _grid_nodes(reference, grid)
    M = len(nodes)
    X = reference.states[nodes].flatten(2)  # [M, n, d]
    E = reference.eps[nodes[:-1]].flatten(2)
    d = X.shape[-1]
    if propagate == "flow":
        G, scale = flow_jacobians(model, schedule, reference, nodes, **probe_options)
    alpha, sigma = _levels(schedule, times)
    cost = torch.full((M, M), float("inf"), dtype=torch.float64)
    for u in range(M - 1):
        x0_hat = (X[u] - sigma[u] * E[u]) / alpha[u]
        ends = slice(u + 1, M)
        delta = alpha[ends, None, None] * x0_hat + sigma[ends, None, None] * E[u] - X[ends]  # [M', n, d]
        if propagate == "flow":
            sq = scale * torch.einsum("vnmd,vnd->vnm", G[ends], delta).pow(2).sum(-1)
        else:
            sq = delta.pow(2).sum(-1)
        cost[u, ends] = (sq.mean(-1) / d).sqrt()
    return times, cost


def schedule_cost(cost: torch.Tensor, grid: torch.Tensor, times) -> float:
    """B(t) = sum of ``cost`` over consecutive pairs of ``times`` (all on ``grid``)."""
    grid, times = torch.as_tensor(grid, dtype=torch.float64), torch.as_tensor(times, dtype=torch.float64)
    pos = {float(t): i for i, t in enumerate(grid)}
    if any(float(t) not in pos for t in times):
        raise FewstepError(f"times {times.tolist()} are not all on the grid")
    idx = [pos[float(t)] for t in times]
    return float(sum(cost[u, v] for u, v in zip(idx[:-1], idx[1:])))


def optimise_path_dp(
    model,
    schedule: NoiseSchedule,
    K: int,
    starts: torch.Tensor | FineReference,
    grid=None,
    propagate: str = "flow",
    cache_dir=None,
    **probe_options,
) -> ScheduleResult:
    """The K-step schedule T-1 = t_0 > ... > t_K = -1 minimising the path bound B (eq. 4) over ``grid``.

    ``starts``: a batch x_T, or its :class:`FineReference` (keep them independent of the starts used
    to evaluate the schedule). ``propagate="none"`` gives the GITS-style schedule. ``loss`` is min B.
    """
    reference = (
        starts if isinstance(starts, FineReference) else fine_reference(model, schedule, starts, cache_dir=cache_dir)
    )
    times, cost = path_costs(model, schedule, reference, grid, propagate, **probe_options)
    path, value = min_cost_path(cost, K)
    return ScheduleResult(
        times[path],
        value,
        [
            {
                "grid_points": len(times),
                "propagate": propagate,
                "interval_costs": [float(cost[u, v]) for u, v in zip(path, path[1:])],
            }
        ],
    )


@torch.no_grad()
def telescoped_errors(model, schedule: NoiseSchedule, times, reference: FineReference) -> torch.Tensor:
    """The K terms of eq. 1, [K, n, *shape]: they sum exactly to the output error e of DDIM through
    ``times`` (integer, ending at -1); the sum of their RMS is the rigorous bound B_exact of eq. 3."""
    times = torch.as_tensor(times, dtype=torch.float64)
    if times[-1] != -1:
        raise FewstepError("eq. 1 compares with the reference's clean end: the schedule must end at -1")
    table = bound_sampler_table(schedule, times)
    states = reference.states[reference.index(times)]
    dtype = next(model.parameters()).dtype

    def run(x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Steps first..last-1 of the sampler from ``x``."""
        for k in range(first, last):
            eps = model(x.to(dtype), torch.full((len(x),), float(table.t[k]), dtype=dtype)).to(torch.float64)
            x = float(table.a[k]) * x + float(table.b[k]) * eps
        return x

    K = table.K
    return torch.stack([run(run(states[i], i, i + 1), i + 1, K) - run(states[i + 1], i + 1, K) for i in range(K)])
