"""The `fewstep schedule` jobs: Phase 1 (optimise) and Phase 1 + 2 (finetune) on a model, saved with the run.

Each job writes ``checkpoints/<stage>.safetensors`` whose metadata records the step table (key
``table``, so ``fewstep sample`` and ``fewstep evaluate`` use it) and the schedule times (key
``schedule_times``), ``<stage>.json`` with the times, the table and ``sampler_timesteps`` (the
evaluated steps as integers: ``fewstep finetune --set sampler.timesteps=[...]`` starts shortcut
fine-tuning from this schedule), and scores beside the noise floor.
"""

from __future__ import annotations

import json
import time

import torch

from ..config import Config
from ..data import DataSource
from ..errors import FewstepError
from ..evaluation import Evaluator, evaluate_sampler, format_scores
from ..evaluation.points import sliced_w2
from ..models import save_model
from ..pretrained import Pretrained
from ..rollout import sample
from ..runs import Run
from ..samplers import ddim_table, spacing
from ..schedules import NoiseSchedule
from ..steps import table_to_dict
from .discretisation import bound_sampler_table
from .finetune import evaluated_steps, finetune_at_steps
from .optimise import ScheduleResult, optimise_adam, optimise_dp


def heldout_metric(config: Config, schedule: NoiseSchedule, model, data: DataSource):
    """Sliced W2 of the bound's sampler at ``times`` against held-out data (fixed noise): the early-stopping metric."""
    cfg = config.schedule_opt
    heldout, _ = data.floor_pair(cfg.eval_samples, config.evaluate.seed + 101)

    def metric(times: torch.Tensor) -> float:
        x = sample(
            model, bound_sampler_table(schedule, times), len(heldout), data.shape, seed=config.evaluate.seed + 102
        )
        return sliced_w2(x, heldout, config.evaluate.sliced_projections, seed=config.evaluate.seed)

    return metric


def phase1(model, config: Config, schedule: NoiseSchedule, data: DataSource, progress: bool = False) -> ScheduleResult:
    """Optimise the K-step schedule of ``model`` with the configured method."""
    cfg = config.schedule_opt
    if cfg.steps > schedule.T - 1:
        raise FewstepError(
            f"schedule_opt.steps={cfg.steps} needs a model with more than {cfg.steps} steps (T={schedule.T})"
        )
    if cfg.method == "dp":
        return optimise_dp(
            model, schedule, cfg.steps, data.train(), grid_size=cfg.grid_size, n_mc=cfg.n_mc, seed=config.seed
        )
    init = spacing(cfg.init_spacing, schedule, cfg.steps + 1).flip(0)
    metric = heldout_metric(config, schedule, model, data)
    return optimise_adam(
        model,
        schedule,
        init,
        data.train(),
        metric,
        cfg.adam_steps,
        cfg.adam_lr,
        cfg.adam_batch,
        cfg.eval_every,
        cfg.patience,
        config.seed,
        progress,
    )


def _save(
    run: Run, stage: str, pretrained: Pretrained, model, times: torch.Tensor, data: DataSource, extra: dict
) -> dict:
    config, schedule = run.config, pretrained.schedule
    table = bound_sampler_table(schedule, times)
    record = {
        "schedule_times": times.tolist(),
        "table": table_to_dict(table),
        "sampler_timesteps": evaluated_steps(times, schedule.T).tolist(),
        **extra,
    }
    # a model that came from elsewhere (a diffusers pipeline) carries its record, so the checkpoint loads again
    extra_meta = {**record, **{k: pretrained.meta[k] for k in ("diffusers",) if k in pretrained.meta}}
    save_model(run.checkpoint(stage), model, config, pretrained.shape, stage, extra_meta=extra_meta)
    (run.path / f"{stage}.json").write_text(json.dumps(record, indent=2))
    evaluator = Evaluator(data, config.evaluate, device=config.device, autocast=config.autocast)
    x, scores = evaluate_sampler(model, table, evaluator, device=config.device)
    baseline = ddim_table(schedule, spacing("uniform", schedule, config.schedule_opt.steps))
    x_base, base_scores = evaluate_sampler(model, baseline, evaluator, device=config.device)
    run.log({"stage": stage, "step": 0, "times": times.tolist(), **scores, "ddim_uniform": base_scores["model"]})
    figures = ""
    if data.kind == "images":
        from ..plots import grid_figure

        keys = ("fid", "kid")
        grid_figure(
            [
                (f"optimised, {table.K} steps\nFID {scores['model']['fid']:.4g}", x[:64]),
                (f"DDIM uniform, {baseline.K} steps\nFID {base_scores['model']['fid']:.4g}", x_base[:64]),
            ],
            {k: scores["floor"][k] for k in keys},
            run.figure("samples"),
        )
        figures = "figures: figures/samples.png"
    lines = [
        f"# fewstep schedule: {stage.replace('_', ' ')} (K={len(times) - 1})",
        "",
        f"data: {data.describe()}; {scores['n']} samples",
        "",
        f"times: {[round(float(t), 2) for t in times]}",
        f"optimised schedule: {format_scores(scores)}",
        f"DDIM, uniform steps: {format_scores(base_scores)}",
        "",
        figures,
    ]
    run.write_summary("\n".join(lines))
    return {"optimised": scores, "ddim_uniform": base_scores}


def optimise_job(run: Run, pretrained: Pretrained, progress: bool = False) -> dict:
    """Phase 1; saves ``checkpoints/schedule.safetensors`` (same weights, optimised table)."""
    data = DataSource(run.config.data)
    started = time.time()
    result = phase1(pretrained.model, run.config, pretrained.schedule, data, progress)
    return _save(
        run,
        "schedule",
        pretrained,
        pretrained.model,
        result.times,
        data,
        {"phase1_loss": result.loss, "seconds": time.time() - started},
    )


def finetune_job(run: Run, pretrained: Pretrained, keep_schedule: bool = False, progress: bool = False) -> dict:
    """R rounds of Phase 1 then Phase 2 (or Phase 2 only at the checkpoint's schedule with ``keep_schedule``)."""
    config, cfg, schedule = run.config, run.config.schedule_opt, pretrained.schedule
    data = DataSource(config.data)
    started = time.time()
    model = pretrained.model
    if keep_schedule:
        if not pretrained.meta.get("schedule_times"):
            raise FewstepError("--keep-schedule needs a checkpoint written by `fewstep schedule optimise`")
        times = torch.tensor(pretrained.meta["schedule_times"], dtype=torch.float64)
    for r in range(cfg.rounds):
        if not keep_schedule:
            times = phase1(model, config, schedule, data, progress).times
        model = finetune_at_steps(
            model,
            schedule,
            times,
            data.train(),
            cfg.weighting,
            cfg.finetune_steps,
            cfg.finetune_lr,
            cfg.finetune_batch,
            config.seed + r,
            progress,
        )
        if keep_schedule:
            break
    return _save(
        run,
        "schedule_finetune",
        pretrained,
        model,
        times,
        data,
        {"rounds": cfg.rounds, "keep_schedule": keep_schedule, "seconds": time.time() - started},
    )
