"""Rolling out and re-scoring sampling chains (paper eq. 3-4).

``step_mean`` is the one place a step's mean is computed: ``rollout`` and ``sample`` use it to
generate and ``step_log_prob`` to re-score stored steps, so the two can never disagree (the
ddpo-pytorch pattern). Neither is wrapped in ``torch.no_grad``: callers choose.

Noise comes from a *noise source*, a callable ``noise(step) -> [n, *shape]`` asked once per step:
step 0 is x_T and step k + 1 the z of table step k. :class:`SeededNoise` gives every sample its own
counter-based stream (:mod:`fewstep.noise`), so sample i depends only on (seed, i) at any batch
size while memory stays O(batch x sample size); :class:`GeneratorNoise` draws from one run-level
generator (training rollouts, whose state is checkpointed); :class:`TensorNoise` replays a block.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import torch

from .errors import FewstepError
from .noise import gaussian_noise
from .steps import StepTable

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""An epsilon-model: ``eps = model(x, t)`` with ``x`` of shape [B, *shape] and ``t`` of shape [B]."""


class NoiseSource(Protocol):
    def __call__(self, step: int) -> torch.Tensor: ...


@dataclass
class SeededNoise:
    """Per-sample noise: rows are samples ``indices`` of the stream of ``seed`` (batch-size invariant)."""

    seed: int
    indices: torch.Tensor
    shape: tuple[int, ...]
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32

    def __call__(self, step: int) -> torch.Tensor:
        return gaussian_noise(self.seed, self.indices, step, self.shape, self.device, self.dtype)


@dataclass
class GeneratorNoise:
    """Noise of ``n`` chains from one generator; ``rows`` keeps this process's chains (data parallelism)."""

    random: torch.Generator
    n: int
    shape: tuple[int, ...]
    device: torch.device | str = "cpu"
    rows: torch.Tensor | slice | None = None

    def __call__(self, step: int) -> torch.Tensor:
        z = torch.randn((self.n, *self.shape), generator=self.random)
        return (z if self.rows is None else z[self.rows]).to(self.device)


@dataclass
class TensorNoise:
    """A pre-drawn block [K + 1, n, *shape]."""

    block: torch.Tensor

    def __call__(self, step: int) -> torch.Tensor:
        return self.block[step]


@dataclass
class KeptNoise:
    """A noise source that keeps what it hands to the steps from ``first`` on (step k draws noise(k + 1)),
    so a rollout's tail can be re-run with the very noise it was drawn with."""

    source: NoiseSource
    first: int
    kept: dict[int, torch.Tensor] = field(default_factory=dict)

    def __call__(self, step: int) -> torch.Tensor:
        z = self.source(step)
        if step > self.first:
            self.kept[step - 1] = z
        return z

    def of_steps(self, steps: range, like: torch.Tensor) -> torch.Tensor:
        """[len(steps), n, ...]: the noise of ``steps`` (zeros for a step that drew none: its std is 0)."""
        return torch.stack([self.kept.get(k, torch.zeros_like(like)) for k in steps])


def _index(k: torch.Tensor | int, n: int) -> torch.Tensor:
    return k.long().cpu() if torch.is_tensor(k) else torch.full((n,), int(k), dtype=torch.long)


