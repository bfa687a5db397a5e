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

from ..config import Config
from ..data import DataSource
from ..distributed import SINGLE, Context, average, average_gradients, setup
from ..models import adam, build_eps_model, network, set_threads
from ..runs import Run
from ..schedules import NoiseSchedule, make_schedule
from .loop import Part, Result, Stage, train
from .monitor import sample_monitor


@dataclass
class EpsilonLoss:
    """Per-example simple loss E_{i, eps} ||eps - eps_theta(sqrt(ab_i) x0 + sqrt(1 - ab_i) eps, i)||^2 / D.

    ``timesteps`` restricts i to a subset (schedule fine-tuning) and ``weights`` reweights them.
    The random numbers of the whole batch are drawn and this process keeps its rows (``ctx``).
    """

    schedule: NoiseSchedule
    timesteps: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __call__(
        self, model: torch.nn.Module, x0: torch.Tensor, random: torch.Generator, ctx: Context = SINGLE
    ) -> torch.Tensor:
        n = x0.shape[0]
        if self.timesteps is None:
            t = torch.randint(0, self.schedule.T, (n,), generator=random)
            w = None
        else:
            pick = torch.randint(0, len(self.timesteps), (n,), generator=random)
            t = self.timesteps[pick]
            w = None if self.weights is None else self.weights[pick].to(x0)
        eps = torch.randn(x0.shape, generator=random).to(x0.device)
        x0, t, eps = ctx.take(x0), ctx.take(t), ctx.take(eps)
        w = None if w is None else ctx.take(w)
        ab = self.schedule.alpha_bar[t].to(x0).view(-1, *([1] * (x0.ndim - 1)))
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        loss = (model(x_t, t.to(x0)) - eps).pow(2).flatten(1).mean(1)
        return loss if w is None else loss * w


LOSS_LIMIT = 100.0
"""Pretraining stops when its epsilon loss (1 for the zero predictor, well below 1 once trained)
averages more than this between two checkpoints."""


def weights_are_finite(model: torch.nn.Module) -> str | None:
    """A health check: None when every parameter is finite."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    return f"the weights {bad[0]} are not finite" if bad else None


def pretrain(
    config: Config,
    run: Run,
    resume: bool = False,
    progress: bool = True,
    data: DataSource | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> Result:
    """Train an epsilon-model on the configured data; the result's model is the EMA model.

    Writes ``checkpoints/pretrain.safetensors`` every ``pretrain.checkpoint_every`` steps and at
    the end; with ``resume`` continues from it (same weights as an uninterrupted run). Under
    torchrun each process trains on its share of every batch and only rank 0 writes.
    """
    cfg = config.pretrain
    ctx = setup(config.device)
    data = data or DataSource(config.data)
    train_x = data.train().to(ctx.device)
    shape = tuple(train_x.shape[1:])
    ctx.rows(cfg.batch_size)  # refuses a batch the processes cannot share
    set_threads(config.threads, shape)
    schedule = make_schedule(config.schedule.kind, config.schedule.T)
    torch.manual_seed(config.seed)
    model = build_eps_model(config.model, shape).to(ctx.device).train()
    optimizer = adam(model.parameters(), cfg.lr, ctx.device)
    random = torch.Generator().manual_seed(config.seed)
    loss_fn = EpsilonLoss(schedule)
    net = network(model, config.autocast, ctx.device)  # bf16 autocast of the network if configured

    recent: list[float] = []

    def step(i: int) -> dict:
        idx = torch.randint(0, len(train_x), (cfg.batch_size,), generator=random)
        loss = loss_fn(net, train_x[idx.to(ctx.device)], random, ctx).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, ctx)
        optimizer.step()
        value = average(loss.item(), ctx)
        recent.append(value)
        return {"loss": value}

    def health(sampling: torch.nn.Module) -> str | None:
        """Finite weights, and a loss that has not run away: predicting eps = 0 scores 1."""
        problem = weights_are_finite(model) or weights_are_finite(sampling)
        mean = sum(recent) / len(recent) if recent else 0.0
        recent.clear()
        if problem is None and mean > LOSS_LIMIT:
            problem = (
                f"the epsilon loss averaged {mean:.4g} since the last checkpoint, over {LOSS_LIMIT:g} times "
                f"what predicting zero scores; lower pretrain.lr (now {cfg.lr:g})"
            )
        return problem

    evaluate, watch = None, None
    if cfg.eval_every is not None:
        evaluate, watch = sample_monitor(config, data, schedule, ctx.device)
    stage = Stage(
        "pretrain",
        {"model": Part(model, optimizer, cfg.lr_schedule)},
        "model",
        cfg.steps,
        config,
        shape,
        random,
        ema_decay=cfg.ema_decay,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        evaluate=evaluate,
        watch=watch,
        health=health,
    )
    return train(run, stage, step, resume, progress, ctx, callback)
