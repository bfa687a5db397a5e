"""`fewstep schedule`: optimise a pretrained model's few-step schedule (Phase 1) and fine-tune at it (Phase 2)."""

from __future__ import annotations

import click

from .common import checkpoint_option, config_options, friendly


def _open(checkpoint: str, run_dir: str | None, config_path, overrides, kind: str, keep_schedule: bool = False):
    """The model, the data and a new run whose config is the model's with --config/--set applied;
    everything is checked before the run directory is written."""
    from .. import preflight
    from ..api import finetune_config, load, open_run

    model = load(checkpoint)
    config = finetune_config(model, "toy", config_path, overrides)
    run = open_run(kind, config, run_dir, False, source=str(checkpoint))
    data = preflight.schedule(run, model, keep_schedule)
    return model, data, run.start()


def _options(fn):
    fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
    fn = config_options("schedule_opt.steps=6")(fn)
    fn = click.option(
        "--run-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="New run directory for the schedule, checkpoint and summary (default: runs/<command>-<time>).",
    )(fn)
    return checkpoint_option(
        help="The pretrained model: a fewstep checkpoint (e.g. runs/.../checkpoints/"
        "pretrain.safetensors) or a diffusers pipeline folder."
    )(fn)


@click.group("schedule")
def schedule_group():
    """Few-step schedules for a pretrained model.

    `optimise` picks the K model times of a deterministic first-order sampler by minimising a
    discretisation loss (exactly on a grid with `schedule_opt.method=dp`, or by Adam with early
    stopping on held-out sliced W2 with `method=adam`). `finetune` alternates that with fine-tuning
    the model at the chosen steps. Both save a checkpoint recording the sampler, so `fewstep sample
    --checkpoint RUN/checkpoints/<stage>.safetensors` uses it. The schedule_opt section holds the settings.
    """


@schedule_group.command("optimise")
@_options
@friendly
def optimise(checkpoint, run_dir, config_path, overrides, quiet):
    """Phase 1: optimise the K-step schedule (K = schedule_opt.steps); writes checkpoints/schedule.safetensors."""
    from ..schedule_opt.jobs import optimise_job

    model, data, run = _open(checkpoint, run_dir, config_path, overrides, "schedule")
    optimise_job(run, model, progress=not quiet, data=data)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"checkpoint: {run.checkpoint('schedule')}")


@schedule_group.command("finetune")
@_options
@click.option(
    "--keep-schedule",
    is_flag=True,
    help="Phase 2 only, at the schedule recorded in --checkpoint (from `fewstep schedule optimise`).",
)
@friendly
def finetune(checkpoint, run_dir, config_path, overrides, quiet, keep_schedule):
    """Phase 1 + 2 for schedule_opt.rounds rounds; writes checkpoints/schedule_finetune.safetensors."""
    from ..schedule_opt.jobs import finetune_job

    model, data, run = _open(checkpoint, run_dir, config_path, overrides, "schedule-finetune", keep_schedule)
    finetune_job(run, model, keep_schedule, progress=not quiet, data=data)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"checkpoint: {run.checkpoint('schedule_finetune')}")
