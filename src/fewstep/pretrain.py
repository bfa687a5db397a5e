"""DDPM pretraining with the epsilon-prediction ("simple") loss of Ho et al. (2020).

Relation to eq. 5: with Sigma fixed, each KL term of J is a Gaussian KL whose only
theta-dependent part is ||mu_tilde - mu_theta||^2 / (2 sigma^2). Writing both means in the
epsilon form gives w_i * ||eps - eps_theta(x_i, i)||^2 with w_i = beta_i^2 / (2 sigma_i^2
alpha_i (1 - alpha_bar_i)). The simple loss drops w_i and samples i uniformly: J up to a
per-step weighting (Ho et al. found the unweighted loss samples better).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, load_module, load_optimizer, module_tensors, optimizer_tensors, check_matches
from .config import Config, to_dict
from .data import DataSource
from .distributed import average, average_gradients, barrier, broadcast_parameters, setup
from .models import EMA, adam, build_eps_model, save_model, set_threads
from .runs import Run
from .schedules import NoiseSchedule, make_schedule


@dataclass
class EpsilonLoss:
    """Per-sample simple loss E_{i, eps} ||eps - eps_theta(sqrt(ab_i) x0 + sqrt(1 - ab_i) eps, i)||^2 / D.

    ``timesteps`` restricts i to a subset (schedule fine-tuning) and ``weights`` reweights them.
    """

    schedule: NoiseSchedule
    timesteps: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __call__(self, model: torch.nn.Module, x0: torch.Tensor, generator: torch.Generator, rows: slice | None = None) -> torch.Tensor:
        """``rows``: draw the random numbers of the whole batch, keep these rows (data-parallel shards)."""
        n = x0.shape[0]
        if self.timesteps is None:
            t = torch.randint(0, self.schedule.T, (n,), generator=generator)
            w = None
        else:
            pick = torch.randint(0, len(self.timesteps), (n,), generator=generator)
            t = self.timesteps[pick]
            w = None if self.weights is None else self.weights[pick].to(x0)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        if rows is not None:
            x0, t, eps, w = x0[rows], t[rows], eps[rows], None if w is None else w[rows]
        ab = self.schedule.alpha_bar[t].to(x0).view(-1, *([1] * (x0.ndim - 1)))
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        loss = (model(x_t, t.to(x0)) - eps).pow(2).flatten(1).mean(1)
        return loss if w is None else loss * w


def pretrain(
    config: Config,
    run: Run,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> torch.nn.Module:
    """Train an epsilon-model on the configured data; return the EMA model.

    Writes ``checkpoints/pretrain.safetensors`` every ``pretrain.checkpoint_every`` steps and at
    the end; with ``resume`` continues from it (same weights as an uninterrupted run).
    ``callback(step, loss)`` runs after every step (tests use it to interrupt a run).
    Under torchrun each process trains on its share of every batch and only rank 0 writes
    (see ``fewstep.distributed``).
    """
    cfg = config.pretrain
    ctx = setup(config.device)
    device, rows = ctx.device, ctx.rows(cfg.batch_size)
    data = DataSource(config.data).train().to(device)
    schedule = make_schedule(config.schedule.kind, config.schedule.T)
    torch.manual_seed(config.seed)
    set_threads(config, tuple(data.shape[1:]))
    model = build_eps_model(config, tuple(data.shape[1:])).to(device)
    broadcast_parameters(model, ctx)
    ema = EMA(model, cfg.ema_decay)
    optimizer = adam(model.parameters(), cfg.lr, device)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = EpsilonLoss(schedule)
    path = run.checkpoint("pretrain")

    start = 0
    if resume and path.is_file():
        tensors, meta = load_checkpoint(path)
        check_matches(meta, {"model": to_dict(config.model), "schedule": to_dict(config.schedule)}, str(path))
        load_module(model, "train", tensors, str(path))
        load_module(ema.model, "model", tensors, str(path))
        load_optimizer(optimizer, "optim", tensors, meta["optim"])
        generator.set_state(tensors["rng.batches"])
        start = meta["step"]
        if ctx.is_main:
            run.truncate_metrics("pretrain", start)

    def save(step: int) -> None:
        opt_tensors, opt_meta = optimizer_tensors("optim", optimizer)
        extra = {**module_tensors("train", model), **opt_tensors, "rng.batches": generator.get_state()}
        save_model(path, ema.model, config, data.shape[1:], "pretrain", extra, {"step": step, "optim": opt_meta})

    running = []
    bar = tqdm(range(start, cfg.steps), desc="pretrain", disable=not (progress and ctx.is_main), initial=start, total=cfg.steps)
    for step in bar:
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=generator)
        loss = loss_fn(model, data[idx.to(device)], generator, rows).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, ctx)
        optimizer.step()
        ema.update(model)
        running.append(average(loss.item(), ctx))
        done = step + 1
        if (done % cfg.log_every == 0 or done == cfg.steps) and ctx.is_main:
            mean_loss = sum(running) / len(running)
            run.log({"stage": "pretrain", "step": done, "loss": mean_loss})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            running = []
        if (done % cfg.checkpoint_every == 0 or done == cfg.steps) and ctx.is_main:
            save(done)
        if callback is not None:
            callback(done, loss.item())
    barrier(ctx)  # every process leaves together, after rank 0's last write (no teardown race)
    return ema.model.eval()
