"""The one training loop: pretraining, shortcut fine-tuning and Phase 2 of schedule optimisation.

A training stage is a set of :class:`Part` s (a network, its optimiser, its learning rate and
schedule) and a ``step(i)`` function that takes one optimisation step (or one outer iteration of
Algorithm 1) and returns numbers to log. :func:`train` owns everything around the step: resume,
checkpoint cadence, logging, the EMA of the sampling network, learning-rate schedules, evaluation
(with the best checkpoint kept), the divergence guard, timing and the final barrier, so every
stage gains all of them (EDM's ``training_loop`` is the model).

Checkpoint layout (``checkpoints/<stage>.safetensors``): ``model.*`` the weights to sample with
(the EMA when there is one), ``train.<part>.*`` every trained network (the sampling network only
when it differs from ``model.*``), ``optim.<part>.*`` the optimisers, ``rng.train`` the run's
random generator; metadata: step, training seconds, the optimisers' scalars, the best score, and
whatever the stage adds (config, data shape, step table). ``<stage>_best.safetensors`` holds the
sampling weights at the best held-out evaluation.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..checkpoint import load_checkpoint, load_module, load_optimizer, module_tensors, optimizer_tensors
from ..distributed import SINGLE, Context, barrier, broadcast_parameters, maximum
from ..errors import Diverged, FewstepError
from ..models import EMA, save_model
from ..progress import bar as progress_bar
from ..runs import Run

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of a learning rate at ``step`` of ``total`` (a function of the step alone, so a
    resumed run follows the same schedule)."""
    progress = step / max(total, 1)
    return {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[schedule]


@dataclass
class Part:
    """A trained network, its optimiser (each parameter group's ``lr`` is its base learning rate)
    and the schedule that scales the base rates over the steps."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: str = "constant"


@dataclass
class Stage:
    """What :func:`train` needs to know about a stage besides its step function.

    ``sampler`` names the part whose weights are sampled from (its EMA when ``ema_decay > 0``);
    ``evaluate(model)`` scores the sampling network on held-out data and returns numbers to log;
    ``watch`` names the lower-is-better number of that record that picks the best checkpoint and
    stops the run when it grows past ``blowup`` times its first value; ``health(model)`` returns
    a description of what is wrong with the sampling network (non-finite or exploding samples) or
    None, and is asked before every checkpoint is written. ``export(model)`` gives the network a
    checkpoint's ``model.*`` holds and metadata to record with it (default: the sampling module
    itself, nothing more); it may be a submodule of the sampling module (SFT-PG's policy exports its
    epsilon-network and records its step table).
    """

    name: str
    parts: dict[str, Part]
    sampler: str
    steps: int
    config: object
    shape: tuple[int, ...]
    random: torch.Generator
    ema_decay: float = 0.0
    log_every: int = 100
    eval_every: int | None = None
    checkpoint_every: int = 1000
    evaluate: Callable[[torch.nn.Module], dict] | None = None
    evaluate_at_start: bool = False
    watch: str | None = None
    blowup: float = 20.0
    health: Callable[[torch.nn.Module], str | None] | None = None
    meta: dict = field(default_factory=dict)
    export: Callable[[torch.nn.Module], tuple[torch.nn.Module, dict]] | None = None
    retries: int = 0
    """On a divergence, go back to the last checkpoint with the sampling part's learning rates halved,
    up to this many times (needs a run directory and one process); 0 stops at the first divergence."""


@dataclass
class Result:
    model: torch.nn.Module
    step: int
    seconds: float
    best: dict | None


def _finite_stats(stats: dict, step: int, name: str) -> None:
    bad = [k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise Diverged(f"{name} diverged at step {step}: {bad[0]} is not finite")


def train(
    run: Run | None,
    stage: Stage,
    step: Callable[[int], dict],
    resume: bool = False,
    progress: bool = True,
    ctx: Context = SINGLE,
    callback: Callable[[int, dict], None] | None = None,
) -> Result:
    """Run ``step(i)`` for i = start..stage.steps - 1 with everything around it (see the module docstring).

    Returns the sampling network (EMA or trained weights, in eval mode), the steps done, the
    training seconds (evaluation excluded) and the best evaluation record. Without a ``run``
    nothing is written (no checkpoints, no metrics, no resume). A divergence raises
    :class:`fewstep.errors.Diverged` naming the last good checkpoint, which is never overwritten
    by a bad model.
    """
    for part in stage.parts.values():
        broadcast_parameters(part.module, ctx)
        for group in part.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    sampling = stage.parts[stage.sampler].module
    ema = EMA(sampling, stage.ema_decay) if stage.ema_decay > 0 else None
    writes = ctx.is_main and run is not None
    path = run.checkpoint(stage.name) if run else None
    best_path = run.checkpoint(stage.name + "_best") if run else None
    start, seconds, best, saved_at = 0, 0.0, None, None

    def sampler_model() -> torch.nn.Module:
        return ema.model if ema else sampling

    if resume and path is not None and path.is_file():
        start, seconds, best = _load(path, stage, ema)
        saved_at = start
        if writes:
            run.truncate_metrics(stage.name, start)

    def exported() -> tuple[torch.nn.Module, dict]:
        return stage.export(sampler_model()) if stage.export else (sampler_model(), {})

    def save(done: int) -> None:
        network, extra_meta = exported()
        tensors, optim_meta = {"rng.train": stage.random.get_state()}, {}
        for name, part in stage.parts.items():
            if name == stage.sampler and not ema:  # what model.* holds is not written twice
                tensors.update(_outside(part.module, network, f"train.{name}"))
            else:
                tensors.update(module_tensors(f"train.{name}", part.module))
            part_tensors, optim_meta[name] = optimizer_tensors(f"optim.{name}", part.optimizer)
            tensors.update(part_tensors)
        if ema:
            tensors.update(_outside(ema.model, network, "ema"))
        meta = {**stage.meta, **extra_meta, "step": done, "seconds": seconds, "optim": optim_meta, "best": best}
        save_model(path, network, stage.config, stage.shape, stage.name, tensors, meta)

    def evaluate(done: int, stats: dict) -> tuple[dict, str | None]:
        """Log an evaluation, keep the best checkpoint; return the record and a problem, if any."""
        nonlocal best
        record = {
            "stage": stage.name,
            "step": done,
            "seconds": round(seconds, 3),
            **stats,
            **stage.evaluate(sampler_model()),
        }
        if writes:
            run.log(record)
        value = record.get(stage.watch) if stage.watch else None
        if value is None:
            return record, None
        initial = best["initial"] if best else value
        if not math.isfinite(value) or value > stage.blowup * initial:
            return record, f"held-out {stage.watch} {value:.4g} (first evaluation {initial:.4g})"
        if best is None or value < best["value"]:
            best = {"step": done, "value": value, "metric": stage.watch, "initial": initial}
            if writes:
                network, extra_meta = exported()
                save_model(
                    best_path,
                    network,
                    stage.config,
                    stage.shape,
                    stage.name,
                    extra_meta={**stage.meta, **extra_meta, "step": done, "best": best},
                )
        return record, None

    def agree(problem: str | None, done: int) -> None:
        """Stop every process when any one saw a problem (rank 0 evaluates, all must leave together)."""
        if maximum(1.0 if problem else 0.0, ctx):
            last = f"; the last good checkpoint is {path} (step {saved_at})" if saved_at is not None else ""
            raise Diverged(f"{stage.name} diverged at step {done}: {problem or 'see rank 0'}{last}")

    if start == 0:
        problem = None
        if ctx.is_main and stage.evaluate and stage.evaluate_at_start:
            problem = evaluate(0, {})[1]
        agree(problem, 0)
        if writes:
            save(0)
            saved_at = 0

    def _back_off(message: str) -> int:
        """Reload the last good checkpoint and halve the sampling part's learning rates; return its step.
        The training seconds keep counting the discarded steps (they were spent)."""
        part = stage.parts[stage.sampler]
        rates = [group["initial_lr"] / 2 for group in part.optimizer.param_groups]
        done, _, _ = _load(path, stage, ema)  # the in-memory best record stays (it saw more)
        for group, rate in zip(part.optimizer.param_groups, rates):
            group["initial_lr"] = rate
        event = f"{message}; went back to step {done} with the learning rates of the {stage.sampler} halved"
        if writes:
            run.truncate_metrics(stage.name, done)
            run.log({"stage": stage.name, "step": done, "event": event, "lr": rates[0]})
        print(f"fewstep: {event}", file=sys.stderr, flush=True)
        return done

    def _run_steps(start: int) -> None:
        nonlocal seconds, saved_at
        running: dict[str, list[float]] = {}
        bar = progress_bar(
            range(start, stage.steps),
            enabled=progress and ctx.is_main,
            desc=stage.name,
            initial=start,
            total=stage.steps,
        )
        try:
            for i in bar:
                for part in stage.parts.values():
                    for group in part.optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * lr_factor(part.lr_schedule, i, stage.steps)
                tick = time.perf_counter()
                stats = step(i)
                _finite_stats(stats, i + 1, stage.name)
                if ema:
                    ema.update(sampling)
                seconds += time.perf_counter() - tick
                done = i + 1
                for key, value in stats.items():
                    running.setdefault(key, []).append(value)
                last = done == stage.steps
                evaluating = stage.evaluate is not None and (
                    (stage.eval_every and done % stage.eval_every == 0) or last
                )
                if writes and (done % stage.log_every == 0 or last) and not evaluating:
                    run.log(
                        {
                            "stage": stage.name,
                            "step": done,
                            "seconds": round(seconds, 3),
                            **{k: sum(v) / len(v) for k, v in running.items()},
                        }
                    )
                if evaluating:
                    problem = None
                    if ctx.is_main:
                        record, problem = evaluate(done, {k: sum(v) / len(v) for k, v in running.items()})
                        if stage.watch and record.get(stage.watch) is not None:
                            bar.set_postfix({stage.watch: f"{record[stage.watch]:.4g}"}, refresh=False)
                    agree(problem, done)
                if done % stage.log_every == 0 or last or evaluating:
                    running = {}
                if done % stage.checkpoint_every == 0 or last:
                    agree(stage.health(sampler_model()) if stage.health else None, done)
                    if writes:
                        save(done)
                        saved_at = done
                if callback is not None:
                    callback(done, stats)
        finally:
            bar.close()

    retries = stage.retries if path is not None and ctx.world_size == 1 else 0  # one process only
    while True:
        try:
            _run_steps(start)
            break
        except Diverged as exc:
            message = str(exc)
            if retries == 0 or saved_at is None:
                if "last good checkpoint" not in message and saved_at is not None:
                    message += f"; the last good checkpoint is {path} (step {saved_at})"
                raise Diverged(message) from None
            retries -= 1
            start = _back_off(message)
    barrier(ctx)  # every process leaves together, after rank 0's last write (no teardown race)
    return Result(sampler_model().eval(), stage.steps, seconds, best)


def _prefix(module: torch.nn.Module, network: torch.nn.Module) -> str | None:
    """Where ``network`` sits inside ``module`` ("" for the module itself; None if it is not inside)."""
    return next((name for name, sub in module.named_modules() if sub is network), None)


def _outside(module: torch.nn.Module, network: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """``module``'s tensors (named ``prefix.*``) that are not those of its submodule ``network``."""
    inner = _prefix(module, network)
    skip = None if inner is None else (inner + "." if inner else "")
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items() if skip is None or not k.startswith(skip)}


