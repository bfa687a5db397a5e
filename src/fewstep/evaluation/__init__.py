"""Sample quality, chosen by the kind of data, always beside the noise floor and with its spread.

* points (vectors): exact W2 (up to ``evaluate.exact_w2_max`` points), sliced W2, and k-NN
  precision, recall, density and coverage;
* images: FID and KID on domain features (a classifier trained on the data set, cached, or local
  Inception weights) and precision/recall/density/coverage on the same features.

The noise floor is every metric between two independent draws of the data of the same size: no
sampler can be expected to score below it. One draw is not a measurement (the swiss-roll exact-W2
floor at 10K points ranges 0.017-0.029 between pairs of draws), so with ``evaluate.repeats = R``
each figure is the mean over R independent (sample seed, data draw) pairs and comes with its
standard deviation.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import torch

from ..errors import FewstepError
from ..progress import note
from .points import sliced_w2, w2
from .prdc import prdc

METRICS = {
    "points": ("w2", "sw2", "precision", "recall", "density", "coverage"),
    "images": ("fid", "kid", "precision", "recall", "density", "coverage"),
}
"""Metric names per data kind; lower is better for w2, sw2, fid and kid, higher for the others."""
LOWER_IS_BETTER = ("w2", "sw2", "fid", "kid")
_FLOORS: dict[str, dict] = {}


def mean_sd(values: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-metric mean and standard deviation (0 for a single draw) over a list of score dicts."""
    keys = values[0].keys()
    mean = {k: sum(v[k] for v in values) / len(values) for k in keys}
    if len(values) == 1:
        return mean, {k: 0.0 for k in keys}
    sd = {k: math.sqrt(sum((v[k] - mean[k]) ** 2 for v in values) / (len(values) - 1)) for k in keys}
    return mean, sd


