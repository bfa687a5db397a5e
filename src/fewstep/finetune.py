"""The shortcut fine-tuning run: set-up, Algorithm 1 iterations, evaluation, checkpoints, resume.

The algorithm itself is in ``sftpg.py``; this module owns everything around it. The checkpoint
``checkpoints/finetune.safetensors`` has the fine-tuned generator as ``model.*`` (so ``fewstep
sample`` uses it, with the step table recorded in its metadata) plus the critic, the baseline,
the optimisers and the random state needed to resume exactly.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoint import check_matches, load_checkpoint, load_module, load_optimizer, module_tensors, optimizer_tensors
from .config import Config, to_dict
from .data import DataSource
from .distributed import barrier, broadcast_parameters, setup
from .errors import FewstepError
from .evaluation import evaluate_sampler
from .models import EMA, adam, build_baseline, build_critic, save_model, set_threads
from .runs import Run
from .schedules import make_schedule
from .sftpg import Nets, iteration
from .steps import StepTable, table_from_config, table_from_dict, table_to_dict

PARTS = ("generator", "critic", "baseline")


def make_nets(config: Config, model: torch.nn.Module, shape: tuple[int, ...], device: torch.device | None = None) -> Nets:
    cfg, device = config.finetune, device or torch.device(config.device)
    torch.manual_seed(config.seed + 1)
    critic, baseline = build_critic(config, shape).to(device), build_baseline(config, shape).to(device)
    model = model.to(device).train().requires_grad_(True)
    return Nets(
        generator=model,
        critic=critic,
        baseline=baseline,
        opt_generator=adam(model.parameters(), cfg.lr_generator, device),
        opt_critic=adam(critic.parameters(), cfg.lr_critic, device),
        opt_baseline=adam(baseline.parameters(), cfg.lr_baseline, device),
    )


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the generator's learning rate at iteration ``step`` (a function of the step
    alone, so a resumed run follows the same schedule)."""
    progress = step / max(total, 1)
    return {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[schedule]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_table(table: StepTable, estimator: str) -> None:
    """Policy-gradient estimators need a log-density at every step."""
    if estimator != "pathwise" and not (table.is_fully_stochastic and table.is_markov_gaussian):
        raise FewstepError(
            f"policy-gradient fine-tuning needs every step of the {table.name} sampler to be Gaussian with positive "
            "variance; set sampler.noise_at_last_step=true and sampler.variance=beta, or finetune.estimator=pathwise"
        )


def finetune(
    config: Config,
    run: Run,
    model: torch.nn.Module,
    resume: bool = False,
    progress: bool = True,
    table: StepTable | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> tuple[torch.nn.Module, StepTable]:
    """Fine-tune ``model`` (the pretrained epsilon-model) with Algorithm 1; return it and its table.

    Logs ``{"stage": "finetune", "step": i, "seconds": training wall-clock, "w2": ..., ...}`` every
    ``finetune.eval_every`` iterations (W2 on ``finetune.eval_samples`` samples, with the floor).
    A non-finite loss or a critic beyond ``finetune.critic_bound`` stops the run with a FewstepError;
    the last good checkpoint stays as it was. Under ``torchrun`` each process rolls out its share of
    every batch, gradients are averaged, and only rank 0 evaluates and writes; N processes take the
    same steps as one (``fewstep.distributed``, ``sftpg.iteration``).
    """
    cfg = config.finetune
    ctx = setup(config.device)  # data-parallel under torchrun (fewstep.distributed); else one process
    device = ctx.device
    data = DataSource(config.data)
    train = data.train().to(device)
    shape = tuple(train.shape[1:])
    set_threads(config, shape)
    table = table or table_from_config(config, make_schedule(config.schedule.kind, config.schedule.T))
    check_table(table, cfg.estimator)
    nets = make_nets(config, model.to(device), shape, device)
    for part in PARTS:
        broadcast_parameters(getattr(nets, part), ctx)
    # Optional EMA of the generator's weights (not in the paper): rollouts use the trained weights,
    # evaluation, sampling and the saved model.* use the average, which damps adversarial oscillation.
    ema = EMA(nets.generator, cfg.ema_decay) if cfg.ema_decay > 0 else None
    sampler = ema.model if ema else nets.generator
    generator = torch.Generator().manual_seed(config.seed + 2)
    path = run.checkpoint("finetune")

    start, seconds = 0, 0.0
    if resume and path.is_file():
        tensors, meta = load_checkpoint(path)
        check_matches(meta, {"model": to_dict(config.model), "schedule": to_dict(config.schedule), "finetune": to_dict(cfg)}, str(path))
        for part in PARTS:
            load_module(getattr(nets, part), part if part != "generator" else ("train" if ema else "model"), tensors, str(path))
            load_optimizer(getattr(nets, f"opt_{part}"), f"optim_{part}", tensors, meta["optim"][part])
        if ema:
            load_module(ema.model, "model", tensors, str(path))
        generator.set_state(tensors["rng.finetune"])
        start, seconds = meta["step"], meta["seconds"]
        table = table_from_dict(meta["table"])  # the run goes on with the table it started with
        if ctx.is_main:
            run.truncate_metrics("finetune", start)

    def save(step: int) -> None:
        extra, optim_meta = {"rng.finetune": generator.get_state()}, {}
        for part in PARTS:
            if part != "generator" or ema:  # model.* holds the weights to sample with
                extra.update(module_tensors(part if part != "generator" else "train", getattr(nets, part)))
            tensors, optim_meta[part] = optimizer_tensors(f"optim_{part}", getattr(nets, f"opt_{part}"))
            extra.update(tensors)
        meta = {"step": step, "seconds": seconds, "optim": optim_meta, "table": table_to_dict(table)}
        save_model(path, sampler, config, shape, "finetune", extra, meta)

    def draw_real(m: int) -> torch.Tensor:
        return train[torch.randint(0, len(train), (m,), generator=generator).to(device)]

    def evaluate(step: int, stats: dict) -> dict:
        eval_config = replace(config, evaluate=replace(config.evaluate, n_samples=cfg.eval_samples))
        _, result = evaluate_sampler(sampler.eval(), table, eval_config, data=data)
        nets.generator.train()
        record = {"stage": "finetune", "step": step, "seconds": round(seconds, 3), **stats,
                  "w2": result["model"]["w2"], "sw2": result["model"]["sw2"], "floor_w2": result["floor"]["w2"], "floor_sw2": result["floor"]["sw2"]}
        run.log(record)
        return record

    if start == 0 and ctx.is_main:
        evaluate(0, {})
        save(0)
    bar = tqdm(range(start, cfg.iterations), desc="finetune", disable=not (progress and ctx.is_main), initial=start, total=cfg.iterations)
    for step in bar:
        tick = time.perf_counter()
        set_learning_rate(nets.opt_generator, cfg.lr_generator * lr_factor(cfg.lr_schedule, step, cfg.iterations))
        stats = iteration(nets, table, cfg, draw_real, shape, generator, device, ctx)
        if ema:
            ema.update(nets.generator)
        seconds += time.perf_counter() - tick
        done = step + 1
        if (done % cfg.eval_every == 0 or done == cfg.iterations) and ctx.is_main:
            record = evaluate(done, stats)
            bar.set_postfix(w2=f"{record['w2']:.4f}", floor=f"{record['floor_w2']:.4f}")
        if (done % cfg.checkpoint_every == 0 or done == cfg.iterations) and ctx.is_main:
            save(done)
        if callback is not None:
            callback(done, stats)
    barrier(ctx)  # every process leaves together, after rank 0's last evaluation and write
    return sampler.eval(), table


def finetune_config(checkpoint: str, preset: str, config_path: str | None, overrides: list[str]) -> Config:
    """The pretrained checkpoint's config, then the preset, the YAML file and ``--set`` overrides."""
    from .config import FINETUNE_PRESETS, load_config

    _, meta = load_checkpoint(checkpoint)
    data = meta.get("config", {})
    data["finetune"] = {**data.get("finetune", {}), **FINETUNE_PRESETS[preset]}
    return load_config(config_path, overrides, base=data)
