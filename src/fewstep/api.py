"""The library's front door: load a model, pretrain, fine-tune, sample, evaluate.

Every function here is what the command line runs, so a script and a shell session do the same
work. A *model* is a :class:`fewstep.models.Pretrained`: a fewstep checkpoint or a diffusers
pipeline folder, opened by :func:`load`, with the step table it samples with.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from . import preflight
from .config import FINETUNE_PRESETS, Config, load_config, merge, preset_for, to_dict, validate
from .data import DataSource
from .errors import FewstepError
from .fields import shown
from .files import write_npy_atomic
from .evaluation import Evaluator, evaluate_sampler
from .models import load_pretrained, network
from .pretrained import Pretrained
from .reports import report, training_curves, write_summary
from .rollout import sample as sample_chain
from .runs import Run
from .schedules import make_schedule
from .steps import StepTable
from .training.finetune import finetune as finetune_stage
from .training.pretrain import pretrain as pretrain_stage
from .training.sftpg import make_method


def load(path: str | Path, config: Config | None = None) -> Pretrained:
    """A fewstep checkpoint or a diffusers pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``)."""
    if not isinstance(path, (str, Path)):
        raise FewstepError(f"load needs the path of a checkpoint or a diffusers folder, got {shown(path)}")
    if config is not None:
        validate(config)
    return load_pretrained(path, config)


def sampler_table(model: Pretrained, config: Config | None = None, data: DataSource | None = None) -> StepTable:
    """The table ``model`` samples with: the one recorded with it, else ``config.sampler``'s.

    A config whose sampler section differs from the model's own (``--set sampler.kind=...``)
    replaces the recorded table.
    """
    config = config or model.config
    table = preflight.sampler_for(model, config, data)
    return table if table is not None else preflight.sampler_for(model, config, preflight.load_data(config))


def sample(
    model: Pretrained,
    n: int,
    seed: int = 0,
    table: StepTable | None = None,
    batch_size: int = 1024,
    device: str | None = None,
    progress: bool = False,
    config: Config | None = None,
) -> torch.Tensor:
    """``n`` samples of ``model`` [n, *shape]; sample i depends only on (seed, i), never on the batch size.

    The sampler is ``table``, else the one ``config`` (default: the model's own) describes.
    Everything is checked before sampling starts; samples that come out NaN or infinite (a
    diverged model) are an error, not a result.
    """
    if not isinstance(model, Pretrained):
        raise FewstepError(f"model must be a loaded model (fewstep.load), got {shown(model)}")
    config = config or model.config
    if device is not None:
        config = dataclasses.replace(config, device=device)
    chosen, _ = preflight.sampling(model, config, n, seed, batch_size, table=table)
    table = table or chosen
    x = sample_chain(
        network(model.model.to(config.device), config.autocast, config.device),
        table,
        n,
        model.shape,
        seed=seed,
        batch_size=batch_size,
        device=config.device,
        progress=progress,
    )
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        raise FewstepError(
            f"{bad} of {n} samples of {model.source} are NaN or infinite: the model or its "
            f"{table.K}-step {table.name} sampler diverges"
        )
    return x


def export(
    model: Pretrained,
    out: str | Path,
    table: StepTable | None = None,
    config: Config | None = None,
    scheduler: str = "fewstep",
) -> Path:
    """Write ``model`` and its sampler (``table``, else :func:`sampler_table`) as a diffusers pipeline folder.

    The folder loads in diffusers alone: ``DiffusionPipeline.from_pretrained(out, trust_remote_code=True)``
    samples with exactly this sampler (see :mod:`fewstep.images.export` for what can be exported).
    ``scheduler="ddpm"`` writes a plain DDPMPipeline (stock DDPMScheduler, the model's T-step DDPM).
    """
    from .images.export import export_pipeline

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FewstepError(f"{out} already exists and is not an empty folder; remove it or choose another --out")
    if len(model.shape) != 3:
        raise FewstepError(
            f"only image models can be exported as a diffusers pipeline; this model's data has shape {model.shape}"
        )
    table = table or sampler_table(model, config)
    try:
        return export_pipeline(model, table, out, scheduler)
    except FewstepError:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def evaluate(
    model: Pretrained | None = None,
    samples: torch.Tensor | None = None,
    config: Config | None = None,
    table: StepTable | None = None,
    progress: bool = False,
    save_samples: str | Path | None = None,
) -> dict:
    """Scores of ``model``'s sampler (or of given ``samples``) against held-out data, beside the noise floor.

    ``save_samples``: also write the scored samples of the model (the first repeat) to this .npy file.
    """
    config = config or (model.config if isinstance(model, Pretrained) else load_config())
    data, chosen = preflight.evaluation(config, model, samples)
    evaluator = Evaluator(data, config.evaluate, progress, config.device, config.autocast)
    if samples is not None:
        return evaluator.score_samples(samples)
    if table is not None:
        preflight.check_table(table, model)
    used = table or chosen
    x, result = evaluate_sampler(model.model.to(config.device), used, evaluator, device=config.device)
    if save_samples is not None:
        write_npy_atomic(save_samples, x.numpy())
    return {**result, "sampler": f"{used.K}-step {used.name}"}


def open_run(
    kind: str,
    config: Config | None,
    run_dir: str | Path | None,
    resume: bool,
    overrides: list[str] | tuple[str, ...] = (),
    source: str | None = None,
) -> Run:
    """A new run (``config``) or, with ``resume``, the run in ``run_dir`` with its recorded config."""
    if resume:
        if run_dir is None or not Path(run_dir).is_dir():
            raise FewstepError("--resume needs --run-dir pointing at an existing run directory")
        return Run.resume(run_dir, kind, overrides)
    if config is None:
        raise FewstepError("a new run needs a config")
    if overrides:
        config = load_config(None, overrides, base=to_dict(config))
    validate(config)
    return Run.create(run_dir, config, kind, source)


def pretrain(
    config: Config | None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    overrides: list[str] | tuple[str, ...] = (),
    run: Run | None = None,
) -> tuple[Pretrained, Run]:
    """Pretrain a DDPM; write the run directory (checkpoint, metrics, figures, summary).

    ``run`` continues an open run (e.g. quickstart's) instead of opening ``run_dir``.
    """
    run = run or open_run("pretrain", config, run_dir, resume, overrides)
    config = run.config
    data = preflight.pretraining(run, resume)  # everything is checked before the run directory is written
    run.start()
    started = time.time()
    result = pretrain_stage(config, run, resume, progress, data)
    schedule = make_schedule(config.schedule.kind, config.schedule.T)
    model = Pretrained(
        result.model, config, data.shape, schedule, None, str(run.checkpoint("pretrain")), {"config": to_dict(config)}
    )
    if run.kind == "pretrain":
        if resume:
            run.drop_metrics("evaluate")  # the report of an interrupted attempt is made again
        table = sampler_table(model, config, data)
        lines = report(
            run, config, data, [(f"DDPM T={config.schedule.T}", result.model, table)], progress, config.device
        )
        training_curves(run)
        title = (
            f"fewstep pretrain ({config.data.name}, {config.schedule.kind} schedule, T={config.schedule.T}, "
            f"{config.pretrain.steps} steps)"
        )
        write_summary(run, title, lines, time.time() - started)
    return model, run


def finetune_config(
    model: Pretrained,
    preset: str = "auto",
    config_path: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """The model's config, then the preset's fine-tuning settings, the YAML file and ``--set`` overrides.

    ``auto`` takes the preset of the model's data kind: ``images`` for image models, ``toy`` otherwise.
    """
    if preset == "auto":
        preset = preset_for(model.shape)
    if preset not in FINETUNE_PRESETS:
        choices = ", ".join(["auto", *FINETUNE_PRESETS])
        raise FewstepError(f"unknown preset {preset!r}; choose one of {choices}")
    base = merge(to_dict(model.config), {"finetune": FINETUNE_PRESETS[preset]})
    config = load_config(config_path, overrides, base=base)
    check_unchanged(model, config)
    return config


check_unchanged = preflight.check_unchanged
check_data = preflight.check_data


def finetune(
    model: Pretrained,
    config: Config | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    table: StepTable | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run: Run | None = None,
) -> tuple[Pretrained, Run]:
    """Shortcut fine-tuning of ``model``'s sampler; write the run directory; return the tuned model."""
    if not isinstance(model, Pretrained):
        raise FewstepError(f"model must be a loaded model (fewstep.load), got {shown(model)}")
    run = run or open_run("finetune", config or model.config, run_dir, resume, overrides, model.source)
    config = run.config
    data = preflight.finetuning(run, model, resume, table)  # everything is checked before the run directory is written
    before = copy.deepcopy(model.model)
    run.start()
    started = time.time()
    tuned = finetune_stage(config, run, copy.deepcopy(model), table, resume, progress, data)
    name = make_method(config.finetune).name
    entries = [(f"before ({tuned.table.name})", before, tuned.table), (name, tuned.model, tuned.table)]
    if resume:
        run.drop_metrics("evaluate")  # the report of an interrupted attempt is made again
    lines = report(run, config, data, entries, progress, config.device)
    best = tuned.result.best
    if best:
        lines += [
            "",
            f"best held-out {best['metric']} during training: {best['value']:.4g} at iteration "
            f"{best['step']} (checkpoints/finetune_best.safetensors)",
        ]
    training_curves(run)
    title = (
        f"fewstep {run.kind}: {name} ({config.data.name}, {tuned.table.K}-step {tuned.table.name} sampler, "
        f"{config.finetune.iterations} iterations, {tuned.result.seconds:.0f} s of training)"
    )
    write_summary(run, title, lines, time.time() - started)
    out = Pretrained(
        tuned.model,
        config,
        model.shape,
        model.schedule,
        tuned.table,
        str(run.checkpoint("finetune")),
        {**model.meta, "config": to_dict(config)},
        model.kind,
    )
    return out, run
