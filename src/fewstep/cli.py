"""The ``fewstep`` command line: pretrain, sample, evaluate, quickstart, config."""
from __future__ import annotations

import copy
import functools
import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from .errors import FewstepError

CONFIG_HELP = "YAML config file; `fewstep config` lists every key with its default and meaning."
SET_HELP = "Override one config key, e.g. --set pretrain.steps=500 (repeatable; values are YAML)."


def friendly(fn):
    """Turn FewstepError (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FewstepError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: the last checkpoint is kept; continue with --resume", err=True)
            sys.exit(130)

    return wrapper


def config_options(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)(fn)
    return fn


def open_run(run_dir: str | None, config_path, overrides, resume: bool, default_name: str):
    """A fresh run directory for this config, or (with resume) the existing one."""
    from .config import load_config
    from .runs import Run

    if resume:
        if run_dir is None or not Path(run_dir).is_dir():
            raise FewstepError("--resume needs --run-dir pointing at an existing run directory")
        return Run.resume(run_dir, list(overrides))
    return Run.create(run_dir, load_config(config_path, overrides), default_name)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fewstep")
def main():
    """fewstep: make pretrained diffusion models sample well in few steps.

    Typical use: `fewstep quickstart` runs the whole job on the swiss roll. The stages are
    `pretrain` (train a DDPM), `finetune` (shortcut fine-tuning, SFT-PG), `sample` (draw from a
    checkpoint) and `evaluate` (W2 against the data, with the noise floor). Every run writes a directory with its config, metrics,
    checkpoints, figures and summary.
    """


@main.command("config")
def show_config():
    """Print every config key with its default and meaning."""
    from .config import describe

    click.echo("\n".join(describe()))


@main.command()
@config_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/pretrain-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly
def pretrain(config_path, overrides, run_dir, resume, quiet):
    """Train an epsilon-prediction DDPM (simple loss, EMA weights) on the configured data."""
    from .pretrain import pretrain as run_pretrain

    from .reports import score_rows, training_curves, write_summary
    from .schedules import make_schedule
    from .steps import table_from_config

    run = open_run(run_dir, config_path, overrides, resume, "pretrain")
    started = time.time()
    model = run_pretrain(run.config, run, resume=resume, progress=not quiet)
    c = run.config
    rows = score_rows(run, c, [(f"DDPM T={c.schedule.T}", model)], table_from_config(c, make_schedule(c.schedule.kind, c.schedule.T)), not quiet)
    training_curves(run, c)
    click.echo(write_summary(run, f"fewstep pretrain ({c.data.name}, {c.schedule.kind} schedule, T={c.schedule.T}, {c.pretrain.steps} steps)",
                             rows, time.time() - started))
    click.echo(f"checkpoint: {run.checkpoint('pretrain')}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A fewstep checkpoint (.safetensors).")
@click.option("-n", "--num-samples", default=10_000, show_default=True, type=click.IntRange(min=1), help="Samples to draw.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Sample i depends only on (seed, i), not on the batch size.")
@click.option("--batch-size", default=4096, show_default=True, type=click.IntRange(min=1), help="Samples per batch.")
@click.option("--out", default="samples.npy", show_default=True, type=click.Path(dir_okay=False), help="Output .npy file [n, D].")
@click.option("--figure", type=click.Path(dir_okay=False), default=None, help="Also write a scatter plot (2-D data) to this PNG.")
@friendly
def sample(checkpoint, num_samples, seed, batch_size, out, figure):
    """Draw samples from a checkpoint with the sampler recorded in it."""
    from .models import load_model, table_for_checkpoint
    from .rollout import sample as draw

    model, config, meta = load_model(checkpoint)
    table = table_for_checkpoint(config, meta)
    x = draw(model, table, num_samples, tuple(meta["shape"]), seed=seed, batch_size=batch_size, progress=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.save(out, x.numpy())
    click.echo(f"wrote {num_samples} samples ({table.K} steps) to {out}")
    if figure:
        from .data import DataSource
        from .plots import scatter

        scatter([(f"{table.K}-step samples", x)], DataSource(config.data).draw(num_samples, 1), figure)


@main.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Evaluate this checkpoint's sampler.")
@click.option("--samples", type=click.Path(dir_okay=False), default=None, help="Or evaluate samples from a .npy file [n, D].")
@config_options
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the scores as JSON here.")
@friendly
def evaluate(checkpoint, samples, config_path, overrides, out):
    """Exact W2 and sliced W2 against the data, printed beside the noise floor."""
    from .config import load_config
    from .evaluation import evaluate_sampler, evaluate_samples, format_scores

    if (checkpoint is None) == (samples is None):
        raise FewstepError("give exactly one of --checkpoint and --samples")
    if checkpoint:
        from .models import load_model, table_for_checkpoint

        model, config, meta = load_model(checkpoint)
        if config_path or overrides:
            from .config import to_dict

            config = load_config(config_path, overrides, base=to_dict(config))
            model, config, meta = load_model(checkpoint, config)  # its model and schedule must match the config
        table = table_for_checkpoint(config, meta)
        _, result = evaluate_sampler(model, table, config, progress=True)
    else:
        from .data import load_array

        config = load_config(config_path, overrides)
        result = evaluate_samples(load_array(samples), config)
    click.echo(format_scores(result))
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Pretrained checkpoint to fine-tune (its model, schedule and data are used).")
@click.option("--preset", type=click.Choice(["toy", "images"]), default="toy", show_default=True,
              help="Paper hyper-parameters: toy (lambda 0.1, n_generator 1, Adam 5e-5/1e-3/1e-3) or images (lambda 1, n_generator 10, gamma 0.1, Adam 1e-6/1e-4/1e-4).")
@config_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/finetune-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly
def finetune(checkpoint, preset, config_path, overrides, run_dir, resume, quiet):
    """Shortcut fine-tuning (SFT-PG, Algorithm 1) of a pretrained sampler; variant set by finetune.estimator/critic_reg.

    SFT-PG (B): the defaults. SFT-PG (GP): --set finetune.critic_reg=gp. SFT (GP), pathwise:
    --set finetune.estimator=pathwise --set finetune.critic_reg=gp. Plain policy gradient:
    --set finetune.estimator=pg.
    """
    from .finetune import finetune as run_finetune, finetune_config
    from .reports import score_rows, training_curves, write_summary
    from .models import load_model, table_for_checkpoint
    from .runs import Run
    from .sftpg import method_name

    if resume:
        run = open_run(run_dir, None, overrides, True, "finetune")
    else:
        run = Run.create(run_dir, finetune_config(checkpoint, preset, config_path, list(overrides)), "finetune")
    model, _, meta = load_model(checkpoint, run.config)
    # A checkpoint that records its table (an optimised schedule, an earlier fine-tune) starts the
    # fine-tuning from that table, unless sampler settings are given on the command line.
    table = None
    if meta.get("table") and not any(o.strip().startswith("sampler.") for o in overrides):
        table = table_for_checkpoint(run.config, meta)
        if run.config.finetune.estimator != "pathwise" and not (table.is_fully_stochastic and table.is_markov_gaussian):
            from .steps import as_ddpm

            click.echo(f"note: the checkpoint's {table.name} sampler is not Gaussian at every step; "
                       f"fine-tuning ancestral DDPM on its {table.K} noise levels")
            table = as_ddpm(table, run.config.sampler.variance)
    started = time.time()
    before = copy.deepcopy(model)
    model, table = run_finetune(run.config, run, model, resume=resume, progress=not quiet, table=table)
    c = run.config
    rows = score_rows(run, c, [("before", before), (method_name(c.finetune), model)], table, not quiet)
    training_curves(run, c)
    click.echo(write_summary(run, f"fewstep finetune ({c.data.name}, {table.K}-step {table.name} sampler, {c.finetune.iterations} iterations)",
                             rows, time.time() - started))
    click.echo(f"checkpoint: {run.checkpoint('finetune')}")


@main.command()
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/quickstart-<time>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--resume", is_flag=True, help="Continue an interrupted quickstart in --run-dir.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly
def quickstart(run_dir, overrides, resume, quiet):
    """The main job end to end on the swiss roll, in a few minutes on a laptop CPU."""
    from .quickstart import QUICKSTART_DEFAULTS, run_quickstart

    # on --resume the run keeps its recorded config: re-applying the defaults would undo its overrides
    run = open_run(run_dir, None, list(overrides) if resume else [*QUICKSTART_DEFAULTS, *overrides], resume, "quickstart")
    summary = run_quickstart(run, resume=resume, progress=not quiet)
    click.echo(summary)
    click.echo(f"run directory: {run.path}")


from .cli_schedule import schedule_group  # noqa: E402  (registered last: it imports helpers from this module)

main.add_command(schedule_group)

if __name__ == "__main__":
    main()
