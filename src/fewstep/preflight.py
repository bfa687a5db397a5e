"""Everything a command checks before it starts work: config, machine, data, model, checkpoints, outputs.

Each entry point of :mod:`fewstep.api` (and so each command) calls one function here before it
creates a run directory, writes a file or computes anything: pretraining (:func:`pretraining`),
fine-tuning (:func:`finetuning`), schedule optimisation (:func:`schedule`), sampling
(:func:`sampling`) and evaluation (:func:`evaluation`). Each checks, in this order:

* the whole config (every field's type and range, cross-field rules) and the machine: the device
  exists, ``threads`` does not exceed the cores;
* the data: it loads, and its shape fits the model (an MLP takes vectors, a U-Net images, a
  trained model the shape it was trained on);
* the model and the checkpoints a resumed run continues from: checksums, stage, recorded
  config, step table;
* the sampler: its table can be built for the model's schedule;
* resources: an estimate of the memory the work needs (parameters counted on torch's ``meta``
  device, so nothing is allocated; activations from one forward pass on it), refused with the
  estimate when it exceeds 80% of the device's memory;
* every output: the run directory and output files can be created (tried, not guessed), and no
  output is one of the inputs.

All refusals are :class:`fewstep.errors.FewstepError` s with one line naming the key or file.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import torch

from .budget import (
    Budget,
    activations,
    add_data,
    add_evaluation,
    add_training,
    eps_model_on_meta,
    network_keys,
    on_meta,
    parameters,
)
from .checkpoint import check_matches, load_checkpoint
from .config import Config, to_dict, validate
from .data import DataSource
from .distributed import check_device
from .errors import FewstepError
from .files import can_create_in, nearest_existing
from .fields import shown
from .pretrained import Pretrained
from .runs import Run
from .samplers import check_sampler
from .schedules import make_schedule
from .steps import StepTable, table_from_dict

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------- the machine


def check_machine(config: Config) -> None:
    """The whole config, then what it asks of this machine: the device and the thread count."""
    validate(config)
    check_device(config.device)
    cores = os.cpu_count() or 1
    if config.threads > cores:
        raise FewstepError(
            f"config key threads is {config.threads} but this machine has {cores} CPU cores; "
            f"use threads=0 (auto) or at most {cores}"
        )


# ----------------------------------------------------------------------------- data and models


def load_data(config: Config) -> DataSource:
    """The data of ``config``, loaded (a bad file fails here) with its shape known."""
    data = DataSource(config.data)
    data.train()
    return data


def check_model_fits_data(config: Config, shape: tuple[int, ...]) -> None:
    """The configured epsilon-model can take data of ``shape`` (an MLP vectors, a U-Net images)."""
    eps_model_on_meta(config, shape)  # build_eps_model refuses the mismatch with a one-line error


def check_data(model: Pretrained, data: DataSource) -> None:
    """A trained model meets data of the shape it was trained on."""
    if tuple(data.shape) != tuple(model.shape):
        hint = (
            "; set data.name, data.path and data.image_size to its training images"
            if model.kind == "diffusers"
            else "; set data.name (and data.path) to the data it was trained on"
        )
        raise FewstepError(
            f"the model {model.source} was trained on data of shape {tuple(model.shape)} but the "
            f"{data.name} data (data.name) has shape {tuple(data.shape)}{hint}"
        )


def check_unchanged(model: Pretrained, config: Config) -> None:
    """A trained model's model and schedule sections cannot be changed by a config."""
    check_matches(
        {"config": to_dict(model.config)}, {s: to_dict(getattr(config, s)) for s in ("model", "schedule")}, model.source
    )


def check_table(table: StepTable, model: Pretrained) -> None:
    """A given step table fits the model's schedule (its times lie in [0, T - 1])."""
    if not isinstance(table, StepTable):
        raise FewstepError(f"table must be a StepTable, got {shown(table)}")
    T = model.schedule.T
    if float(table.t.min()) < 0 or float(table.t.max()) > T - 1:
        raise FewstepError(
            f"the {table.name} step table has model times in [{float(table.t.min()):g}, {float(table.t.max()):g}] "
            f"but the model has T={T} steps (times 0..{T - 1})"
        )


