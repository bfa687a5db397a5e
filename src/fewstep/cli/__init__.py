"""The ``fewstep`` command line."""

from __future__ import annotations

import click

from .common import Commands
from .schedule import schedule_group
from .train import finetune, pretrain, quickstart
from .use import evaluate, export, sample, show_config


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fewstep")
def main():
    """fewstep: make pretrained diffusion models sample well in few steps.

    Typical use: `fewstep quickstart` runs the whole job on the swiss roll. The commands are
    `pretrain` (train a DDPM), `finetune` (shortcut fine-tuning, SFT-PG), `schedule` (optimise a
    few-step schedule), `sample` (draw from a model), `evaluate` (sample quality beside the noise
    floor), `export` (write a diffusers pipeline folder) and `config` (every setting). Models are
    fewstep checkpoints or diffusers pipeline folders. Every run writes a directory with its config,
    metrics, checkpoints, figures and summary.
    """


for command in (pretrain, finetune, quickstart, sample, evaluate, export, show_config, schedule_group):
    main.add_command(command)

__all__ = ["main"]

if __name__ == "__main__":
    main()
