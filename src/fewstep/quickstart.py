"""``fewstep quickstart``: the main job end to end on the swiss roll with laptop-sized defaults.

Pretrain a T = 10 DDPM, fine-tune its sampler with SFT-PG (B), evaluate both beside the noise
floor, and draw before/after figures.
"""
from __future__ import annotations

import copy
import time

from .finetune import finetune
from .pretrain import pretrain
from .reports import score_rows, training_curves, write_summary
from .runs import Run
from .schedules import make_schedule
from .steps import table_from_config

QUICKSTART_DEFAULTS = [
    "data.name=swiss_roll",
    "schedule.kind=sigmoid",
    "schedule.T=10",
    "pretrain.steps=6000",
    "pretrain.batch_size=256",
    "finetune.iterations=1500",
    "finetune.batch_size=256",
    "finetune.eval_every=250",
    "evaluate.n_samples=5000",
]


def run_quickstart(run: Run, resume: bool = False, progress: bool = True) -> str:
    """Pretrain, fine-tune, evaluate with the noise floor, draw figures, write the summary."""
    config = run.config
    started = time.time()
    pretrained = pretrain(config, run, resume=resume, progress=progress)
    table = table_from_config(config, make_schedule(config.schedule.kind, config.schedule.T))
    tuned, table = finetune(config, run, copy.deepcopy(pretrained), resume=resume, progress=progress, table=table)
    rows = score_rows(run, config, [(f"DDPM T={config.schedule.T}", pretrained), ("SFT-PG (B)", tuned)], table, progress)
    training_curves(run, config)
    title = f"fewstep quickstart ({config.data.name}, {config.schedule.kind} schedule, T={config.schedule.T})"
    body = [f"pretrained {config.pretrain.steps} steps, fine-tuned {config.finetune.iterations} iterations; {rows[0]}", *rows[1:]]
    return write_summary(run, title, body, time.time() - started)