def _column(values: torch.Tensor, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[k] shaped to broadcast against a batch ``like`` [B, *shape]."""
    return values.to(like.device)[k].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def step_mean(
    model: EpsModel,
    table: StepTable,
    x: torch.Tensor,
    k: torch.Tensor | int,
    eps_prev: torch.Tensor | None = None,
    x_prev: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of step ``k`` from ``x`` (``k`` an int or one index per row) and the model output.

    mean = a[k] x + b[k] eps(x, t[k]) (+ c[k] eps_prev + d[k] x_prev for multistep tables). With
    ``table.clip_x0 = r`` the same mean is computed in posterior form, q x + p clip(x0_hat, -r, r),
    where x0_hat = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar), p = -b sqrt(alpha_bar / (1 -
    alpha_bar)) and q = a + b / sqrt(1 - alpha_bar) (diffusers' ``clip_sample``).
    """
    k = _index(k, x.shape[0])
    t = table.t[k].to(device=x.device, dtype=x.dtype)
    eps = model(x, t)
    a, b = _column(table.a, k, x), _column(table.b, k, x)
    if table.clip_x0 is None:
        mean = a * x + b * eps
    else:
        alpha_bar = _column(table.alpha_bar, k, x)
        sigma = (1 - alpha_bar).sqrt()
        x0 = ((x - sigma * eps) / alpha_bar.sqrt()).clamp(-table.clip_x0, table.clip_x0)
        mean = (a + b / sigma) * x - b * (alpha_bar / (1 - alpha_bar)).sqrt() * x0
    if eps_prev is not None:
        mean = mean + _column(table.c, k, x) * eps_prev + _column(table.d, k, x) * x_prev
    elif bool((table.c[k] != 0).any() or (table.d[k] != 0).any()):
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
    k = _index(k, x.shape[0])
    std = table.s[k]
    if bool((std <= 0).any()):
        raise FewstepError(
            f"step(s) {sorted(set(k[std <= 0].tolist()))} of the {table.name} table are deterministic "
            "(zero variance) and have no log-density; use fewstep.samplers.for_policy_gradient(table)"
        )
    mean, _ = step_mean(model, table, x, k)
    return gaussian_log_prob(x_next, mean, std.to(x.device))


def chain(
    model: EpsModel, table: StepTable, noise: NoiseSource | torch.Tensor
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(k, x, mean, x_next)`` for each step of the chain started at x_T = noise(0).

    ``noise`` is a noise source, or a pre-drawn block [K + 1, n, *shape].
    """
    noise = TensorNoise(noise) if torch.is_tensor(noise) else noise
    x = noise(0)
    eps_prev = x_prev = None
    multistep = not table.is_markov
    for k in range(table.K):
        mean, eps = step_mean(model, table, x, k, eps_prev, x_prev)
        std = table.s[k]  # a tensor: the sample is differentiable in a trained std too
        x_next = mean + std.to(mean) * noise(k + 1) if float(std.detach()) > 0 else mean
        yield k, x, mean, x_next
        if multistep:
            eps_prev, x_prev = eps, x
        x = x_next


@dataclass
class Trajectory:
    """A batch of sampling chains: ``x[k]`` is the input of step ``k``, ``x[K]`` the sample x_0.

    ``mean[k]`` and ``std[k]`` are step k's Gaussian parameters and ``log_prob[k]`` the
    log-density of ``x[k + 1]`` given ``x[k]`` (zero where the step is deterministic).
    """

    x: torch.Tensor
    mean: torch.Tensor | None
    std: torch.Tensor
    log_prob: torch.Tensor | None

    @property
    def x0(self) -> torch.Tensor:
        return self.x[-1]

    @property
    def K(self) -> int:
        return int(self.x.shape[0]) - 1

    def select(self, rows: slice | torch.Tensor) -> "Trajectory":
        """The chains ``rows`` of the batch."""
        mean = None if self.mean is None else self.mean[:, rows]
        log_prob = None if self.log_prob is None else self.log_prob[:, rows]
        return Trajectory(x=self.x[:, rows], mean=mean, std=self.std, log_prob=log_prob)


def rollout(
    model: EpsModel, table: StepTable, noise: NoiseSource | torch.Tensor, states_only: bool = False
) -> Trajectory:
    """Run the chain of ``table`` from x_T = noise(0), using noise(k + 1) at step k.

    Returns every step's input, mean, std and log-density, and the final x_0 (``.x0``); with
    ``states_only`` only the states (fine-tuning re-scores the steps it draws). Without
    gradient the states are written into preallocated tensors (no list of steps is stacked, so
    memory is the trajectory itself); with gradient they are stacked so autograd can follow them.
    """
    xs = means = log_probs = None
    kept_x, kept_mean, kept_lp = [], [], []
    for k, x, mean, x_next in chain(model, table, noise):
        std = table.s[k]
        if states_only:
            lp = None
        elif float(std.detach()) > 0:
            lp = gaussian_log_prob(x_next, mean, std.expand(x.shape[0]).to(x.device))
        else:
            lp = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if torch.is_grad_enabled():
            kept_x.append(x)
            kept_mean.append(mean)
            kept_lp.append(lp)
            continue
        if xs is None:
            xs = x.new_empty((table.K + 1, *x.shape))
            if not states_only:
                means, log_probs = mean.new_empty((table.K, *mean.shape)), lp.new_empty((table.K, *lp.shape))
        xs[k] = x
        if not states_only:
            means[k], log_probs[k] = mean, lp
    if xs is None:
        xs = torch.stack([*kept_x, x_next])
        if not states_only:
            means, log_probs = torch.stack(kept_mean), torch.stack(kept_lp)
    else:
        xs[table.K] = x_next
    return Trajectory(x=xs, mean=means, std=table.s, log_prob=log_probs)


@contextlib.contextmanager
def eval_mode(model):
    """Run ``model`` in eval mode (no dropout) and restore its mode afterwards."""
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        yield model
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)


def model_dtype(model, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype a model computes in: its ``dtype`` attribute when it has one, else its first parameter's."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return param.dtype if param is not None and param.is_floating_point() else default


@torch.no_grad()
def sample(
    model: EpsModel,
    table: StepTable,
    n: int,
    shape: Sequence[int],
    seed: int = 0,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = False,
    first_index: int = 0,
) -> torch.Tensor:
    """``n`` samples x_0 [n, *shape] on the CPU; sample i depends only on (seed, first_index + i).

    The network runs in eval mode. Noise is drawn step by step, so memory is O(batch_size x sample
    size) whatever the number of steps, and ``batch_size`` changes nothing but speed and memory.
    """
    from .progress import bar as progress_bar

    shape, dtype = tuple(int(s) for s in shape), model_dtype(model)
    out = []
    with (
        eval_mode(model),
        progress_bar(total=n, enabled=progress, desc="sampling", unit="sample", leave=False) as bar,
    ):
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            indices = torch.arange(first_index + start, first_index + stop)
            x = None
            for k, _, _, x in chain(model, table, SeededNoise(seed, indices, shape, device, dtype)):
                bar.set_postfix_str(f"step {k + 1}/{table.K}", refresh=False)
            out.append(x.cpu())
            bar.update(stop - start)
    return torch.cat(out) if out else torch.empty((0, *shape))
