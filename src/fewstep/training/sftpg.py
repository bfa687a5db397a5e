"""Shortcut fine-tuning with policy gradient: Algorithm 1 of Fan & Lee (2023), Section 4.

The generator theta is the pretrained epsilon-model; the step means are trained, the variances
stay those of the sampler's ``StepTable``. A critic f_alpha scores final samples and a
time-conditioned baseline V_omega(x_{t+1}, t) reduces the variance of the policy gradient.

Conventions (stated once, used everywhere):

* g(p, f, q) = E_p f(x_0) - E_q f(x_0) (eq. 6): the critic maximises it, the generator minimises
  it, so the critic scores generated samples *high*.
* Log-densities are summed over dimensions (``fewstep.rollout.step_log_prob``).
* R_B (eq. 21) is summed over the K steps and averaged over trajectories. The reference
  implementation averaged over steps on toy data, which divides lambda by K.
* The generator loss is the surrogate whose gradient is eq. 20 (or eq. 15): over m (trajectory,
  step) pairs drawn uniformly from the buffer, K * mean[(f(x_0) - V(x_{t+1}, t)) log p(x_t | x_{t+1})]
  is an unbiased estimate of the sum over steps in eq. 20.
* Every critic round compares m generated with m real samples, and the generator takes exactly
  ``n_generator`` steps per iteration.

The estimator (eq. 20, eq. 15 or the pathwise eq. 14) and the critic regulariser (R_B or R_GP) are
chosen once, as small strategy objects (:func:`make_method`). Data parallelism enters only through
``fewstep.distributed`` helpers: every process draws the random numbers of the whole batch and
keeps its rows, so N processes take the steps of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..config import FinetuneConfig
from ..distributed import SINGLE, Context, average, average_gradients, maximum
from ..errors import Diverged
from ..rollout import GeneratorNoise, KeptNoise, Trajectory, rollout, step_log_prob, step_mean
from ..steps import StepTable
from .trust_region import TrustRegion

CHUNK_ROWS = 512
"""Rows of (step, trajectory) pairs per chunk of R_B (at least one step): its memory does not grow with K."""


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


class Draw(NamedTuple):
    """m buffer entries: step k's input x_{t+1}, output x_t, the chain's x_0; with a reparameterised tail of
    L steps also each chain's state entering the tail and the noise [L, m, ...] its tail steps were drawn with."""

    x_in: torch.Tensor
    x_out: torch.Tensor
    x0: torch.Tensor
    k: torch.Tensor
    z: torch.Tensor | None = None
    x_tail: torch.Tensor | None = None


class Buffer:
    """The trajectory buffer B of Algorithm 1: every step (x_{t+1}, x_t, x_0, t) of the iteration's rollouts.

    The rollouts of all critic rounds are kept as one trajectory tensor [K + 1, R * m_local, ...]
    (no copies). Entry ``r K m + k m + i`` is step k of chain i of critic round r, counted over
    all processes; ``sample`` draws entries over the whole buffer and each process keeps the draws
    on its own chains, so N processes draw exactly the entries one process would. ``tail_noise``
    [L, R * m_local, ...]: the noise of each chain's final L steps (for their pathwise gradient).
    """

    def __init__(self, traj: Trajectory, rounds: int, batch_size: int, tail_noise: torch.Tensor | None = None):
        self.traj, self.rounds, self.batch_size, self.tail_noise = traj, rounds, batch_size, tail_noise

    def __len__(self) -> int:
        return self.rounds * self.traj.K * self.batch_size

    def sample(self, m: int, random: torch.Generator, ctx: Context = SINGLE) -> Draw:
        """m entries drawn uniformly with replacement, of which this process keeps its own chains'."""
        K, width = self.traj.K, self.batch_size
        idx = torch.randint(0, len(self), (m,), generator=random)
        r, k, i = idx // (K * width), (idx % (K * width)) // width, idx % width
        mine, local = ctx.own(i, width)
        r, k, column = r[mine], k[mine], r[mine] * ctx.share(width) + local[mine]
        x = self.traj.x
        dev = column.to(x.device)
        draw = Draw(x[k.to(x.device), dev], x[(k + 1).to(x.device), dev], x[-1, dev], k)
        if self.tail_noise is None:
            return draw
        return draw._replace(z=self.tail_noise[:, dev], x_tail=x[K - len(self.tail_noise), dev])


