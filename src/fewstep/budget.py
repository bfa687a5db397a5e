"""Memory estimates made before any work: refuse what would not fit, with the estimate in the message.

Parameters are counted on torch's ``meta`` device (nothing is allocated); activations come from one
forward pass of one example (on uninitialised memory for networks up to ``MATERIALISE_BYTES``,
else on the meta device). Work whose estimate exceeds ``MEMORY_SHARE`` of the device's memory is
refused by :meth:`Budget.check`. :mod:`fewstep.preflight` adds each task's terms.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import Config
from .data import DataSource
from .errors import FewstepError
from .fields import shown

MEMORY_SHARE = 0.8
"""Work whose estimated memory exceeds this share of the device's memory is refused."""

MATERIALISE_BYTES = 2**28
"""Networks up to this size are given (uninitialised) memory to count their activations with a real
forward pass of one example; larger ones are run on the meta device."""


def memory_of(device: str) -> tuple[int | None, str]:
    """The memory work on ``device`` can use (bytes; None when unknown) and how to name it."""
    if torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}'s"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"
    except (ValueError, OSError, AttributeError):
        return None, "this machine's"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


@dataclass
class Budget:
    """An estimate of the memory of one piece of work: what stays (weights, optimiser state, data)
    plus the largest of what comes and goes (a batch's activations, evaluation, ...)."""

    task: str
    device: str
    persistent: list[tuple[str, float]] = field(default_factory=list)
    transient: list[tuple[str, float]] = field(default_factory=list)

    def keep(self, what: str, nbytes: float) -> None:
        self.persistent.append((what, float(nbytes)))

    def peak(self, what: str, nbytes: float) -> None:
        self.transient.append((what, float(nbytes)))

    def total(self) -> float:
        return sum(b for _, b in self.persistent) + max((b for _, b in self.transient), default=0.0)

    def check(self) -> None:
        limit, whose = memory_of(self.device)
        need = self.total()
        if limit is None or need <= MEMORY_SHARE * limit:
            return
        parts = self.persistent + ([max(self.transient, key=lambda item: item[1])] if self.transient else [])
        parts = sorted(parts, key=lambda item: -item[1])[:3]
        detail = "; ".join(f"{what}: {_gib(b)}" for what, b in parts)
        raise FewstepError(
            f"{self.task} needs about {_gib(need)} of memory, more than {MEMORY_SHARE:.0%} of {whose} "
            f"{_gib(limit)} ({detail})"
        )


def on_meta(build) -> torch.nn.Module:
    """The module ``build()`` makes, on torch's meta device: shapes and parameter counts, no memory."""
    with torch.device("meta"):
        return build()


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def activations(module: torch.nn.Module, shape: tuple[int, ...], timed: bool = True) -> int:
    """Numbers produced by the layers of ``module`` for one example: what a batch keeps for backward.

    Counted in a forward pass of one example: a network built on the meta device is first given
    uninitialised memory (up to ``MATERIALISE_BYTES``; its values do not matter, only the shapes)
    because a forward pass on the meta device costs seconds of torch imports; a larger one runs
    on the meta device. The module may be moved off the meta device."""
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        total += output.numel() if torch.is_tensor(output) else 0

    param = next(iter(module.parameters()), None)
    if param is not None and param.device.type == "meta":
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        if size <= MATERIALISE_BYTES:  # a forward pass on the meta device costs seconds of torch imports
            module = module.to_empty(device="cpu")
    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        x = torch.zeros((1, *shape), device=device, dtype=dtype)
        with torch.no_grad():
            module(x, torch.zeros(1, device=device, dtype=dtype)) if timed else module(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def eps_model_on_meta(config: Config, shape: tuple[int, ...]) -> torch.nn.Module:
    from .models import build_eps_model

    return on_meta(lambda: build_eps_model(config.model, shape))


def network_keys(config: Config) -> str:
    return "model.channels, model.channel_mult" if config.model.kind == "unet" else "model.hidden"


def add_evaluation(budget: Budget, config: Config, data: DataSource, model: torch.nn.Module | None, n: int) -> None:
    """Evaluation of ``n`` samples (drawn with ``model``; None: given): sampling batches, the samples
    and data draws, exact W2, the k-NN metrics."""
    cfg = config.evaluate
    if data.kind == "images" and cfg.features != "classifier" and not Path(cfg.features).is_file():
        raise FewstepError(
            f"config key evaluate.features is {shown(cfg.features)}, which is not a file: give the path of the FID "
            "Inception weights (pt_inception-2015-12-05-6726825d.pth) or 'classifier'; fewstep downloads nothing"
        )
    if data.kind == "images" and cfg.features == "classifier" and data.train_labels is None:
        raise FewstepError(
            f"the {data.name} data has no labels to train the feature classifier of FID on; set "
            "evaluate.features to the path of a local Inception weights file"
        )
    limit = data.max_eval_size()
    if limit is not None and limit < 2:
        raise FewstepError(
            f"the {data.name} data has too few held-out examples to evaluate; raise data.heldout_fraction"
        )
    n = n if limit is None else min(n, limit)
    size = math.prod(data.shape)
    per_example = activations(model, data.shape) if model is not None else 0
    sampling = min(cfg.batch_size, n) * (per_example + 4 * size) * 4
    clouds = 4 * n * size * 4  # the samples, the reference draw and the floor pair
    metrics = 0.0
    if data.kind == "points":
        if n <= cfg.exact_w2_max:
            metrics = 3 * n * n * 8  # the cost matrix and the network simplex's copies of it
        metrics = max(metrics, 2 * min(1024, n) * n * 8)  # k-NN distances, a chunk of rows at a time
    budget.peak(
        f"evaluation of {n} samples (evaluate.n_samples, evaluate.exact_w2_max, evaluate.batch_size)",
        sampling + clouds + metrics,
    )


def add_training(
    budget: Budget, name: str, model: torch.nn.Module, shape, batch: int, batch_key: str, ema: bool, keys: str
) -> None:
    """A network trained with Adam: weights, gradients, two moments (and an EMA copy), and a batch's activations."""
    count = parameters(model)
    copies = 4 + (1 if ema else 0)
    budget.keep(f"{name} of {count:,} parameters ({keys}) with its gradients and Adam state", copies * 4 * count)
    budget.check()  # too big already: refuse before running the network to count its activations
    budget.peak(f"a training batch of {batch} ({batch_key})", 3 * 4 * batch * activations(model, shape))


def add_data(budget: Budget, config: Config, data: DataSource) -> None:
    if data.is_toy:
        budget.keep(f"{config.data.n_train} training points (data.n_train)", config.data.n_train * 4 * 4)
