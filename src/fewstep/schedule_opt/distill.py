"""Phase 2 by distillation: fine-tune the model at the K chosen times so that the K-step sampler
reproduces the pretrained model's own fine-step solution, while its other times stay put.

The eps-loss at the chosen steps (:func:`.finetune.finetune_at_steps`) fits the data at those
times, which is not what a K-step sampler lacks: its error is discretisation error (the x0
prediction is frozen over a long interval, eq. 2 of :mod:`.path_bound`), which a better fit of
the data at t_i does not remove. Here the teacher is the pretrained model's fine reference path
X (:mod:`.reference`, computed once, data-free), and the loss at the schedule t_0 > ... > t_K = -1 is

* ``target="output"``: the discretisation error itself, mean ||S_theta(x_T) - X(-1)||^2 / d, by
  back-propagation through the K steps of DDIM (K model evaluations per start); or
* ``target="path"``: the squared interval terms of the path bound, sum_i mean ||J_{t_{i+1}}
  (Phi_theta(X(t_i)) - X(t_{i+1}))||^2 / d, each step taken from the teacher's state and its local
  error carried to the output by the teacher's flow Jacobian (one evaluation per interval).

Drift at every other time is held back by self-distillation on the teacher's path (``anchor``
times mean ||eps_theta(X_j, tau_j) - eps_pretrained(X_j, tau_j)||^2 / d over random fine times
tau_j), so the model still serves other samplers and schedules (:func:`anchor_drift` measures it).
The starts of the teacher path are the training set: evaluate on independent starts. Returns the
exponential moving average of the weights (``ema_decay``; 0 returns the raw weights). The stage
runs on the one training loop, so it checkpoints and resumes like every other stage.
"""

from __future__ import annotations

import copy

import torch

from ..errors import FewstepError
from ..models import adam
from ..runs import Run
from ..samplers.spacings import alpha_bar_at
from ..schedules import NoiseSchedule
from ..training.loop import Part, Stage, train
from .path_bound import flow_jacobians
from .reference import FineReference

TARGETS = ("output", "path")


def _eps(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    dtype = next(model.parameters()).dtype
    return model(x.to(dtype), t.to(dtype)).to(torch.float64)


def anchor_drift(model, reference: FineReference, rows: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """mean ||eps_model(X_j, tau_j) - E_j||^2 / d over (start ``rows``, fine index ``fine``) pairs."""
    x, t = reference.states[fine, rows], reference.times[fine]
    return (_eps(model, x, t) - reference.eps[fine, rows]).pow(2).flatten(1).mean(1).mean()


def finetune_on_path(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    times,
    reference: FineReference,
    target: str = "output",
    steps: int = 600,
    lr: float = 1e-4,
    batch_size: int = 256,
    anchor: float = 1.0,
    seed: int = 0,
    ema_decay: float = 0.995,
    run: Run | None = None,
    config=None,
    resume: bool = False,
    progress: bool = False,
) -> torch.nn.Module:
    """A copy of ``model`` distilled at the K evaluated times of ``times`` (decreasing, ending at -1).

    Runs on the one training loop (:func:`fewstep.training.loop.train`): with a ``run`` (and its
    ``config``) the stage checkpoints and resumes.
    """
    if target not in TARGETS:
        raise FewstepError(f"unknown Phase 2 target {target!r}; choose one of {', '.join(TARGETS)}")
    times = torch.as_tensor(times, dtype=torch.float64)
    if times[-1] != -1:
        raise FewstepError("distillation compares with the reference's clean end: the schedule must end at -1")
    nodes = reference.index(times)
    ab = alpha_bar_at(schedule, times)
    alpha, sigma = ab.sqrt(), (1 - ab).clamp(min=0).sqrt()
    K, n = len(times) - 1, reference.x_T.shape[0]
    if target == "path":
        jac, scale = flow_jacobians(model, schedule, reference, nodes[1:])
    tuned = copy.deepcopy(model).train().requires_grad_(True)
    optimizer = adam(tuned.parameters(), lr)
    random = torch.Generator().manual_seed(seed)
    chosen = set(nodes.tolist())
    others = torch.tensor([j for j in range(len(reference.times) - 1) if j not in chosen])

    def one_step(x: torch.Tensor, i: int) -> torch.Tensor:
        eps = _eps(tuned, x, times[i].expand(len(x)))
        return alpha[i + 1] * (x - sigma[i] * eps) / alpha[i] + sigma[i + 1] * eps

    def step(_: int) -> dict:
        rows = torch.randint(0, n, (batch_size,), generator=random)
        if target == "output":
            x = reference.states[0, rows]
            for i in range(K):
                x = one_step(x, i)
            loss = (x - reference.output[rows]).pow(2).flatten(1).mean(1).mean()
        else:
            loss = 0.0
            for i in range(K):
                delta = one_step(reference.states[nodes[i], rows], i) - reference.states[nodes[i + 1], rows]
                projected = torch.einsum("nmd,nd->nm", jac[i, rows], delta.flatten(1))
                loss = loss + scale * projected.pow(2).sum(1).mean() / delta.flatten(1).shape[1]
        drift = anchor_drift(
            tuned, reference, rows, others[torch.randint(0, len(others), (batch_size,), generator=random)]
        )
        total = loss + anchor * drift if anchor > 0 else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), "drift": float(torch.as_tensor(drift).detach())}

    stage = Stage(
        "phase2",
        {"model": Part(tuned, optimizer)},
        "model",
        steps,
        config,
        tuple(reference.x_T.shape[1:]),
        random,
        ema_decay=ema_decay,
        log_every=max(1, steps // 20),
        checkpoint_every=max(1, steps),
        meta={"schedule_times": times.tolist(), "phase2": target},
    )
    return train(run, stage, step, resume, progress).model.requires_grad_(False)
