"""`fewstep schedule`: optimise a pretrained model's few-step schedule (Phase 1) and fine-tune at it (Phase 2)."""
from __future__ import annotations


import click

from .cli import CONFIG_HELP, SET_HELP, friendly


def _open(checkpoint: str, run_dir: str | None, config_path, overrides, name: str):
    """The checkpoint's model, and a new run whose config is the checkpoint's with --config/--set applied."""
    from .checkpoint import check_matches
    from .config import load_config, to_dict
    from .models import load_model
    from .runs import Run

    model, config, meta = load_model(checkpoint)
    config = load_config(config_path, overrides, base=to_dict(config))
    check_matches(meta, {"model": to_dict(config.model)}, checkpoint)  # --config/--set cannot change a trained model
    return model, Run.create(run_dir, config, name), meta


def _options(fn):
    fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help=SET_HELP + " The schedule_opt section holds this command's settings.")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      help=CONFIG_HELP + " Applied on top of the checkpoint's config.")(fn)
    fn = click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                      help="New run directory for the schedule, checkpoint and summary (default: runs/<command>-<time>).")(fn)
    fn = click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, exists=True),
                      help="Checkpoint of a pretrained epsilon-model (e.g. runs/.../checkpoints/pretrain.safetensors).")(fn)
    return fn


@click.group("schedule")
def schedule_group():
    """Few-step schedules for a pretrained model (issue 4).

    `optimise` picks the K model times of a deterministic first-order sampler by minimising this
    project's discretisation loss (exactly on a grid with `schedule_opt.method=dp`, or by Adam with
    early stopping on held-out sliced W2 with `method=adam`). `finetune` alternates that with
    fine-tuning the model at the chosen steps. Both save a checkpoint recording the sampler, so
    `fewstep sample --checkpoint RUN/checkpoints/<stage>.safetensors` uses it.
    """


@schedule_group.command("optimise")
@_options
@friendly
def optimise(checkpoint, run_dir, config_path, overrides, quiet):
    """Phase 1: optimise the K-step schedule (K = schedule_opt.steps); writes checkpoints/schedule.safetensors."""
    from .schedule_opt.jobs import optimise_job

    model, run, meta = _open(checkpoint, run_dir, config_path, overrides, "schedule")
    scores = optimise_job(run, model, tuple(meta["shape"]), progress=not quiet)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"checkpoint: {run.checkpoint('schedule')}")
    return scores


@schedule_group.command("finetune")
@_options
@click.option("--keep-schedule", is_flag=True,
              help="Phase 2 only, at the schedule recorded in --checkpoint (from `fewstep schedule optimise`).")
@friendly
def finetune(checkpoint, run_dir, config_path, overrides, quiet, keep_schedule):
    """Phase 1 + 2 for schedule_opt.rounds rounds; writes checkpoints/schedule_finetune.safetensors."""
    from .schedule_opt.jobs import finetune_job

    model, run, meta = _open(checkpoint, run_dir, config_path, overrides, "schedule-finetune")
    finetune_job(run, model, tuple(meta["shape"]), meta, keep_schedule, progress=not quiet)
    click.echo((run.path / "summary.md").read_text().strip())
    click.echo(f"checkpoint: {run.checkpoint('schedule_finetune')}")