def baseline_residual(f0: torch.Tensor, baseline: nn.Module, traj: Trajectory, steps: range) -> torch.Tensor:
    """The terms of R_B (eq. 21) for ``steps``: sum_k mean_i (f(x_0^i) - V(x_k^i, k))^2, given f0 = f(x_0)."""
    ks = torch.tensor(list(steps)).repeat_interleave(traj.x.shape[1])
    x = traj.x[steps.start : steps.stop].reshape(-1, *traj.x.shape[2:])
    v = baseline_values(baseline, x, ks).view(len(steps), -1)
    return (f0[None] - v).pow(2).sum(0).mean()


def fit_baseline(f0: torch.Tensor, baseline: nn.Module, traj: Trajectory, weight: float = 1.0) -> float:
    """Back-propagate ``weight`` R_B (eq. 21) in chunks of steps (memory flat in K) into the baseline, and into
    ``f0`` when it requires grad; returns R_B."""
    residual = 0.0
    for steps in step_chunks(traj.K, traj.x.shape[1]):
        part = baseline_residual(f0, baseline, traj, steps)
        (weight * part).backward()
        residual += part.item()
    return residual


def step_chunks(K: int, batch: int) -> list[range]:
    size = max(1, CHUNK_ROWS // max(batch, 1))
    return [range(s, min(K, s + size)) for s in range(0, K, size)]


def gradient_penalty(critic: nn.Module, fake: torch.Tensor, real: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """R_GP of eq. 22 (WGAN-GP): E (||grad f(x_hat)|| - 1)^2 at x_hat = u fake + (1 - u) real."""
    u = u.to(fake).view(-1, *([1] * (fake.ndim - 1)))
    x_hat = (u * fake + (1 - u) * real).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic_values(critic, x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class BaselineRegulariser:
    """SFT-PG (B): the critic and the baseline maximise L = g - lambda R_B together (eq. 23)."""

    name = "B"

    def __init__(self, lam: float):
        self.lam = lam

    def backward(self, nets: Nets, traj: Trajectory, real: torch.Tensor, random: torch.Generator, ctx: Context) -> dict:
        """Gradients of -(g - lambda R_B) for the critic and of lambda R_B for the baseline.

        R_B runs in chunks of steps (memory flat in K). The critic enters R_B only through f(x_0):
        the chunks back-propagate into a detached copy ``f0`` of it, and its accumulated gradient
        d(lambda R_B)/df(x_0) is pushed through the critic once, with g's, so the critic is
        evaluated on the fake batch once per round whatever K is.
        """
        f_fake = critic_values(nets.critic, traj.x0)
        gap = f_fake.mean() - critic_values(nets.critic, real).mean()  # g of eq. 6, m fake vs m real
        f0 = f_fake.detach().requires_grad_(True)
        residual = fit_baseline(f0, nets.baseline, traj, self.lam)  # d(lambda R_B)/df0 lands in f0.grad
        (-gap + (f_fake * f0.grad).sum()).backward()
        return {"gap": gap.item(), "r_b": residual, "critic_peak": float(f_fake.detach().abs().max())}


class GradientPenalty:
    """SFT-PG (GP) and SFT (GP): the critic maximises g - eta R_GP (eq. 22); a baseline, when the
    estimator uses one, is fitted by eq. 21 alone with the critic's values held fixed."""

    name = "GP"

    def __init__(self, eta: float, fit_baseline: bool):
        self.eta, self.fit_baseline = eta, fit_baseline

    def backward(self, nets: Nets, traj: Trajectory, real: torch.Tensor, random: torch.Generator, ctx: Context) -> dict:
        fake = traj.x0
        f_fake = critic_values(nets.critic, fake)
        gap = f_fake.mean() - critic_values(nets.critic, real).mean()
        u = ctx.take(torch.rand(len(fake) * ctx.world_size, generator=random))
        penalty = gradient_penalty(nets.critic, fake, real, u)
        (-(gap - self.eta * penalty)).backward()
        stats = {"gap": gap.item(), "r_gp": penalty.item(), "critic_peak": float(f_fake.detach().abs().max())}
        if self.fit_baseline:
            stats["r_b"] = fit_baseline(f_fake.detach(), nets.baseline, traj)
        return stats


def policy_gradient_sum(
    nets: Nets, table: StepTable, batch: tuple[torch.Tensor, ...], use_baseline: bool
) -> torch.Tensor:
    """K * sum over buffer entries of (f(x_0) - V(x_{t+1}, t)) log p_theta(x_t | x_{t+1}): divided by
    the number of entries, its gradient is an unbiased estimate of eq. 20 (of eq. 15 without V)."""
    x_in, x_out, x0, k = batch[:4]
    with torch.no_grad():
        advantage = critic_values(nets.critic, x0)
        if use_baseline:
            advantage = advantage - baseline_values(nets.baseline, x_in, k)
    log_prob = step_log_prob(nets.generator, table, x_in, x_out, k)
    return table.K * (advantage * log_prob).sum()


def tail_pathwise_sum(nets: Nets, table: StepTable, x_tail: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """K / L * sum over entries of f(x_0), x_0 = the final L steps re-run from x_tail with their noise z [L, ...].

    Each of the last L steps x_k = mu_theta(x_{k+1}) + sigma_k z_k is reparameterised with the noise it
    was drawn with, and x_0 is back-propagated through all L of them, the critic held fixed. An entry
    falls in the tail with probability L / K, so the K / L weight makes the gradient (in theta, and
    in the learned stds of those steps) an unbiased estimate of the tail's share of grad E f(x_0)
    (eq. 14 restricted to L steps), replacing the tail's terms of eq. 20. Eq. 20's term of step k is
    (f - V) z / sigma_k grad mu: at the smallest noise levels (sigma_1 = 0.006 at T = 10 on the
    sigmoid schedule) it multiplies every error of the learned baseline V by 1 / sigma_k; these have
    no such factor. L = 1 reparameterises the final step only; L = K is the pathwise SFT of eq. 14.
    """
    L = len(z)
    x = x_tail
    for j, k in enumerate(range(table.K - L, table.K)):
        mean, _ = step_mean(nets.generator, table, x, k)
        x = mean + table.s[k].to(mean) * z[j]
    frozen = [p.requires_grad for p in nets.critic.parameters()]
    nets.critic.requires_grad_(False)
    try:
        return table.K / L * critic_values(nets.critic, x).sum()
    finally:
        for p, flag in zip(nets.critic.parameters(), frozen):
            p.requires_grad_(flag)


def pathwise_objective(nets: Nets, table: StepTable, noise) -> torch.Tensor:
    """SFT (eq. 14): E f(h_theta(x_T)) with reparameterised noise, differentiable through the chain."""
    return critic_values(nets.critic, rollout(nets.generator, table, noise).x0).mean()


class PolicyGradient:
    """The generator surrogate of eq. 20 (``use_baseline``) or eq. 15, on m buffer entries; with
    ``pathwise_steps`` L > 0 the entries of the final L steps use :func:`tail_pathwise_sum` instead."""

    def __init__(self, use_baseline: bool, pathwise_steps: int = 0):
        self.use_baseline, self.pathwise_steps = use_baseline, pathwise_steps
        self.name = "SFT-PG" if use_baseline else "PG without baseline"

    def loss(
        self, nets: Nets, table: StepTable, buffer: Buffer, m: int, shape, random: torch.Generator, device, ctx: Context
    ) -> torch.Tensor:
        draw = buffer.sample(m, random, ctx)
        if not self.pathwise_steps:
            return ctx.scale_sum(policy_gradient_sum(nets, table, draw[:4], self.use_baseline), m)
        tail = draw.k >= table.K - len(draw.z)
        head = ~tail
        total = policy_gradient_sum(
            nets, table, (draw.x_in[head], draw.x_out[head], draw.x0[head], draw.k[head]), self.use_baseline
        )
        if bool(tail.any()):
            total = total + tail_pathwise_sum(nets, table, draw.x_tail[tail], draw.z[:, tail])
        return ctx.scale_sum(total, m)


class Pathwise:
    """SFT (eq. 14) on m fresh chains, back-propagated through every step."""

    name = "SFT"
    use_baseline = False
    pathwise_steps = 0  # the whole chain is reparameterised afresh: no tail of the buffer's rollouts

    def loss(
        self, nets: Nets, table: StepTable, buffer: Buffer, m: int, shape, random: torch.Generator, device, ctx: Context
    ) -> torch.Tensor:
        return pathwise_objective(nets, table, GeneratorNoise(random, m, shape, device, ctx.rows(m)))


@dataclass
class Method:
    """A configured variant of Algorithm 1: the generator's estimator and the critic's regulariser."""

    estimator: PolicyGradient | Pathwise
    regulariser: BaselineRegulariser | GradientPenalty

    @property
    def name(self) -> str:
        """The paper's name: SFT-PG (B), SFT-PG (GP), SFT (GP), ..."""
        return f"{self.estimator.name} ({self.regulariser.name})"

    @property
    def uses_baseline(self) -> bool:
        return self.estimator.use_baseline or isinstance(self.regulariser, BaselineRegulariser)


def pathwise_tail(cfg: FinetuneConfig) -> int:
    """How many final steps the policy gradient reparameterises (``last_step=pathwise``), else 0."""
    return cfg.pathwise_steps if cfg.last_step == "pathwise" else 0


def make_method(cfg: FinetuneConfig) -> Method:
    """The strategies ``finetune.estimator`` and ``finetune.critic_reg`` name, chosen once."""
    if cfg.estimator == "pathwise":
        estimator = Pathwise()
    else:
        estimator = PolicyGradient(cfg.estimator == "pg_baseline", pathwise_steps=pathwise_tail(cfg))
    if cfg.critic_reg == "baseline":
        regulariser = BaselineRegulariser(cfg.lam)
    else:
        regulariser = GradientPenalty(cfg.gp_weight, fit_baseline=estimator.use_baseline)
    return Method(estimator, regulariser)


def _check(name: str, value: float, bound: float, ctx: Context) -> None:
    """Stop on a non-finite value or one beyond ``bound``, on every process at once."""
    worst = maximum(abs(value) if value == value else float("inf"), ctx)
    if not worst < float("inf"):
        raise Diverged(f"the {name} is not finite")
    if worst > bound:
        raise Diverged(f"|{name}| reached {worst:.3g} > finetune.critic_bound={bound:g}")


def critic_round(
    nets: Nets,
    method: Method,
    traj: Trajectory,
    real: torch.Tensor,
    bound: float,
    random: torch.Generator,
    ctx: Context,
) -> dict:
    """One critic (and baseline) update on one round's m rollouts and m real samples."""
    nets.opt_critic.zero_grad(set_to_none=True)
    nets.opt_baseline.zero_grad(set_to_none=True)
    stats = method.regulariser.backward(nets, traj, real, random, ctx)
    _check("critic", stats.pop("critic_peak"), bound, ctx)
    _check("critic objective", stats["gap"], float("inf"), ctx)
    average_gradients(nets.critic, ctx)
    nets.opt_critic.step()
    if method.uses_baseline:
        average_gradients(nets.baseline, ctx)
        nets.opt_baseline.step()
    return stats


def generator_step(nets: Nets, loss: torch.Tensor, clip: float | None, ctx: Context) -> float:
    """One generator step, its gradient norm clipped at gamma (Section 4.2) when configured."""
    _check("generator loss", loss.item(), float("inf"), ctx)
    nets.opt_generator.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(nets.generator, ctx)
    params = [p for p in nets.generator.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
    nets.opt_generator.step()
    return float(norm)


def iteration(
    nets: Nets,
    method: Method,
    cfg: FinetuneConfig,
    draw_real: Callable[[int], torch.Tensor],
    shape: tuple[int, ...],
    random: torch.Generator,
    device,
    ctx: Context = SINGLE,
) -> dict:
    """One outer iteration of Algorithm 1 ("while theta not converged do ...").

    theta is fixed during the critic rounds, so their n_critic x m i.i.d. trajectories are rolled
    out in one batched call without gradient (same distribution, n_critic times fewer model calls)
    and split by round; the generator then takes ``n_generator`` steps on buffer draws. The
    generator is a :class:`fewstep.training.policy.Policy`: its ``table`` is the sampler, read
    afresh for every rollout and update (it changes when the table's coefficients are trained).
    With ``max_kl`` each generator step is held to that many nats on eq. 20's steps
    (:mod:`fewstep.training.trust_region`).
    """
    m, rounds = cfg.batch_size, cfg.n_critic
    noise = GeneratorNoise(random, rounds * m, shape, device, ctx.round_rows(rounds, m))
    table = nets.generator.table
    tail = range(table.K - min(method.estimator.pathwise_steps, table.K), table.K)
    kept = KeptNoise(noise, tail.start)  # the tail's noise, for reparameterising those steps
    with torch.no_grad():
        everything = rollout(nets.generator, table, kept, states_only=True)
    noise_of_tail = kept.of_steps(tail, everything.x0) if tail else None
    share = ctx.share(m)
    for r in range(rounds):
        traj = everything.select(slice(r * share, (r + 1) * share))
        stats = critic_round(nets, method, traj, ctx.take(draw_real(m)), cfg.critic_bound, random, ctx)
    buffer = Buffer(everything, rounds, m, noise_of_tail)
    region = TrustRegion(cfg.max_kl, ctx) if cfg.max_kl > 0 and tail.start > 0 else None  # eq. 20's steps only
    if region:
        probe = region.probe(everything.x, tail.start)
        before = region.snapshot(nets.generator, *probe)
    for _ in range(cfg.n_generator):
        loss = method.estimator.loss(nets, nets.generator.table, buffer, m, shape, random, device, ctx)
        grad_norm = generator_step(nets, loss, cfg.clip, ctx)
        if region:
            before, limits = region.limit(nets.generator, before, *probe)
            stats.update(limits)
    stats = {**stats, "generator_loss": loss.item()}
    return {**{k: average(v, ctx) for k, v in stats.items()}, "grad_norm": grad_norm}
