"""What a training stage watches: held-out sample quality during training, and sample health."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ..evaluation import Evaluator, evaluate_sampler
from ..rollout import sample
from ..samplers import build_table
from ..steps import StepTable


def watched_metric(evaluator: Evaluator) -> str:
    """The lower-is-better number that picks the best checkpoint: FID on images, W2 on points
    (sliced W2 when exact W2 is off at this size)."""
    if evaluator.kind == "images":
        return "fid"
    return "w2" if evaluator.size(evaluator.cfg.train_samples) <= evaluator.cfg.exact_w2_max else "sw2"


TableOf = Callable[[torch.nn.Module], StepTable]
"""The table a sampling module samples with (for a policy whose table is trained)."""


def _table(table: StepTable | TableOf | None, model: torch.nn.Module) -> StepTable | None:
    return table(model) if callable(table) else table


def sample_monitor(
    config, data, schedule, device, table: StepTable | TableOf | None = None
) -> tuple[Callable[[torch.nn.Module], dict], str]:
    """``evaluate(model)`` scoring ``evaluate.train_samples`` samples against held-out data (one
    repeat, the floor beside them), and the name of the watched metric. ``table`` is the sampler,
    a function of the model giving it, or None (``config.sampler``'s)."""
    cfg = dataclasses.replace(config.evaluate, n_samples=config.evaluate.train_samples, repeats=1)
    evaluator = Evaluator(data, cfg, device=device, autocast=config.autocast)

    def evaluate(model: torch.nn.Module) -> dict:
        used = _table(table, model) or build_table(config.sampler, schedule, model, data.train())
        _, result = evaluate_sampler(model, used, evaluator, device=device)
        return {**result["model"], **{f"floor_{k}": v for k, v in result["floor"].items()}, "eval_n": result["n"]}

    return evaluate, watched_metric(evaluator)


def sample_health(
    table: StepTable | TableOf, shape: tuple[int, ...], scale: float, device, start: torch.nn.Module, n: int = 256
) -> Callable[[torch.nn.Module], str | None]:
    """A check run before every checkpoint: ``n`` samples must be finite and within 100 x the larger
    of the data's largest absolute value (``scale``) and that of the ``start`` model's samples."""
    n = min(n, 16) if len(shape) == 3 else n

    def draw(model: torch.nn.Module) -> torch.Tensor:
        return sample(model, _table(table, model), n, shape, seed=987_654, batch_size=n, device=device)

    first = draw(start)
    limit = 100 * max(scale, float(first[torch.isfinite(first)].abs().max()) if torch.isfinite(first).any() else 0)

    def health(model: torch.nn.Module) -> str | None:
        x = draw(model)
        if not torch.isfinite(x).all():
            return f"{int((~torch.isfinite(x)).flatten(1).any(1).sum())} of {n} samples are not finite"
        peak = float(x.abs().max())
        if peak > limit:
            return (
                f"samples reach |x| = {peak:.3g}, over 100 times the largest value of the data and of the "
                f"starting sampler, {limit / 100:.3g}"
            )
        return None

    return health
