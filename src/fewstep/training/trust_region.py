"""A trust region on the generator: one update may move the sampler by at most ``max_kl`` nats.

Each step of the sampler is a Gaussian policy p_theta(x_t | x_{t+1}) = N(mu_theta(x_{t+1}, k), s_k^2 I)
(eq. 3). After a generator update, the KL divergence KL(p_old || p_new) of every step is measured on
a fixed probe of the buffer's entries (eq. 20's (trajectory, step) pairs) and averaged; when the
mean exceeds ``max_kl`` the parameters' change is scaled back (by sqrt(max_kl / KL), then halved
until it is within), as in the line search of TRPO (Schulman et al., 2015, the constraint of eq. 12
there). The paper's own trust region is the gradient-norm clip gamma (Section 4.2), which bounds the
gradient, not how far the sampler moves.

Why the sampler and not the weights: Adam moves every weight by about the learning rate whatever
its gradient's scale, so the same rate moves a U-Net's output far more than a toy MLP's. On the
toys at the default 1e-4 one update moves eq. 20's steps by 1e-6 to 4e-4 nats; on the 14x14 MNIST
U-Net 2e-6 was the largest rate that did not diverge, and it moves them by 7e-5 to 1e-3 (1e-5:
1e-3 to 4e-2, 1e-4: 0.04 to 6; see the README). A bound in nats means the same on both.

The probe is deterministic (no random numbers: a resumed or multi-process run takes the same
decisions), spread evenly over the steps and the chains of the buffer, whose entries are i.i.d.
rollouts of the sampler before the update. It covers the steps eq. 20's score-function gradient
trains, not a reparameterised tail (``finetune.pathwise_steps``): the tail's gradient is pathwise,
and its learned stds shrink towards the data's noise (0.0005 at T = 4), where the KL of any change
of its means grows as 1 / s^2. Measured over the whole table, the bound froze the tail and the swiss
roll at T = 4 ended at W2 6.6e-2 against 3.0e-2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..distributed import SINGLE, Context, average
from ..rollout import step_mean

PROBE_ENTRIES = 64
"""Buffer entries the KL is measured on: one forward pass of the network on them per update (the next
update starts from the means measured last), one more per scale-back, one per iteration to start. The
weights before each update are kept to scale back to: one more copy of the trained parameters."""
MAX_HALVINGS = 20


def gaussian_kl(
    mean_old: torch.Tensor, std_old: torch.Tensor, mean_new: torch.Tensor, std_new: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_old, std_old^2 I) || N(mean_new, std_new^2 I)) per row, summed over dimensions: [B].

    ``std_*`` hold one value per row.
    """
    D = mean_old[0].numel()
    ratio = (std_old / std_new).to(mean_old.dtype)
    shift = (mean_new - mean_old).flatten(1).pow(2).sum(1) / (2 * std_new.to(mean_old.dtype) ** 2)
    return shift + D * (0.5 * ratio**2 - ratio.log() - 0.5)


def probe_rows(K: int, chains: int, entries: int = PROBE_ENTRIES) -> tuple[torch.Tensor, torch.Tensor]:
    """(step k, chain i) of ``entries`` probe rows spread evenly over K steps and ``chains`` chains."""
    j = torch.arange(entries)
    return j * K // entries, (j * 7919) % chains


def trained(generator: nn.Module) -> list[nn.Parameter]:
    """The parameters a generator update changes (network weights, table coefficients, log-stds)."""
    return [p for p in generator.parameters() if p.requires_grad]


def copies(params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Detached copies of ``params`` (the weights an update is scaled back towards)."""
    return [p.detach().clone() for p in params]


@dataclass
class Snapshot:
    """The generator before an update: its parameters and the probe's step means and stds."""

    params: list[torch.Tensor]
    mean: torch.Tensor
    std: torch.Tensor


class TrustRegion:
    """Bounds the mean per-step KL divergence of one generator update by ``max_kl`` (see the module docstring)."""

    def __init__(self, max_kl: float, ctx: Context = SINGLE):
        self.max_kl, self.ctx = max_kl, ctx

    def probe(self, states: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe's inputs x_{t+1} and step indices k < ``steps`` from this process's states [K + 1, n, ...]."""
        k, i = probe_rows(steps, states.shape[1])
        return states[k.to(states.device), i.to(states.device)], k

    @staticmethod
    def _policy(generator: nn.Module, x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe's step means and stds under the generator's current table."""
        table = generator.table
        with torch.no_grad():
            mean, _ = step_mean(generator, table, x, k)
        return mean, table.s.detach()[k].to(mean.device)

    def _kl(self, before: Snapshot, mean: torch.Tensor, std: torch.Tensor) -> float:
        """The mean per-step KL(before || now) over the probe, averaged over processes."""
        return average(gaussian_kl(before.mean, before.std, mean, std).mean().item(), self.ctx)

    def snapshot(self, generator: nn.Module, x: torch.Tensor, k: torch.Tensor) -> Snapshot:
        return Snapshot(copies(trained(generator)), *self._policy(generator, x, k))

    def limit(self, generator: nn.Module, before: Snapshot, x: torch.Tensor, k: torch.Tensor) -> tuple[Snapshot, dict]:
        """Scale the update since ``before`` back until its mean per-step KL (averaged over processes) is
        within ``max_kl``; returns the snapshot the next update starts from (its probe means are the ones
        measured last, so each update costs one forward pass of the probe unless it is scaled back) and
        the first KL and the scale applied."""
        params = trained(generator)
        mean, std = self._policy(generator, x, k)
        kl = first = self._kl(before, mean, std)
        scale, halvings = 1.0, 0
        while not kl <= self.max_kl and halvings < MAX_HALVINGS:
            # KL is quadratic in a small step: the first scale-back aims at the bound, then halve until within
            new = math.sqrt(self.max_kl / kl) if scale == 1.0 and math.isfinite(kl) else 0.5 * scale
            with torch.no_grad():
                for p, old in zip(params, before.params):
                    p.copy_(old + (new / scale) * (p - old))
            scale, halvings = new, halvings + 1
            mean, std = self._policy(generator, x, k)
            kl = self._kl(before, mean, std)
        return Snapshot(copies(params), mean, std), {"policy_kl": first, "update_scale": scale}
