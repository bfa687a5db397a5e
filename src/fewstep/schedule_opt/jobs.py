"""The `fewstep schedule` jobs: Phase 1 (optimise) and Phase 1 + 2 (finetune) on a model, saved with the run.

Each job writes ``checkpoints/<stage>.safetensors`` whose metadata records the step table (key
``table``, so ``fewstep sample`` and ``fewstep evaluate`` use it) and the schedule times (key
``schedule_times``), ``<stage>.json`` with the times, the table and ``sampler_timesteps`` (the
evaluated steps as integers: ``fewstep finetune --set sampler.timesteps=[...]`` starts shortcut
fine-tuning from this schedule), and scores beside the noise floor.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch

from ..config import Config
from ..data import DataSource
from ..errors import FewstepError
from ..evaluation import Evaluator, evaluate_sampler, format_scores
from ..evaluation.points import sliced_w2
from ..files import write_text_atomic
from ..models import save_model
from ..pretrained import Pretrained
from ..rollout import sample
from ..runs import Run
from ..samplers import dpm_solver_pp_2m_table, spacing
from ..schedules import NoiseSchedule
from ..steps import StepTable, table_to_dict
from .discretisation import bound_sampler_table
from .distill import finetune_on_path
from .finetune import evaluated_steps, finetune_at_steps
from .optimise import ScheduleResult, optimise_adam, optimise_dp
from .path_bound import optimise_path_dp
from .reference import FineReference, fine_reference, output_error, table_output
from .refine import coordinate_refine

TITLES = {"schedule": "schedule optimise", "schedule_finetune": "schedule finetune"}


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


def schedule_table(schedule: NoiseSchedule, times: torch.Tensor, solver: str = "ddim") -> StepTable:
    """The sampler of a schedule t_0 > ... > t_K: DDIM (or DPM-Solver++(2M)) at the model times t_0..t_{K-1},
    landing on clean data when t_K = -1, else on level t_K rescaled (the forward bound's sampler)."""
    if solver == "dpm_solver_pp_2m":
        return dpm_solver_pp_2m_table(schedule, times[:-1].flip(0))
    return bound_sampler_table(schedule, times)


def heuristic_times(name: str, schedule: NoiseSchedule, K: int) -> torch.Tensor:
    """The K + 1 decreasing times of a heuristic spacing for K evaluations landing on clean data (-1):
    the spacing's K + 1 integer points from T-1 to 0 with the last replaced by -1, so that no
    evaluation is spent at t = 0, as :func:`phase1` schedules are."""
    times = spacing(name, schedule, K + 1, integer=True).flip(0).to(torch.float64)
    times[-1] = -1.0
    return times


def starts(config: Config, shape, offset: int = 0) -> torch.Tensor:
    """``schedule_opt.n_starts`` starts x_T of the fine reference (offset 0: optimisation; others: evaluation)."""
    n = config.schedule_opt.n_starts
    return torch.randn(
        (n, *shape), generator=torch.Generator().manual_seed(config.seed + 7919 * offset), dtype=torch.float64
    )


def reference_for(model, config: Config, schedule: NoiseSchedule, shape, offset: int = 0) -> FineReference:
    """The model's fine-step (1000-step DDIM) path from ``n_starts`` starts, refused up front when too large."""
    need = 2 * config.schedule_opt.n_starts * (schedule.T + 1) * math.prod(shape) * 8
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.5 * total:
        raise FewstepError(
            f"the fine reference path needs {need / 2**30:.1f} GiB for schedule_opt.n_starts="
            f"{config.schedule_opt.n_starts} starts of {schedule.T + 1} states; lower n_starts"
        )
    return fine_reference(model, schedule, starts(config, shape, offset))


def solver_error(model, schedule: NoiseSchedule, solver: str, reference: FineReference):
    """The measured discretisation error of a schedule: its solver's output against the fine path's end."""

    def error(times: torch.Tensor) -> float:
        return output_error(table_output(model, schedule_table(schedule, times, solver), reference.x_T), reference)

    return error


def phase1(
    model,
    config: Config,
    schedule: NoiseSchedule,
    data: DataSource,
    progress: bool = False,
    reference: FineReference | None = None,
) -> ScheduleResult:
    """Optimise the K-step schedule of ``model`` with the configured method."""
    cfg = config.schedule_opt
    if cfg.steps > schedule.T - 1:
        raise FewstepError(
            f"schedule_opt.steps={cfg.steps} needs a model with more than {cfg.steps} steps (T={schedule.T})"
        )
    if cfg.method in ("path", "gits"):
        reference = reference or reference_for(model, config, schedule, data.shape)
        propagate = "flow" if cfg.method == "path" else "none"
        result = optimise_path_dp(model, schedule, cfg.steps, reference, propagate=propagate)
        if cfg.refine:
            result = coordinate_refine(solver_error(model, schedule, cfg.solver, reference), result.times)
        return result
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


def phase2(
    model,
    config: Config,
    schedule: NoiseSchedule,
    times: torch.Tensor,
    data: DataSource,
    round_: int,
    reference: FineReference | None,
    progress: bool = False,
):
    """Tune the model at the schedule's steps with the configured objective (a copy; on the training loop)."""
    cfg = config.schedule_opt
    if cfg.phase2 == "distill":
        reference = reference or reference_for(model, config, schedule, data.shape)
        return finetune_on_path(
            model,
            schedule,
            times,
            reference,
            cfg.distill_target,
            cfg.finetune_steps,
            cfg.finetune_lr,
            cfg.finetune_batch,
            cfg.anchor,
            config.seed + round_,
            progress=progress,
        )
    return finetune_at_steps(
        model,
        schedule,
        times,
        data.train(),
        cfg.weighting,
        cfg.finetune_steps,
        cfg.finetune_lr,
        cfg.finetune_batch,
        config.seed + round_,
        progress,
    )


def _save(
    run: Run, stage: str, pretrained: Pretrained, model, times: torch.Tensor, data: DataSource, extra: dict
) -> dict:
    """Save the model with its schedule's table, and score it beside the log-SNR heuristic of its solver."""
    config, schedule = run.config, pretrained.schedule
    table = schedule_table(schedule, times, config.schedule_opt.solver)
    record = {
        "schedule_times": times.tolist(),
        "table": table_to_dict(table),
        "sampler_timesteps": evaluated_steps(times, schedule.T).tolist(),
        **extra,
    }
    # a model that came from elsewhere (a diffusers pipeline) carries its record, so the checkpoint loads again
    extra_meta = {**record, **{k: pretrained.meta[k] for k in ("diffusers",) if k in pretrained.meta}}
    save_model(run.checkpoint(stage), model, config, pretrained.shape, stage, extra_meta=extra_meta)
    write_text_atomic(run.path / f"{stage}.json", json.dumps(record, indent=2))
    evaluator = Evaluator(data, config.evaluate, device=config.device, autocast=config.autocast)
    K = len(times) - 1
    heuristic = schedule_table(schedule, heuristic_times("logsnr", schedule, K), config.schedule_opt.solver)
    # the measured discretisation error on starts that optimisation never saw (offset 1)
    reference = reference_for(model, config, schedule, pretrained.shape, offset=1)
    rows, panels = {}, []
    for name, used in (("optimised", table), (f"{heuristic.name}, log-SNR steps", heuristic)):
        x, scores = evaluate_sampler(model, used, evaluator, device=config.device)
        rmse = output_error(table_output(model, used, reference.x_T), reference) ** 0.5
        rows[name] = {**scores, "discretisation_rmse": rmse}
        if data.kind == "images":
            panels.append((f"{name}, {used.K} steps\nFID {scores['model']['fid']:.4g}", x[:64]))
    logged = {
        k: {"model": v["model"], "floor": v["floor"], "discretisation_rmse": v["discretisation_rmse"]}
        for k, v in rows.items()
    }
    run.log({"stage": stage, "step": 0, "times": times.tolist(), **logged})
    cfg = config.schedule_opt
    figures = ""
    if panels:
        from ..plots import grid_figure

        grid_figure(panels, {k: rows["optimised"]["floor"][k] for k in ("fid", "kid")}, run.figure("samples"))
        figures = "figures: figures/samples.png"
    lines = [
        f"# fewstep {TITLES[stage]} ({data.name}, T={schedule.T}, K={K}, {cfg.method}, {cfg.solver})",
        "",
        f"data: {data.describe()}; {evaluator.size(config.evaluate.n_samples)} samples; discretisation error: "
        f"RMS distance to the model's {schedule.T}-step path from {cfg.n_starts} new starts",
        "",
        f"times: {[round(float(t), 2) for t in times]}",
        "",
        figures,
    ]
    for name, v in rows.items():
        lines.append(f"{name}: discretisation RMS {v['discretisation_rmse']:.4g}; {format_scores(v)}")
    run.write_summary("\n".join(lines) + "\n")
    return rows


def optimise_job(run: Run, pretrained: Pretrained, progress: bool = False, data: DataSource | None = None) -> dict:
    """Phase 1; saves ``checkpoints/schedule.safetensors`` (same weights, optimised table)."""
    data = data or DataSource(run.config.data)
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


def finetune_job(
    run: Run,
    pretrained: Pretrained,
    keep_schedule: bool = False,
    progress: bool = False,
    data: DataSource | None = None,
) -> dict:
    """R rounds of Phase 1 then Phase 2 (or Phase 2 only at the checkpoint's schedule with ``keep_schedule``)."""
    config, cfg, schedule = run.config, run.config.schedule_opt, pretrained.schedule
    data = data or DataSource(config.data)
    started = time.time()
    model = pretrained.model
    if keep_schedule:
        if not pretrained.meta.get("schedule_times"):
            raise FewstepError("--keep-schedule needs a checkpoint written by `fewstep schedule optimise`")
        times = torch.tensor(pretrained.meta["schedule_times"], dtype=torch.float64)
    for r in range(1 if keep_schedule else cfg.rounds):
        # the reference is the model's own path: the model Phase 2 starts from in this round
        reference = (
            reference_for(model, config, schedule, data.shape)
            if (cfg.method in ("path", "gits") or cfg.phase2 == "distill")
            else None
        )
        if not keep_schedule:
            times = phase1(model, config, schedule, data, progress, reference).times
        model = phase2(model, config, schedule, times, data, r, reference, progress)
    return _save(
        run,
        "schedule_finetune",
        pretrained,
        model,
        times,
        data,
        {"rounds": cfg.rounds, "keep_schedule": keep_schedule, "seconds": time.time() - started},
    )