def sampler_for(model: Pretrained, config: Config, data: DataSource | None) -> StepTable | None:
    """The table ``model`` samples with under ``config`` (its recorded one unless config.sampler
    differs), built now so that a bad sampler setting fails before any work; None when the table
    is estimated from data that is not given (Analytic-DPM)."""
    if model.uses_recorded_table(config.sampler):
        return model.table
    if config.sampler.kind == "analytic_dpm" and config.sampler.analytic_dpm.gamma is None:
        check_sampler(config.sampler, model.schedule)
        if data is None:
            return None
    return model.table_for(config.sampler, data.train() if data is not None else None)


def resumable(run: Run, stage: str, config: Config) -> dict | None:
    """The metadata of the checkpoint a resumed ``stage`` continues from (None if it has none yet),
    checked: it loads (checksum), is a training checkpoint of that stage, and was made with the
    run's data, schedule and model."""
    path = run.checkpoint(stage)
    if not path.is_file():
        return None
    tensors, meta = load_checkpoint(path)
    if meta.get("stage") != stage or "optim" not in meta or "rng.train" not in tensors:
        raise FewstepError(f"checkpoint {path} is not a {stage} training checkpoint; the run cannot be resumed")
    expected = {s: to_dict(getattr(config, s)) for s in ("data", "schedule", "model")}
    check_matches(meta, expected, str(path))
    if meta.get("table"):
        table_from_dict(meta["table"], str(path))
    return meta


# ----------------------------------------------------------------------------- outputs


