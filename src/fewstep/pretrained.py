"""A loaded model: what every command works on, whichever file it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .config import Config
from .schedules import NoiseSchedule
from .steps import StepTable


@dataclass
class Pretrained:
    """A loaded model: the epsilon-model, the config it was made with, its data shape, its noise
    schedule, the step table it samples with (None: build it from ``config.sampler``), and where
    it came from."""

    model: torch.nn.Module
    config: Config
    shape: tuple[int, ...]
    schedule: NoiseSchedule
    table: StepTable | None
    source: str
    meta: dict = dataclasses.field(default_factory=dict)
    kind: str = "fewstep"

    def uses_recorded_table(self, sampler) -> bool:
        """True when the recorded table is the one to sample with under the ``sampler`` config section:
        there is one, and the section is the model's own (``--set sampler.*`` replaces the table)."""
        recorded = self.meta.get("config", {}).get("sampler")
        return self.table is not None and (recorded is None or recorded == dataclasses.asdict(sampler))

    def table_for(self, sampler, train: torch.Tensor | None = None) -> StepTable:
        """The table to sample with under the ``sampler`` config section (``train``: training data,
        needed only by Analytic-DPM without a recorded Gamma)."""
        from .samplers import build_table

        if self.uses_recorded_table(sampler):
            return self.table
        return build_table(sampler, self.schedule, self.model, train)
