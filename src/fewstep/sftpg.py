"""Shortcut fine-tuning with policy gradient: Algorithm 1 of Fan & Lee (2023), Section 4.

The generator theta is the pretrained epsilon-model; only the step means are trained, the step
variances stay those of the sampler's ``StepTable``. A critic f_alpha scores final samples and a
time-conditioned baseline V_omega(x_{t+1}, t) reduces the variance of the policy gradient.

Conventions (stated once, used everywhere):

* g(p, f, q) = E_p f(x_0) - E_q f(x_0) (eq. 6): the critic maximises it, the generator minimises it,
  so the critic scores generated samples *high*.
* Log-densities are summed over dimensions (``step_log_prob``).
* R_B (eq. 21) is summed over the K steps and averaged over trajectories. The paper's reference
  implementation averaged over steps on toy data, which divides lambda by K: its lambda = 0.1 at
  K = 10 is lambda = 0.01 here.
* The generator loss is the surrogate whose gradient is eq. 20 (or eq. 15): over m (trajectory,
  step) pairs drawn uniformly from the buffer, K * mean[(f(x_0) - V(x_{t+1}, t)) log p(x_t | x_{t+1})]
  is an unbiased estimate of the sum over steps in eq. 20.
* Every critic round compares m generated with m real samples, and the generator takes exactly
  ``n_generator`` steps per iteration (the reference implementation took one step whatever
  n_generator said, and its last short batch mixed unequal real and fake counts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import FinetuneConfig
from .distributed import Context, average, average_gradients, maximum
from .errors import FewstepError
from .rollout import Trajectory, draw_noise, rollout, step_log_prob
from .steps import StepTable


def method_name(cfg: FinetuneConfig) -> str:
    """The paper's name of a configured variant: SFT-PG (B), SFT-PG (GP), SFT (GP), PG (B)..."""
    estimator = {"pg_baseline": "SFT-PG", "pathwise": "SFT", "pg": "PG without baseline"}[cfg.estimator]
    return f"{estimator} ({'B' if cfg.critic_reg == 'baseline' else 'GP'})"


SINGLE = Context()
"""A single process (no data parallelism)."""


