"""The SFT-PG updates against formulas written out here: each test fails on the bug it names.

Critic round (B): L = g - lambda sum_k mean_i (f(x_0^i) - V(x_k^i, k))^2 with m fake and m real
samples, g = mean f(fake) - mean f(real) (eq. 6, 21, 23). Gradient penalty: a linear critic has
gradient norm |w| everywhere, a quadratic one |A x| at the interpolated point (eq. 22). Generator:
exactly n_generator steps, the clipped gradient norm bounded by gamma. EMA: p <- d p + (1 - d) q.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fewstep.config import FinetuneConfig
from fewstep.models import EMA
from fewstep.rollout import Trajectory
from fewstep.samplers import ddpm_table
from fewstep.schedules import make_schedule
from fewstep.training.policy import Policy
from fewstep.training.sftpg import (
    BaselineRegulariser,
    GradientPenalty,
    Nets,
    critic_round,
    generator_step,
    gradient_penalty,
    iteration,
    make_method,
)

K, M = 4, 6


class Linear(nn.Module):
    """f(x) = w . x + c."""

    def __init__(self, w, c=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x):
        return (x @ self.w + self.c).view(-1, 1)


class Quadratic(nn.Module):
    """f(x) = x^T A x / 2, gradient (A + A^T) x / 2 (A x for a symmetric A)."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A, dtype=torch.float64))

    def forward(self, x):
        return 0.5 * ((x @ self.A) * x).sum(1, keepdim=True)


class TimeLinear(nn.Module):
    """V(x, k) = u . x + v k + c."""

    def __init__(self):
        super().__init__()
        self.u = nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
        self.v = nn.Parameter(torch.tensor(0.1, dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor(-0.05, dtype=torch.float64))

    def forward(self, x, k):
        return (x @ self.u + self.v * k + self.c).view(-1, 1)


def trajectory(seed=0) -> Trajectory:
    x = torch.randn(K + 1, M, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Trajectory(x=x, mean=x[1:], std=torch.ones(K, dtype=torch.float64), log_prob=torch.zeros(K, M))


def nets(critic=None, baseline=None, generator=None) -> Nets:
    critic, baseline = critic or Linear([0.7, -0.4], 0.2), baseline or TimeLinear()
    generator = generator or nn.Linear(1, 1)
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=1.0)  # noqa: E731
    return Nets(generator, critic, baseline, sgd(generator), sgd(critic), sgd(baseline))


def grads(*modules) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for m in modules for p in m.parameters()])