def check_output(
    path: str | Path, what: str = "output file", suffix: str | None = None, inputs=(), suffixes=()
) -> Path:
    """The output file ``path`` (``suffix`` added when missing), refused before any work when it
    cannot be created, is a directory, has an unknown suffix or is one of the ``inputs``."""
    path = Path(path)
    if suffix and path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    if suffixes and path.suffix.lower() not in suffixes:
        raise FewstepError(f"{what} {path}: choose a file ending in {', '.join(suffixes)}")
    if path.is_dir():
        raise FewstepError(f"{what} {path} is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise FewstepError(f"the folder of {what} {path} does not exist")
    problem = can_create_in(parent)
    if problem or (path.exists() and not os.access(path, os.W_OK)):
        raise FewstepError(f"{what} {path} cannot be written ({problem or 'permission denied'})")
    for source in inputs:
        if source is not None and Path(source).exists() and os.path.realpath(source) == os.path.realpath(path):
            raise FewstepError(f"{what} {path} is an input of this command; it would be overwritten")
    return path


def check_run_dir(run: Run) -> None:
    """The run directory can be created (or, when it exists, written)."""
    base = nearest_existing(run.path)
    if base != Path(os.path.abspath(run.path)) and not base.is_dir():
        raise FewstepError(f"run directory {run.path} cannot be created: {base} is a file")
    problem = can_create_in(base)
    if problem:
        raise FewstepError(f"run directory {run.path} cannot be created in {base} ({problem})")


# ----------------------------------------------------------------------------- commands


def pretraining(run: Run, resume: bool = False) -> DataSource:
    """Before pretraining (and, in a quickstart run, the fine-tuning after it): returns the data."""
    config = run.config
    check_machine(config)
    check_run_dir(run)
    data = load_data(config)
    shape = tuple(data.shape)
    model = eps_model_on_meta(config, shape)
    budget = Budget("pretraining", config.device)
    add_data(budget, config, data)
    add_training(
        budget,
        "the epsilon-model",
        model,
        shape,
        config.pretrain.batch_size,
        "pretrain.batch_size",
        config.pretrain.ema_decay > 0,
        network_keys(config),
    )
    add_evaluation(budget, config, data, model, config.evaluate.n_samples)
    budget.check()
    if run.kind == "quickstart":
        schedule = make_schedule(config.schedule.kind, config.schedule.T)
        pretrained = Pretrained(model, config, shape, schedule, None, str(run.checkpoint("pretrain")))
        _finetuning_budget(config, pretrained, data, "fine-tuning (after pretraining)").check()
    if resume:
        resumable(run, "pretrain", config)
        if run.kind == "quickstart":
            resumable(run, "finetune", config)
    return data


def _finetuning_budget(config: Config, model: Pretrained, data: DataSource, task: str) -> Budget:
    from .models import build_baseline, build_critic

    cfg, shape = config.finetune, tuple(model.shape)
    table_steps = model.table.K if model.table is not None else (config.sampler.steps or model.schedule.T)
    critic = on_meta(lambda: build_critic(cfg, shape))
    baseline = on_meta(lambda: build_baseline(cfg, shape, config.model.time_dim))
    budget = Budget(task, config.device)
    add_data(budget, config, data)
    generator = parameters(model.model)
    copies = 4 + 2 + (1 if cfg.ema_decay > 0 else 0)  # Adam, the "before" copy and the tuned copy
    budget.keep(f"the generator of {generator:,} parameters with its copies and Adam state", copies * 4 * generator)
    budget.keep(
        f"the critic of {parameters(critic):,} parameters (finetune.critic_hidden/critic_channels)",
        16 * parameters(critic),
    )
    budget.keep(
        f"the baseline of {parameters(baseline):,} parameters (finetune.baseline_hidden)", 16 * parameters(baseline)
    )
    budget.check()  # too big already: refuse before running the networks to count their activations
    size, m = math.prod(shape), cfg.batch_size
    rollouts = 2 * cfg.n_critic * m * (table_steps + 1) * size * 4
    chain = table_steps if cfg.estimator == "pathwise" else 1
    step = 3 * 4 * m * chain * activations(model.model, shape)
    critic_batch = 2 * 3 * 4 * m * activations(critic, shape, timed=False)
    budget.peak(
        f"rollouts and a training step of batch {m} over {table_steps} steps (finetune.batch_size, finetune.n_critic)",
        rollouts + max(step, critic_batch),
    )
    add_evaluation(budget, config, data, model.model, max(config.evaluate.n_samples, config.evaluate.train_samples))
    return budget


def finetuning(run: Run, model: Pretrained, resume: bool = False, table: StepTable | None = None) -> DataSource:
    """Before fine-tuning ``model`` in ``run``: returns the data."""
    config = run.config
    if not isinstance(model, Pretrained):
        raise FewstepError(f"model must be a loaded model (fewstep.load), got {shown(model)}")
    check_machine(config)
    check_unchanged(model, config)
    check_run_dir(run)
    data = load_data(config)
    check_data(model, data)
    if table is not None:
        check_table(table, model)
    elif not (resume and run.checkpoint("finetune").is_file()):
        sampler_for(model, config, None)
    _finetuning_budget(config, model, data, "fine-tuning").check()
    if resume:
        resumable(run, "finetune", config)
    return data


def schedule(run: Run, model: Pretrained, keep_schedule: bool = False) -> DataSource:
    """Before `fewstep schedule optimise/finetune` on ``model``: returns the data."""
    from .schedule_opt.optimise import candidate_grid

    from .config import check_schedule_opt

    config, cfg = run.config, run.config.schedule_opt
    check_schedule_opt(cfg, phase2=run.kind == "schedule-finetune")
    check_machine(config)
    check_unchanged(model, config)
    check_run_dir(run)
    data = load_data(config)
    check_data(model, data)
    T = model.schedule.T
    if keep_schedule:
        times = model.meta.get("schedule_times")
        if not times:
            raise FewstepError(
                f"--keep-schedule needs a checkpoint written by `fewstep schedule optimise`; "
                f"{model.source} records no schedule"
            )
    else:
        if cfg.steps > T - 1:
            raise FewstepError(
                f"config key schedule_opt.steps is {cfg.steps}; the model has T={T} steps, so at most {T - 1}"
            )
        if cfg.method == "dp":
            grid = len(candidate_grid(model.schedule, cfg.grid_size))
            if cfg.steps > grid - 1:
                raise FewstepError(
                    f"config key schedule_opt.steps is {cfg.steps} but the dp grid has only {grid} candidate "
                    f"times (schedule_opt.grid_size={cfg.grid_size}); raise grid_size or lower steps"
                )
    budget = Budget(f"`fewstep schedule` ({cfg.method})", config.device)
    add_data(budget, config, data)
    if cfg.method == "dp" and not keep_schedule:
        grid = min(2 * cfg.grid_size, T)
        budget.peak(f"the dp grid of {grid} candidate times (schedule_opt.grid_size)", 4 * 8 * grid * grid)
    add_training(
        budget,
        "the model",
        model.model,
        tuple(model.shape),
        cfg.finetune_batch,
        "schedule_opt.finetune_batch",
        True,
        "",
    )
    add_evaluation(budget, config, data, model.model, config.evaluate.n_samples)
    budget.check()
    return data


def sampling(
    model: Pretrained,
    config: Config,
    n: int,
    seed: int = 0,
    batch_size: int = 1024,
    need_data: bool = False,
    table: StepTable | None = None,
) -> tuple[StepTable, DataSource | None]:
    """Before drawing ``n`` samples: the table to sample with (``table`` when given, checked) and
    (for a figure, or Analytic-DPM) the data."""
    if not isinstance(model, Pretrained):
        raise FewstepError(f"model must be a loaded model (fewstep.load), got {shown(model)}")
    check_machine(config)
    for name, value, low in (("n", n, 1), ("seed", seed, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise FewstepError(f"{name} must be an integer >= {low}, got {shown(value)}")
    check_unchanged(model, config)
    data = None
    if need_data or (table is None and sampler_for(model, config, None) is None):
        data = load_data(config)
        check_data(model, data)
    if table is not None:
        check_table(table, model)
    else:
        table = sampler_for(model, config, data)
    size = math.prod(model.shape)
    budget = Budget(f"drawing {n} samples", config.device)
    budget.keep(f"{n} samples of shape {tuple(model.shape)} (-n)", 4 * n * size)
    budget.peak(
        f"a batch of {batch_size} (--batch-size)",
        4 * min(batch_size, n) * (activations(model.model, tuple(model.shape)) + 4 * size),
    )
    budget.check()
    return table, data


def evaluation(config: Config, model: Pretrained | None = None, samples: torch.Tensor | None = None):
    """Before scoring ``model``'s sampler (or ``samples``): the data and the table (None for samples)."""
    if (model is None) == (samples is None):
        raise FewstepError("evaluate needs exactly one of a model and samples")
    check_machine(config)
    data = load_data(config)
    budget = Budget("evaluation", config.device)
    if samples is not None:
        if not torch.is_tensor(samples) or samples.ndim < 2 or len(samples) < 2:
            raise FewstepError(f"samples must be a tensor [n, *shape] with n >= 2, got {shown(samples)}")
        if tuple(samples.shape[1:]) != tuple(data.shape):
            raise FewstepError(
                f"the samples have shape {tuple(samples.shape[1:])} per example but the {data.name} "
                f"data (data.name) has {tuple(data.shape)}"
            )
        if not torch.isfinite(samples).all():
            raise FewstepError("the samples contain NaN or infinite values")
        add_evaluation(budget, config, data, None, len(samples))
        budget.check()
        return data, None
    if not isinstance(model, Pretrained):
        raise FewstepError(f"model must be a loaded model (fewstep.load), got {shown(model)}")
    check_unchanged(model, config)
    check_data(model, data)
    table = sampler_for(model, config, data)
    add_evaluation(budget, config, data, model.model, config.evaluate.n_samples)
    budget.check()
    return data, table