class Evaluator:
    """Scores samples of one data set (a :class:`fewstep.data.DataSource`) against held-out data."""

    def __init__(self, data, cfg, progress: bool = False, device: str = "cpu", autocast: str = "off"):
        self.data, self.cfg, self.progress = data, cfg, progress
        self.device, self.autocast = device, autocast  # where samples are drawn and features computed
        self.kind = data.kind
        self._features = None

    def features(self):
        """The image feature network (trained once per data set and cached on disk)."""
        if self._features is None:
            from .images import feature_network

            self._features = feature_network(self.data, self.cfg, self.progress, self.device)
        return self._features

    def metrics(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """Every metric of the data kind between generated ``fake`` and real ``real`` (same size)."""
        if tuple(fake.shape[1:]) != tuple(real.shape[1:]):
            raise FewstepError(
                f"samples have shape {tuple(fake.shape[1:])} per example but the {self.data.name} "
                f"data has {tuple(real.shape[1:])}"
            )
        cfg = self.cfg
        if self.kind == "images":
            from .images import image_metrics

            return image_metrics(fake, real, self.features(), cfg.neighbours, cfg.seed, self.device)
        exact = len(fake) <= cfg.exact_w2_max
        note(
            f"exact W2 on {len(fake)} points (network simplex; about {40 * (len(fake) / 10_000) ** 2:.0f} s "
            "on one core at this size)",
            self.progress and exact and len(fake) >= 5000,
        )
        out = {
            "w2": w2(fake, real, cfg.max_iter) if exact else float("nan"),
            "sw2": sliced_w2(fake, real, cfg.sliced_projections, cfg.seed),
        }
        return {**out, **prdc(real, fake, cfg.neighbours)}

    def size(self, n: int) -> int:
        """The sample size actually compared: ``n``, limited by a finite set's held-out split."""
        limit = self.data.max_eval_size()
        if limit is not None and limit < 2:
            raise FewstepError(
                f"the {self.data.name} data has too few held-out examples to evaluate; raise data.heldout_fraction"
            )
        return n if limit is None else min(n, limit)

    def _seed(self, repeat: int) -> int:
        return self.cfg.seed + 7919 * repeat

    def floor(self, n: int, repeats: int) -> dict:
        """The noise floor at size ``n``: mean and sd over max(``repeats``, ``evaluate.floor_repeats``)
        independent data pairs, pair r being the data draw repeat r is scored against (cached)."""
        n = self.size(n)
        pairs = max(repeats, self.cfg.floor_repeats)
        key = json.dumps([vars(self.data.config), n, vars(self.cfg), pairs], sort_keys=True, default=str)
        if key not in _FLOORS:
            scores = [self.metrics(*reversed(self.data.floor_pair(n, self._seed(r)))) for r in range(pairs)]
            mean, sd = mean_sd(scores)
            _FLOORS[key] = {"floor": mean, "floor_sd": sd, "floor_repeats": pairs, "floor_draws": scores}
        return _FLOORS[key]

    def score(
        self, draw: Callable[[int, int], torch.Tensor], n: int | None = None, repeats: int | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Score ``draw(n, r)`` (the samples of repeat r, each with a fresh seed) against held-out data.

        Returns the first repeat's samples and ``{"model", "model_sd", "draws", "floor", "floor_sd",
        "floor_repeats", "floor_draws", "n", "repeats", "data"}``: per-metric means and standard
        deviations over the repeats, and each repeat's (floor pair's) scores. Repeat r and floor pair r
        share their data draw, so ``draws[r]`` and ``floor_draws[r]`` can be compared pairwise.
        """
        n = self.size(n or self.cfg.n_samples)
        repeats = repeats or self.cfg.repeats
        scores, first = [], None
        for r in range(repeats):
            samples = draw(n, r)
            first = samples if first is None else first
            reference, _ = self.data.floor_pair(n, self._seed(r))
            scores.append(self.metrics(samples[: len(reference)], reference))
        mean, sd = mean_sd(scores)
        return first, {
            "data": self.data.name,
            "n": n,
            "repeats": repeats,
            "model": mean,
            "model_sd": sd,
            "draws": scores,
            **self.floor(n, repeats),
        }

    def score_samples(self, samples: torch.Tensor) -> dict:
        """Score a fixed set of samples (one repeat, as many as the data allows)."""
        return self.score(lambda n, r: samples, n=len(samples), repeats=1)[1]


def evaluate_sampler(
    model, table, evaluator: Evaluator, n: int | None = None, repeats: int | None = None, device: str | None = None
) -> tuple[torch.Tensor, dict]:
    """Draw samples with ``table`` (a fresh sample seed per repeat) and score them beside the floor.

    Samples are drawn on ``device`` (default: the evaluator's), in batches of ``evaluate.batch_size``
    (memory O(batch), whatever the number of steps), with the evaluator's autocast setting.
    """
    from ..models import network
    from ..rollout import sample

    cfg = evaluator.cfg
    device = device or evaluator.device
    model = network(model.to(device) if isinstance(model, torch.nn.Module) else model, evaluator.autocast, device)

    def draw(size: int, repeat: int) -> torch.Tensor:
        return sample(
            model,
            table,
            size,
            evaluator.data.shape,
            seed=cfg.seed + 1009 * repeat,
            batch_size=cfg.batch_size,
            device=device,
            progress=evaluator.progress,
        )

    return evaluator.score(draw, n, repeats)


def format_scores(result: dict) -> str:
    """One line: each metric with its floor (and spreads when there are several repeats)."""
    parts = []
    for key, value in result["model"].items():
        if isinstance(value, float) and math.isnan(value):
            continue
        sd = f" +- {result['model_sd'][key]:.4g}" if result["repeats"] > 1 else ""
        parts.append(f"{key} {value:.4g}{sd} (floor {result['floor'][key]:.4g})")
    return ", ".join(parts)


__all__ = [
    "Evaluator",
    "LOWER_IS_BETTER",
    "METRICS",
    "evaluate_sampler",
    "format_scores",
    "mean_sd",
    "prdc",
    "sliced_w2",
    "w2",
]