def test_baseline_regularised_critic_gradient_matches_eq23():
    """Fails if R_B is averaged over steps, lambda is dropped, R_B does not reach the critic, or the
    fake/real means use other rows."""
    lam, traj = 0.3, trajectory()
    real = torch.randn(M, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = nets()
    BaselineRegulariser(lam).backward(ours, traj, real, torch.Generator(), ctx=__import__("fewstep").distributed.SINGLE)
    ref = nets()
    f0 = ref.critic(traj.x0).view(-1)
    gap = f0.mean() - ref.critic(real).view(-1).mean()
    r_b = sum(
        ((f0 - ref.baseline(traj.x[k], torch.full((M,), float(k), dtype=torch.float64)).view(-1)) ** 2).mean()
        for k in range(K)
    )
    (-(gap - lam * r_b)).backward()
    torch.testing.assert_close(grads(ours.critic, ours.baseline), grads(ref.critic, ref.baseline))
    assert grads(ref.baseline).abs().sum() > 0 and lam * r_b.item() > 0.01  # the regulariser matters here


def test_gradient_penalty_of_a_linear_critic_is_a_closed_form():
    """|grad f| = |w| everywhere: R_GP = (|w| - 1)^2. Fails without the -1 or with the wrong norm."""
    critic = Linear([0.6, 0.8 * 2])
    fake, real = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    penalty = gradient_penalty(critic, fake, real, torch.rand(50, dtype=torch.float64))
    norm = critic.w.detach().norm()
    assert penalty.item() == pytest.approx((norm.item() - 1) ** 2, rel=1e-12)


def test_gradient_penalty_is_taken_at_the_interpolated_points():
    """A quadratic critic's gradient A x depends on x: fails if the penalty uses fake or real points."""
    critic = Quadratic([[2.0, 0.3], [0.3, 0.5]])
    g = torch.Generator().manual_seed(3)
    fake, real = (
        torch.randn(40, 2, generator=g, dtype=torch.float64),
        torch.randn(40, 2, generator=g, dtype=torch.float64),
    )
    u = torch.rand(40, generator=g, dtype=torch.float64)
    x_hat = u[:, None] * fake + (1 - u[:, None]) * real
    expected = ((x_hat @ critic.A.detach()).norm(dim=1) - 1).pow(2).mean()
    assert gradient_penalty(critic, fake, real, u).item() == pytest.approx(expected.item(), rel=1e-10)
    assert abs(gradient_penalty(critic, fake, fake, u).item() - expected.item()) > 1e-3  # the test can tell


def test_gradient_penalty_critic_update_matches_eq22():
    """Fails if the penalty's sign is flipped, it is dropped, or eta is ignored; the baseline fits eq. 21 alone."""
    eta, traj = 0.5, trajectory(2)
    real = torch.randn(M, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = nets(critic=Quadratic([[1.5, 0.2], [0.2, 0.7]]))
    random = torch.Generator().manual_seed(5)
    u = torch.rand(M, generator=torch.Generator().manual_seed(5))
    GradientPenalty(eta, fit_baseline=True).backward(ours, traj, real, random, __import__("fewstep").distributed.SINGLE)
    ref = nets(critic=Quadratic([[1.5, 0.2], [0.2, 0.7]]))
    gap = ref.critic(traj.x0).mean() - ref.critic(real).mean()
    x_hat = u.double()[:, None] * traj.x0 + (1 - u.double()[:, None]) * real
    gradient = 0.5 * x_hat @ (ref.critic.A + ref.critic.A.T)  # grad of x^T A x / 2, as a function of A
    penalty = (gradient.norm(dim=1) - 1).pow(2).mean()
    (-(gap - eta * penalty)).backward()
    f0 = ref.critic(traj.x0).view(-1).detach()  # eq. 21 with the critic's values held fixed
    r_b = sum(
        ((f0 - ref.baseline(traj.x[k], torch.full((M,), float(k), dtype=torch.float64)).view(-1)) ** 2).mean()
        for k in range(K)
    )
    r_b.backward()
    torch.testing.assert_close(grads(ours.critic, ours.baseline), grads(ref.critic, ref.baseline))


def test_critic_round_steps_both_optimisers_once_on_m_real_rows():
    seen = []

    class Recording(Linear):
        def forward(self, x):
            seen.append(len(x))
            return super().forward(x)

    ours = nets(critic=Recording([0.2, 0.1]))
    before = copy.deepcopy(ours.baseline.state_dict())
    stats = critic_round(
        ours,
        make_method(FinetuneConfig()),
        trajectory(),
        torch.zeros(M, 2, dtype=torch.float64),
        1e4,
        torch.Generator(),
        __import__("fewstep").distributed.SINGLE,
    )
    assert set(seen) == {M} and stats["r_b"] > 0
    assert any(not torch.equal(before[k], v) for k, v in ours.baseline.state_dict().items())


def test_generator_step_clips_the_gradient_norm_at_gamma():
    """With SGD at lr 1 the update is minus the clipped gradient: its norm is gamma when the gradient is larger."""
    net = nn.Linear(3, 1).double()
    ours = nets(generator=net)
    start = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    x = torch.randn(8, 3, dtype=torch.float64) * 10
    norm = generator_step(ours, net(x).pow(2).sum(), clip=0.05, ctx=__import__("fewstep").distributed.SINGLE)
    moved = torch.cat([p.detach().flatten() for p in net.parameters()]) - start
    assert norm > 1.0 and moved.norm().item() == pytest.approx(0.05, rel=1e-6)


def test_ema_is_a_convex_combination_with_weight_decay():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # 0.9 * 1 + 0.1 * 3
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 1.2))
    ema.update(model)  # 0.9 * 1.2 + 0.1 * 3
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 1.38))


