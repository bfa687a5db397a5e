"""Phase 2: fine-tune the epsilon-model at the K chosen time-steps, and alternate with Phase 1.

The epsilon-loss of pretraining (:class:`fewstep.training.pretrain.EpsilonLoss`) restricted to the
model times the sampler evaluates, t_0..t_{K-1} (rounded to the integer times the loss can noise
data at), weighted uniformly or as Phase 1 weights them (:func:`eps_loss_weights`), with
a small learning rate and an EMA of the weights, on the one training loop
(:func:`fewstep.training.loop.train`: resume, checkpoints and data parallelism when given a run).
``alternate`` runs R rounds of (Phase 1 on the current model, Phase 2 at the steps it chose).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ..distributed import SINGLE, Context, average, average_gradients
from ..errors import FewstepError
from ..models import adam
from ..runs import Run
from ..samplers.spacings import alpha_bar_at
from ..schedules import NoiseSchedule
from ..training.loop import Part, Stage, train
from ..training.pretrain import EpsilonLoss
from .discretisation import loss_weights
from .optimise import ScheduleResult

WEIGHTINGS = ("uniform", "w")


def eps_loss_weights(schedule: NoiseSchedule, times: torch.Tensor) -> torch.Tensor:
    """Weights on the eps-error at t_0..t_{K-1} equivalent to Phase 1's w_i on the x0-error, mean 1.

    Phase 1 weights ||x0_hat - x0||^2 by w_i, and ||x0_hat - x0||^2 = (1 - ab_i) / ab_i ||eps_hat - eps||^2
    at level ab_i, so the eps-error carries w_i (1 - ab_i) / ab_i. ``times`` end at a level t_K >= 0.
    """
    times = torch.as_tensor(times, dtype=torch.float64)
    if times[-1] < 0:
        raise FewstepError("Phase 1's weights need a finite end level: the schedule must end at a time >= 0")
    w, _ = loss_weights(schedule, times)
    ab = alpha_bar_at(schedule, times[:-1])
    weights = w * (1 - ab) / ab
    return weights / weights.mean()


def evaluated_steps(times: torch.Tensor, T: int) -> torch.Tensor:
    """The integer model times a schedule evaluates, increasing: round(t_{K-1}), ..., round(t_0)."""
    steps = torch.as_tensor(times, dtype=torch.float64)[:-1].round().long().clamp(0, T - 1).flip(0)
    if (steps[1:] <= steps[:-1]).any():
        raise FewstepError(f"the schedule {steps.tolist()} has repeated integer steps after rounding")
    return steps


def finetune_at_steps(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    times: torch.Tensor,
    data: torch.Tensor,
    weighting: str = "uniform",
    steps: int = 1000,
    lr: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    ema_decay: float = 0.995,
    run: Run | None = None,
    config=None,
    resume: bool = False,
    ctx: Context = SINGLE,
) -> torch.nn.Module:
    """A fine-tuned copy of ``model`` at the evaluated steps of decreasing ``times`` (t_0..t_{K-1}).

    Returns the exponential moving average of the fine-tuned weights (``ema_decay``; 0 returns the
    raw weights): the pretrained models are EMA weights, and raw Adam iterates at a fixed learning
    rate are noisier than them. With a ``run`` (and its ``config``) the stage checkpoints and resumes.
    """
    if weighting not in WEIGHTINGS:
        raise FewstepError(f"unknown Phase 2 weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    times = torch.as_tensor(times, dtype=torch.float64)
    steps_int = evaluated_steps(times, schedule.T).flip(0)  # aligned with the weights w_0..w_{K-1}
    weights = None
    if weighting == "w":
        weights = eps_loss_weights(schedule, times).float()
    loss_fn = EpsilonLoss(schedule, steps_int, weights)
    tuned = copy.deepcopy(model).train().requires_grad_(True)
    dtype = next(tuned.parameters()).dtype
    device = next(tuned.parameters()).device
    optimizer = adam(tuned.parameters(), lr, device)
    random = torch.Generator().manual_seed(seed)

    def step(i: int) -> dict:
        x0 = data[torch.randint(0, len(data), (batch_size,), generator=random)].to(device=device, dtype=dtype)
        loss = loss_fn(tuned, x0, random, ctx).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(tuned, ctx)
        optimizer.step()
        return {"loss": average(loss.item(), ctx)}

    stage = Stage(
        "phase2",
        {"model": Part(tuned, optimizer)},
        "model",
        steps,
        config,
        tuple(data.shape[1:]),
        random,
        ema_decay=ema_decay,
        log_every=max(1, steps // 20),
        checkpoint_every=max(1, steps),
        meta={"schedule_times": times.tolist()},
    )
    return train(run, stage, step, resume, progress, ctx).model


def alternate(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    data: torch.Tensor,
    phase1: Callable[[torch.nn.Module], ScheduleResult],
    rounds: int = 2,
    **phase2,
) -> tuple[torch.nn.Module, ScheduleResult]:
    """R rounds of Phase 1 (``phase1(model)``) then Phase 2 at its steps; returns the model and last schedule."""
    if rounds < 1:
        raise FewstepError(f"rounds must be >= 1, got {rounds}")
    seed = phase2.pop("seed", 0)
    for r in range(rounds):
        result = phase1(model)
        model = finetune_at_steps(model, schedule, result.times, data, seed=seed + r, **phase2)
    return model, result
