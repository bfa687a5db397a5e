"""Evaluate a sampler against the data, always beside the noise floor."""
from __future__ import annotations

import json

import torch

from .config import Config, to_dict
from .data import DataSource
from .errors import FewstepError
from .metrics import Scores, score
from .rollout import EpsModel, sample
from .steps import StepTable


def evaluate_samples(samples: torch.Tensor, config: Config, data: DataSource | None = None) -> dict[str, dict[str, float]]:
    """W2 and sliced W2 of ``samples`` against a fresh data draw, and the noise floor."""
    cfg = config.evaluate
    data = data or DataSource(config.data)
    if tuple(samples.shape[1:]) != tuple(data.shape):
        raise FewstepError(f"samples have shape {tuple(samples.shape[1:])} per point but the {config.data.name} data has {tuple(data.shape)}")
    # Score the model at the floor's sample size (a finite data file's floor uses two disjoint halves).
    floor, m = noise_floor(config, data, len(samples))
    reference = data.draw(m, cfg.seed)
    kw = {"n_projections": cfg.sliced_projections, "max_iter": cfg.max_iter, "seed": cfg.seed}
    return {"model": score(samples[:m], reference, **kw).as_dict(), "floor": floor}


_FLOORS: dict[str, tuple[dict[str, float], int]] = {}


def noise_floor(config: Config, data: DataSource, n: int) -> tuple[dict[str, float], int]:
    """The metrics between two independent data draws of (up to) ``n`` points, and that size.

    Computed once per data set, size and evaluation settings in a process: an exact W2 at 10K
    points takes tens of seconds, and every evaluation of a run reports the same floor.
    """
    cfg = config.evaluate
    key = json.dumps([to_dict(config.data), n, to_dict(cfg)], sort_keys=True)
    if key not in _FLOORS:
        floor_a, floor_b = data.floor_pair(n, cfg.seed + 1)
        kw = {"n_projections": cfg.sliced_projections, "max_iter": cfg.max_iter, "seed": cfg.seed}
        _FLOORS[key] = (score(floor_a, floor_b, **kw).as_dict(), len(floor_a))
    floor, m = _FLOORS[key]
    return dict(floor), m


def evaluate_sampler(
    model: EpsModel, table: StepTable, config: Config, progress: bool = False, data: DataSource | None = None
) -> tuple[torch.Tensor, dict]:
    """Draw ``evaluate.n_samples`` samples with ``table`` and score them (``data``: an already
    loaded source of ``config.data``, to avoid reading it again)."""
    data = data or DataSource(config.data)
    samples = sample(model, table, config.evaluate.n_samples, data.shape, seed=config.evaluate.seed,
                     device=config.device, progress=progress)
    return samples, evaluate_samples(samples, config, data)


def format_scores(result: dict[str, dict[str, float]]) -> str:
    m, f = result["model"], result["floor"]
    return f"W2 {m['w2']:.4f} (floor {f['w2']:.4f}), sliced W2 {m['sw2']:.4f} (floor {f['sw2']:.4f})"


__all__ = ["Scores", "evaluate_samples", "evaluate_sampler", "format_scores"]