class Buffer:
    """The trajectory buffer B of Algorithm 1: every step (x_{t+1}, x_t, x_0, t) of each rollout.

    Entries are stored round by round, step-major: entry ``r K m + k m + i`` is step k of
    trajectory i of critic round r. Under data parallelism each process stores its own rows of every
    round, and ``sample`` draws indices over the whole (all-process) buffer, so N processes draw
    exactly the entries one process would (see ``fewstep.distributed``).
    """

    def __init__(self) -> None:
        self.x_in: list[torch.Tensor] = []
        self.x_out: list[torch.Tensor] = []
        self.x0: list[torch.Tensor] = []
        self.k: list[torch.Tensor] = []
        self._joined: tuple[torch.Tensor, ...] | None = None  # the parts concatenated, for sampling

    def add(self, traj: Trajectory) -> None:
        self._joined = None
        K, n = traj.K, traj.x.shape[1]
        self.x_in.append(traj.x[:-1].reshape(K * n, *traj.x.shape[2:]))
        self.x_out.append(traj.x[1:].reshape(K * n, *traj.x.shape[2:]))
        self.x0.append(traj.x0.repeat(K, *([1] * (traj.x.ndim - 2))))
        self.k.append(torch.arange(K).repeat_interleave(n))

    def __len__(self) -> int:
        return sum(len(k) for k in self.k)

    def sample(self, m: int, generator: torch.Generator, ctx: Context = SINGLE) -> tuple[torch.Tensor, ...]:
        """m entries drawn uniformly (with replacement) over all stored (trajectory, step) pairs of
        all processes; this process returns the draws that fall on its own trajectories."""
        idx = torch.randint(0, len(self) * ctx.world_size, (m,), generator=generator)
        if ctx.active:
            K, share = int(self.k[0].max()) + 1, len(self.k[0]) // (int(self.k[0].max()) + 1)
            width = share * ctx.world_size  # trajectories per round over all processes
            r, k, i = idx // (K * width), (idx % (K * width)) // width, idx % width
            idx = (r * K * share + k * share + i % share)[i // share == ctx.rank]
        if self._joined is None:  # once per fill, not once per generator step
            self._joined = tuple(torch.cat(part) for part in (self.x_in, self.x_out, self.x0, self.k))
        x_in, x_out, x0, k = self._joined
        idx_dev = idx.to(x_in.device)
        return x_in[idx_dev], x_out[idx_dev], x0[idx_dev], k[idx]


@dataclass
class Nets:
    """The three networks and their optimisers."""

    generator: nn.Module
    critic: nn.Module
    baseline: nn.Module
    opt_generator: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    opt_baseline: torch.optim.Optimizer


def critic_values(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return critic(x).view(-1)


def baseline_values(baseline: nn.Module, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """V_omega(x_{t+1}, t), with the step index k as the time input."""
    return baseline(x, k.to(device=x.device, dtype=x.dtype)).view(-1)


def baseline_residual(f0: torch.Tensor, baseline: nn.Module, traj: Trajectory) -> torch.Tensor:
    """R_B of eq. 21: E sum_t (f(x_0) - V(x_{t+1}, t))^2, given the critic values ``f0`` of ``traj.x0``."""
    K, n = traj.K, traj.x.shape[1]
    k = torch.arange(K).repeat_interleave(n)
    v = baseline_values(baseline, traj.x[:-1].reshape(K * n, *traj.x.shape[2:]), k).view(K, n)
    return (f0[None] - v).pow(2).sum(0).mean()


def gradient_penalty(critic: nn.Module, fake: torch.Tensor, real: torch.Tensor, generator: torch.Generator,
                     ctx: Context = SINGLE) -> torch.Tensor:
    """R_GP of eq. 22 (WGAN-GP): E (||grad f(x_hat)|| - 1)^2 on random points between fake and real."""
    u = torch.rand(fake.shape[0] * ctx.world_size, *([1] * (fake.ndim - 1)), generator=generator)
    u = u[ctx.rows(len(u)) or slice(None)].to(fake)
    x_hat = (u * fake + (1 - u) * real).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic_values(critic, x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _check_finite(name: str, value: torch.Tensor, bound: float, values: torch.Tensor | None = None, ctx: Context = SINGLE) -> None:
    """Stop on a non-finite loss or a critic beyond the bound, on every process at once."""
    bad = maximum(0.0 if torch.isfinite(value) else 1.0, ctx)
    if bad:
        raise FewstepError(f"fine-tuning diverged: the {name} is not finite")
    peak = maximum(float(values.abs().max()) if values is not None and values.numel() else 0.0, ctx)
    if peak > bound:
        raise FewstepError(f"fine-tuning diverged: |critic| reached {peak:.3g} > finetune.critic_bound={bound:g}")


def update_critic(nets: Nets, traj: Trajectory, real: torch.Tensor, cfg: FinetuneConfig, generator: torch.Generator,
                  ctx: Context = SINGLE) -> dict:
    """One critic round: maximise L = g - lambda R_B (eq. 23, 'B') or g - eta R_GP (eq. 22, 'GP').

    With GP the baseline is fitted by eq. 21 alone (the critic's values held fixed).
    """
    fake = traj.x0
    f_fake = critic_values(nets.critic, fake)
    gap = f_fake.mean() - critic_values(nets.critic, real).mean()  # g of eq. 6, m fake vs m real
    uses_baseline = cfg.estimator == "pg_baseline" or cfg.critic_reg == "baseline"
    stats = {"gap": gap.item()}
    if uses_baseline:  # with GP the critic's values are held fixed in R_B: it only fits the baseline
        residual = baseline_residual(f_fake if cfg.critic_reg == "baseline" else f_fake.detach(), nets.baseline, traj)
        stats["r_b"] = residual.item()
    if cfg.critic_reg == "baseline":
        loss = -(gap - cfg.lam * residual)
    else:
        penalty = gradient_penalty(nets.critic, fake, real, generator, ctx)
        loss = -(gap - cfg.gp_weight * penalty) + (residual if uses_baseline else 0.0)
        stats["r_gp"] = penalty.item()
    _check_finite("critic loss", loss.detach(), cfg.critic_bound, f_fake.detach(), ctx)
    nets.opt_critic.zero_grad(set_to_none=True)
    nets.opt_baseline.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(nets.critic, ctx)
    nets.opt_critic.step()
    if uses_baseline:
        average_gradients(nets.baseline, ctx)
        nets.opt_baseline.step()
    return stats


def policy_gradient_loss(nets: Nets, table: StepTable, batch: tuple[torch.Tensor, ...], use_baseline: bool,
                         m: int | None = None, ctx: Context = SINGLE) -> torch.Tensor:
    """Surrogate whose gradient is eq. 20 (eq. 15 without the baseline) on buffer entries.

    ``m`` is the number of entries drawn over all processes (default: this batch's size); this
    process's share of the sum is scaled so that averaging gradients over processes gives the
    full-batch mean.
    """
    x_in, x_out, x0, k = batch
    with torch.no_grad():
        advantage = critic_values(nets.critic, x0)
        if use_baseline:
            advantage = advantage - baseline_values(nets.baseline, x_in, k)
    log_prob = step_log_prob(nets.generator, table, x_in, x_out, k)
    m = len(x_in) if m is None else m
    return table.K * ctx.world_size * (advantage * log_prob).sum() / m


def pathwise_loss(nets: Nets, table: StepTable, noise: torch.Tensor) -> torch.Tensor:
    """SFT (eq. 14): E f(h_theta(x_T)) with reparameterised noise, back-propagated through the chain."""
    return critic_values(nets.critic, rollout(nets.generator, table, noise).x0).mean()


def update_generator(nets: Nets, loss: torch.Tensor, cfg: FinetuneConfig, ctx: Context = SINGLE) -> float:
    """One generator step, clipping the gradient norm at gamma (Section 4.2) when configured."""
    _check_finite("generator loss", loss.detach(), float("inf"), ctx=ctx)
    nets.opt_generator.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(nets.generator, ctx)
    params = [p for p in nets.generator.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip is not None else float("inf"))
    nets.opt_generator.step()
    return float(norm)


def iteration(
    nets: Nets,
    table: StepTable,
    cfg: FinetuneConfig,
    draw_real: Callable[[int], torch.Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device,
    ctx: Context = SINGLE,
) -> dict:
    """One outer iteration of Algorithm 1 ("while theta not converged do ...").

    Under data parallelism (``ctx``) every process draws the random numbers of the whole batch and
    keeps its rows, so N processes take exactly the steps of one process with the same batch.
    """
    m = cfg.batch_size
    rows = ctx.rows(m) or slice(0, m)
    share = rows.stop - rows.start
    buffer = Buffer()
    # theta is fixed during the critic rounds, so their n_critic x m i.i.d. trajectories are rolled
    # out in one batched call (same distribution, n_critic times fewer model calls) and split.
    noise = draw_noise(table.K, cfg.n_critic * m, shape, generator=generator, device=device)
    if ctx.active:
        noise = noise[:, torch.cat([torch.arange(r * m + rows.start, r * m + rows.stop) for r in range(cfg.n_critic)])]
    with torch.no_grad():
        everything = rollout(nets.generator, table, noise)
    for r in range(cfg.n_critic):
        traj = everything.select(slice(r * share, (r + 1) * share))
        buffer.add(traj)
        critic_stats = update_critic(nets, traj, draw_real(m)[rows], cfg, generator, ctx)
    for _ in range(cfg.n_generator):
        if cfg.estimator == "pathwise":
            loss = pathwise_loss(nets, table, draw_noise(table.K, m, shape, generator=generator, device=device)[:, rows])
        else:
            batch = buffer.sample(m, generator, ctx)
            loss = policy_gradient_loss(nets, table, batch, cfg.estimator == "pg_baseline", m, ctx)
        grad_norm = update_generator(nets, loss, cfg, ctx)
    stats = {**critic_stats, "generator_loss": loss.item()}
    return {**{k: average(v, ctx) for k, v in stats.items()}, "grad_norm": grad_norm}
