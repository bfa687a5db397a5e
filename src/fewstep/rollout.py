"""Rolling out and re-scoring Gaussian sampling chains (paper eq. 3-4).

``step_mean`` is the one place a step's mean is computed: ``rollout`` uses it to generate and
``step_log_prob`` to re-score stored steps, so the two can never disagree (the ddpo-pytorch
pattern). Neither function is wrapped in ``torch.no_grad``: callers choose.

Noise is an explicit tensor ``[K + 1, n, *shape]`` (row 0 is x_T, row k + 1 the z of step k).
``draw_noise`` makes it either from one generator (fast, for training) or from one generator
per sample seed, drawing each sample's whole trajectory in one call: a seed then gives the
same sample at any batch size while the rollout stays one batched operation per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import FewstepError
from .steps import StepTable

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""An epsilon-model: ``eps = model(x, t)`` with ``x`` of shape [B, *shape] and ``t`` of shape [B]."""


def sample_seed(seed: int, index: int) -> int:
    """The 63-bit seed of sample ``index`` in a run seeded with ``seed`` (independent streams)."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def draw_noise(
    K: int,
    n: int,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise for ``n`` trajectories of ``K`` steps: a tensor [K + 1, n, *shape].

    With ``seeds`` (one per sample) each sample's noise comes from its own generator, so it
    does not depend on which other samples share the batch; otherwise one ``generator`` draws
    the whole block.
    """
    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} samples")
        per_sample = [
            torch.randn((K + 1, *shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds
        ]
        return torch.stack(per_sample, dim=1).to(device)
    return torch.randn((K + 1, n, *shape), generator=generator).to(device)


def _column(values: torch.Tensor, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[k] shaped to broadcast against a batch ``like`` [B, *shape]."""
    return values.to(like.device)[k].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def step_mean(
    model: EpsModel,
    table: StepTable,
    x: torch.Tensor,
    k: torch.Tensor | int,
    eps_prev: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of step ``k`` from ``x`` (``k`` an int or one index per row) and the model output.

    mean = a[k] x + b[k] eps(x, t[k]) (+ c[k] eps_prev for multistep tables).
    """
    k = k.long().cpu() if torch.is_tensor(k) else torch.full((x.shape[0],), int(k), dtype=torch.long)
    t = table.t[k].to(device=x.device, dtype=x.dtype)
    eps = model(x, t)
    mean = _column(table.a, k, x) * x + _column(table.b, k, x) * eps
    if eps_prev is not None:
        mean = mean + _column(table.c, k, x) * eps_prev
    elif not table.is_markov_gaussian and bool((table.c[k] != 0).any()):
        raise FewstepError(f"the {table.name} table is multistep: its steps cannot be scored one at a time")
    return mean, eps


def gaussian_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x_next; mean, std^2 I), summed over every dimension but the batch: shape [B].

    ``std`` is one value per row. Summing (not averaging) over dimensions makes this the exact
    log-density whose gradient appears in eq. 15 and eq. 20.
    """
    std = std.to(mean.dtype).view(-1, *([1] * (mean.ndim - 1)))
    z = (x_next - mean) / std
    per_dim = -0.5 * z.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return per_dim.flatten(1).sum(dim=1)


def step_log_prob(
    model: EpsModel, table: StepTable, x: torch.Tensor, x_next: torch.Tensor, k: torch.Tensor | int
) -> torch.Tensor:
    """log p_theta(x_next | x) of step ``k`` under the table (eq. 3), summed over dimensions: [B].

    Used to re-score steps drawn from a buffer; differentiable in the model's parameters.
    """
    kk = k.long().cpu() if torch.is_tensor(k) else torch.full((x.shape[0],), int(k), dtype=torch.long)
    std = table.s[kk]
    if (std <= 0).any():
        raise FewstepError(
            f"step(s) {sorted(set(kk[std <= 0].tolist()))} of the {table.name} table are deterministic "
            "(zero variance) and have no log-density; use a table with noise at every step"
        )
    mean, _ = step_mean(model, table, x, kk)
    return gaussian_log_prob(x_next, mean, std.to(x.device))


@dataclass
class Trajectory:
    """A batch of sampling chains: ``x[k]`` is the input of step ``k``, ``x[K]`` the sample x_0.

    ``mean[k]`` and ``std[k]`` are step k's Gaussian parameters and ``log_prob[k]`` the
    log-density of ``x[k + 1]`` given ``x[k]`` (zero where the step is deterministic).
    """

    x: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_prob: torch.Tensor

    @property
    def x0(self) -> torch.Tensor:
        return self.x[-1]

    @property
    def K(self) -> int:
        return int(self.mean.shape[0])

    def select(self, rows: slice | torch.Tensor) -> "Trajectory":
        """The chains ``rows`` of the batch."""
        return Trajectory(x=self.x[:, rows], mean=self.mean[:, rows], std=self.std, log_prob=self.log_prob[:, rows])


def chain(model: EpsModel, table: StepTable, noise: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(k, mean, x_next)`` for each step of the chain started at x_T = noise[0]."""
    if noise.shape[0] != table.K + 1:
        raise ValueError(f"noise has {noise.shape[0]} rows, the {table.K}-step table needs {table.K + 1}")
    x, eps_prev = noise[0], None
    for k in range(table.K):
        mean, eps = step_mean(model, table, x, k, None if table.is_markov_gaussian else eps_prev)
        std = float(table.s[k])
        x = mean + std * noise[k + 1] if std > 0 else mean
        eps_prev = eps
        yield k, mean, x


def rollout(model: EpsModel, table: StepTable, noise: torch.Tensor) -> Trajectory:
    """Run the chain of ``table`` from x_T = noise[0], using noise[k + 1] at step k.

    Returns every step's input, mean, std and log-density, and the final x_0 (``.x0``).
    """
    xs, means, log_probs = [noise[0]], [], []
    for k, mean, x in chain(model, table, noise):
        std = float(table.s[k])
        if std > 0:
            log_probs.append(gaussian_log_prob(x, mean, torch.full((x.shape[0],), std, device=x.device)))
        else:
            log_probs.append(torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
        xs.append(x)
        means.append(mean)
    return Trajectory(
        x=torch.stack(xs), mean=torch.stack(means), std=table.s.to(noise.dtype), log_prob=torch.stack(log_probs)
    )


@torch.no_grad()
def sample(
    model: EpsModel,
    table: StepTable,
    n: int,
    shape: Sequence[int],
    seed: int = 0,
    batch_size: int = 4096,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """``n`` samples x_0 [n, *shape]; sample i depends only on (seed, i), never on ``batch_size``."""
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress, leave=False):
        seeds = [sample_seed(seed, i) for i in range(start, min(n, start + batch_size))]
        noise = draw_noise(table.K, len(seeds), shape, seeds=seeds, device=device)
        for _, _, x in chain(model, table, noise):
            pass
        out.append(x.cpu())
    return torch.cat(out)