class TinyEps(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, t):
        return self.lin(x) * 0.1


def _policy_nets(train="network", learn_variance="none"):
    torch.manual_seed(0)
    table = ddpm_table(make_schedule("sigmoid", K), variance="beta", noise_at_last_step=True)
    policy = Policy(TinyEps(), table, train, learn_variance)
    params = [p for p in policy.parameters() if p.requires_grad]
    critic, baseline = Linear([0.5, -0.5]).float(), TimeLinear().float()
    steps = []
    opt = torch.optim.SGD(params, lr=1e-3)
    original = opt.step
    opt.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    return (
        Nets(
            policy,
            critic,
            baseline,
            opt,
            torch.optim.SGD(critic.parameters(), lr=1e-3),
            torch.optim.SGD(baseline.parameters(), lr=1e-3),
        ),
        steps,
        table,
    )


@pytest.mark.parametrize("n_generator", [1, 3])
def test_iteration_takes_exactly_n_generator_steps(n_generator):
    ours, steps, _ = _policy_nets()
    cfg = FinetuneConfig(batch_size=M, n_critic=2, n_generator=n_generator)
    iteration(ours, make_method(cfg), cfg, lambda m: torch.randn(m, 2), (2,), torch.Generator().manual_seed(0), "cpu")
    assert len(steps) == n_generator


def test_learned_variance_and_table_training():
    """learn_variance trains log s only (of the last step, or all); train=table trains a, b, s and leaves the
    network untouched."""
    cfg = FinetuneConfig(batch_size=M, n_critic=1)
    ours, _, table = _policy_nets(learn_variance="last")
    iteration(ours, make_method(cfg), cfg, lambda m: torch.randn(m, 2), (2,), torch.Generator().manual_seed(0), "cpu")
    tuned = ours.generator.frozen()
    assert tuned.s[-1] != table.s[-1] and torch.equal(tuned.s[:-1], table.s[:-1])
    ours, _, table = _policy_nets(learn_variance="all")
    iteration(ours, make_method(cfg), cfg, lambda m: torch.randn(m, 2), (2,), torch.Generator().manual_seed(0), "cpu")
    tuned = ours.generator.frozen()
    assert (tuned.s != table.s).all() and torch.equal(tuned.a, table.a)

    ours, _, table = _policy_nets(train="table")
    network = copy.deepcopy(ours.generator.network.state_dict())
    iteration(ours, make_method(cfg), cfg, lambda m: torch.randn(m, 2), (2,), torch.Generator().manual_seed(0), "cpu")
    tuned = ours.generator.frozen()
    assert not torch.equal(tuned.a, table.a) and not torch.equal(tuned.b, table.b) and not torch.equal(tuned.s, table.s)
    assert all(torch.equal(v, ours.generator.network.state_dict()[k]) for k, v in network.items())
    assert not any(p.requires_grad for p in ours.generator.network.parameters())


def test_log_prob_gradient_in_the_std_is_the_closed_form():
    """d/ds log N(y; mu, s^2 I) = (|y - mu|^2 / s^2 - D) / s, through the policy's table."""
    from fewstep.rollout import step_log_prob

    table = ddpm_table(make_schedule("sigmoid", K), variance="beta", noise_at_last_step=True).__class__
    policy = Policy(
        TinyEps(),
        ddpm_table(make_schedule("sigmoid", K), variance="beta", noise_at_last_step=True),
        learn_variance="all",
    )
    assert table  # the policy's table is a StepTable built from its parameters
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    k = 2
    step_log_prob(policy, policy.table, x, y, k).sum().backward()
    with torch.no_grad():
        s = policy.log_s.exp()[k].float()
        mean = policy.table.a[k].float() * x + policy.table.b[k].float() * policy(
            x, torch.full((5,), float(policy.base.t[k]))
        )
        expected = (((y - mean) ** 2).sum(1) / s**2 - 2).sum() / s * s  # chain rule through log s: times s
    assert policy.log_s.grad[k].item() == pytest.approx(expected.item(), rel=1e-4)
    assert policy.log_s.grad[[0, 1, 3]].abs().sum() == 0
