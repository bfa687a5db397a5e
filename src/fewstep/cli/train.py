"""`fewstep pretrain`, `fewstep finetune` and `fewstep quickstart`."""

from __future__ import annotations

import copy
import os
import time

import click

from .common import checkpoint_option, config_options, friendly, run_options

QUICKSTART_DEFAULTS = [
    "data.name=swiss_roll",
    "schedule.kind=sigmoid",
    "schedule.T=10",
    "pretrain.steps=20000",
    "pretrain.batch_size=256",
    "evaluate.n_samples=5000",
]


def _already_done(run, stage: str, steps: int) -> bool:
    if run.finished(stage, steps):
        click.echo(
            f"run {run.path} is already complete ({steps} {stage} steps); nothing to do "
            f"(raise the step count with --set to continue it)"
        )
        return True
    return False


@click.command()
@config_options("pretrain.steps=5000")
@run_options("pretrain")
@friendly
def pretrain(config_path, overrides, run_dir, resume, quiet):
    """Train an epsilon-prediction DDPM (simple loss, EMA weights) on the configured data."""
    from ..api import open_run, pretrain as run_pretrain
    from ..config import load_config

    run = open_run("pretrain", None if resume else load_config(config_path, overrides), run_dir, resume, overrides)
    if resume and _already_done(run, "pretrain", run.config.pretrain.steps):
        return
    model, run = run_pretrain(None, resume=resume, progress=not quiet, run=run)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"checkpoint: {run.checkpoint('pretrain')}")


@click.command()
@checkpoint_option(
    required=False,
    help="The pretrained model to fine-tune: a fewstep checkpoint or a diffusers "
    "pipeline folder (its model, schedule and data are used; with --resume, the run's own).",
)
@click.option(
    "--preset",
    type=click.Choice(["auto", "toy", "paper", "images"]),
    metavar="NAME",
    default="auto",
    show_default=True,
    help="Settings: auto (images for an image model, toy otherwise), toy (fewstep's defaults for vector data: the "
    "paper's toy settings plus a reparameterised, learned last step, linear lr decay from 1e-4 and an EMA), paper "
    "(the paper's toy settings exactly: Adam 5e-5/1e-3/1e-3, lambda 0.1, n_generator 1) or images (the paper's image "
    "settings: lambda 1, n_generator 10, gamma 0.1, Adam 1e-6/1e-4/1e-4, plus a trust region of 2e-4 nats per "
    "generator update, finetune.max_kl).",
)
@config_options("finetune.iterations=3000")
@run_options("finetune")
@friendly
def finetune(checkpoint, preset, config_path, overrides, run_dir, resume, quiet):
    """Shortcut fine-tuning (Algorithm 1) of a pretrained sampler; the variant is set by finetune.estimator/critic_reg.

    SFT-PG (B): the defaults. SFT-PG (GP): --set finetune.critic_reg=gp. SFT (GP), pathwise:
    --set finetune.estimator=pathwise --set finetune.critic_reg=gp. Plain policy gradient:
    --set finetune.estimator=pg. The sampler to tune is the checkpoint's recorded one (unless --set
    sampler.* describes another), else the sampler section's; it is made ready for policy gradient
    (noise at every step) if needed.
    """
    from ..api import finetune as run_finetune, finetune_config, load, open_run
    from ..errors import FewstepError

    if resume:
        run = open_run("finetune", None, run_dir, True, overrides)
        if checkpoint is not None and os.path.realpath(checkpoint) != os.path.realpath(run.source or ""):
            raise FewstepError(f"--checkpoint {checkpoint} is not the model this run started from ({run.source})")
        if _already_done(run, "finetune", run.config.finetune.iterations):
            return
        model = load(run.source)
    else:
        if checkpoint is None:
            raise FewstepError("give --checkpoint (the pretrained model to fine-tune)")
        model = load(checkpoint)
        run = open_run(
            "finetune", finetune_config(model, preset, config_path, overrides), run_dir, False, source=str(checkpoint)
        )
    tuned, run = run_finetune(model, resume=resume, progress=not quiet, run=run)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"checkpoint: {run.checkpoint('finetune')} (best held-out: {run.checkpoint('finetune_best')})")


@click.command()
@run_options("quickstart")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config key, e.g. --set finetune.iterations=3000 (repeatable; values are YAML).",
)
@friendly
def quickstart(run_dir, resume, quiet, overrides):
    """The main job end to end on the swiss roll, in a few minutes on a laptop CPU.

    Pretrains a T = 10 DDPM, fine-tunes its sampler with SFT-PG (B), and scores both beside the
    noise floor, with before/after figures.
    """
    from ..api import finetune as run_finetune, open_run, pretrain as run_pretrain
    from ..config import load_config

    started = time.time()
    # on --resume the run keeps its recorded config: re-applying the defaults would undo its overrides
    config = None if resume else load_config(None, [*QUICKSTART_DEFAULTS, *overrides])
    run = open_run("quickstart", config, run_dir, resume, overrides)
    if resume and _already_done(run, "finetune", run.config.finetune.iterations):
        return
    model, run = run_pretrain(None, resume=resume, progress=not quiet, run=run)
    tuned, run = run_finetune(copy.deepcopy(model), resume=resume, progress=not quiet, run=run)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"took {time.time() - started:.0f} s; run directory: {run.path}")
