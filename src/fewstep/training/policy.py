"""The generator of shortcut fine-tuning: an epsilon-network and the step table it samples with.

Section 4 of the paper trains the network's weights theta and keeps the sampler's variances; two
further choices are offered (``finetune.train`` and ``finetune.learn_variance``):

* ``train = network`` (the paper): theta is trained, the table's coefficients stay fixed.
* ``train = table``: the network is frozen and policy gradient trains the table's per-step a, b
  and s instead. The log-density of a step depends on them directly, so the update needs no
  backward pass through the network: cheap for large models.
* ``learn_variance``: a log-std, initialised at the table's std, trained by the same objective
  (the paper's Section 6.4 names learning the variances as future work): of the final ``tail``
  steps only (``last``: the steps reparameterised by ``finetune.pathwise_steps``, whose gradient is
  direct and low-variance) or of every step (``all``: the earlier steps' by the score-function
  gradient, which hardly moves them).

A :class:`Policy` is an ``nn.Module`` whose forward is the network's, and whose :attr:`table` is a
``StepTable`` built from its parameters; rollouts and re-scoring both read that table, so they
always agree. :meth:`Policy.frozen` gives the table to sample with and to save.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import FewstepError
from ..rollout import model_dtype
from ..steps import StepTable

TRAIN = ("network", "table")
VARIANCES = ("none", "last", "all")


class Policy(nn.Module):
    def __init__(
        self, network: nn.Module, table: StepTable, train: str = "network", learn_variance: str = "none", tail: int = 1
    ):
        super().__init__()
        if train not in TRAIN:
            raise FewstepError(f"finetune.train is {train!r}; choose one of {', '.join(TRAIN)}")
        if learn_variance not in VARIANCES:
            raise FewstepError(f"finetune.learn_variance is {learn_variance!r}; choose one of {', '.join(VARIANCES)}")
        if train == "table":
            learn_variance = "all"  # the table's s is one of its trained columns
        if (train == "table" or learn_variance != "none") and not table.scoreable:
            raise FewstepError(
                f"the {table.name} table has deterministic or multistep steps; its coefficients "
                "cannot be trained by policy gradient"
            )
        self.network = network.requires_grad_(train == "network")
        self.base = table
        self.a = nn.Parameter(table.a.clone()) if train == "table" else None
        self.b = nn.Parameter(table.b.clone()) if train == "table" else None
        learned = {"none": None, "last": table.s[table.K - min(tail, table.K) :], "all": table.s}[learn_variance]
        self.log_s = None if learned is None else nn.Parameter(learned.log())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.network(x, t)

    def train(self, mode: bool = True) -> "Policy":
        """The network stays in eval mode whatever the policy's mode (no dropout, frozen norm statistics):
        a rollout and the re-scoring of its steps must see the same network, or the policy gradient is
        not that of the sampler being tuned (the reference implementation fine-tunes in eval mode too)."""
        super().train(mode)
        self.network.eval()
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The network's dtype (the table's coefficients are float64)."""
        return model_dtype(self.network)

    @property
    def trains_table(self) -> bool:
        return self.a is not None or self.log_s is not None

    @property
    def table(self) -> StepTable:
        """The current table (differentiable in the trained coefficients)."""
        if not self.trains_table:
            return self.base
        columns = {}
        home = self.base.s.device  # the table's columns stay where the table is, whatever device the policy is on
        if self.a is not None:
            columns.update(a=self.a.to(home), b=self.b.to(home))
        if self.log_s is not None:  # all K stds, or the last one after the table's others
            columns["s"] = torch.cat([self.base.s[: self.base.K - len(self.log_s)], self.log_s.exp().to(home)])
        trained = sorted(columns)
        return dataclasses.replace(self.base, **columns, settings={**self.base.settings, "trained_columns": trained})

    def frozen(self) -> StepTable:
        """The current table as constants (to sample with and to save)."""
        table = self.table
        if not self.trains_table:
            return table
        return dataclasses.replace(
            table, a=table.a.detach().clone(), b=table.b.detach().clone(), s=table.s.detach().clone()
        )

    def coefficient_parameters(self) -> list[nn.Parameter]:
        """The trained a and b of ``train=table``."""
        return [p for p in (self.a, self.b) if p is not None]

    def std_parameters(self) -> list[nn.Parameter]:
        """The learned log-stds."""
        return [] if self.log_s is None else [self.log_s]
