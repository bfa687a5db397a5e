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