def _with_model(tensors: dict, module: torch.nn.Module, network: torch.nn.Module, prefix: str) -> dict:
    """``prefix.*`` tensors completed by ``model.*`` placed where ``network`` sits in ``module``."""
    inner = _prefix(module, network)
    if inner is None:
        return tensors
    place = f"{prefix}.{inner}." if inner else f"{prefix}."
    return {**tensors, **{place + k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}}


def _load(path, stage: Stage, ema: EMA | None) -> tuple[int, float, dict | None]:
    """Restore every part, optimiser, the EMA and the generator from ``path``."""
    tensors, meta = load_checkpoint(path)
    if meta.get("stage") != stage.name or "optim" not in meta:
        raise FewstepError(f"checkpoint {path} is not a {stage.name} checkpoint of this run")
    sampling = stage.parts[stage.sampler].module
    for name, part in stage.parts.items():
        state = tensors
        if name == stage.sampler and not ema:
            network = stage.export(sampling)[0] if stage.export else sampling
            state = _with_model(tensors, sampling, network, f"train.{name}")
        load_module(part.module, f"train.{name}", state, str(path))
        load_optimizer(part.optimizer, f"optim.{name}", tensors, meta["optim"][name])
    if ema:
        network = stage.export(ema.model)[0] if stage.export else ema.model
        load_module(ema.model, "ema", _with_model(tensors, ema.model, network, "ema"), str(path))
    stage.random.set_state(tensors["rng.train"])
    return int(meta["step"]), float(meta["seconds"]), meta.get("best")
