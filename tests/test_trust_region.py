"""The generator's trust region (``finetune.max_kl``): the KL of Gaussian steps and the scaled-back update."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fewstep.config import FinetuneConfig
from fewstep.rollout import step_mean
from fewstep.samplers import ddpm_table
from fewstep.schedules import make_schedule
from fewstep.training.policy import Policy
from fewstep.training.sftpg import Nets, iteration, make_method
from fewstep.training.trust_region import TrustRegion, gaussian_kl, probe_rows

K = 4


class TinyEps(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, t):
        return self.lin(x) * (1 + t[:, None] / 100)


def policy(learn_variance="none"):
    torch.manual_seed(0)
    table = ddpm_table(make_schedule("sigmoid", K), variance="beta", noise_at_last_step=True)
    return Policy(TinyEps(), table, "network", learn_variance)


def sampler_kl(before: Policy, after: Policy, x, k) -> float:
    """The mean per-step KL from first principles, with torch.distributions."""
    with torch.no_grad():
        m0, _ = step_mean(before, before.table, x, k)
        m1, _ = step_mean(after, after.table, x, k)
    s0 = before.table.s.detach()[k].float()[:, None].expand_as(m0)
    s1 = after.table.s.detach()[k].float()[:, None].expand_as(m1)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(m0, s0), torch.distributions.Normal(m1, s1))
    return kl.sum(1).mean().item()


def test_gaussian_kl_is_the_closed_form():
    """Fails if the variance terms, the factor 2 or the sum over dimensions are off."""
    g = torch.Generator().manual_seed(0)
    m0, m1 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    s0, s1 = (
        torch.rand(5, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(5, generator=g, dtype=torch.float64) + 0.1,
    )
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m0, s0[:, None].expand_as(m0)),
        torch.distributions.Normal(m1, s1[:, None].expand_as(m1)),
    ).sum(1)
    torch.testing.assert_close(gaussian_kl(m0, s0, m1, s1), expected)


def test_probe_covers_every_step_and_many_chains():
    k, i = probe_rows(10, 32)
    assert torch.equal(torch.bincount(k, minlength=10).clamp(max=1), torch.ones(10, dtype=torch.long))
    assert len(set(i.tolist())) >= 30 and int(i.max()) < 32


@pytest.mark.parametrize("learn_variance", ["none", "all"])
def test_a_large_update_is_scaled_back_along_its_own_direction(learn_variance):
    """After ``limit`` the sampler's KL from its start is within max_kl (measured independently) and the weights
    moved along the update they were given; fails if the scale is not applied, or applied to the wrong base."""
    start = policy(learn_variance)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    k = torch.arange(64) % K
    region = TrustRegion(max_kl=1e-3)
    before = region.snapshot(start, x, k)
    moved = copy.deepcopy(start)
    with torch.no_grad():
        for p in moved.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    delta = [p - q for p, q in zip(moved.parameters(), start.parameters()) if p.requires_grad]
    assert sampler_kl(start, moved, x, k) > 100 * region.max_kl
    after, stats = region.limit(moved, before, x, k)
    kl = sampler_kl(start, moved, x, k)
    assert kl <= region.max_kl and kl > 0.2 * region.max_kl
    assert 0 < stats["update_scale"] < 0.1 and stats["policy_kl"] > 100 * region.max_kl
    for d, p, q in zip(delta, moved.parameters(), start.parameters()):
        torch.testing.assert_close(p - q, stats["update_scale"] * d)
    fresh = region.snapshot(moved, x, k)  # the next update starts from where this one ended
    torch.testing.assert_close(after.mean, fresh.mean)
    torch.testing.assert_close(after.std, fresh.std)
    assert all(torch.equal(a, b) for a, b in zip(after.params, fresh.params))


def test_a_small_update_is_left_alone():
    start = policy()
    x, k = torch.randn(16, 2), torch.arange(16) % K
    region = TrustRegion(max_kl=1.0)
    before = region.snapshot(start, x, k)
    moved = copy.deepcopy(start)
    with torch.no_grad():
        moved.network.lin.bias.add_(1e-3)
    expected = copy.deepcopy(moved.state_dict())
    _, stats = region.limit(moved, before, x, k)
    assert stats["update_scale"] == 1.0 and 0 < stats["policy_kl"] <= 1.0
    assert all(torch.equal(v, moved.state_dict()[name]) for name, v in expected.items())


def test_iteration_with_max_kl_bounds_what_the_generator_update_moves():
    """A whole iteration at a huge learning rate: the sampler moves by at most max_kl on the probe (and by
    more without the trust region)."""
    cfg = FinetuneConfig(batch_size=8, n_critic=2, n_generator=1, max_kl=1e-4)
    moved = {}
    for max_kl in (cfg.max_kl, 0.0):
        gen = policy()
        start = copy.deepcopy(gen)
        critic, baseline = nn.Linear(2, 1), BaselineNet()
        nets = Nets(
            gen,
            critic,
            baseline,
            torch.optim.SGD(gen.parameters(), lr=10.0),
            torch.optim.SGD(critic.parameters(), lr=1e-3),
            torch.optim.SGD(baseline.parameters(), lr=1e-3),
        )
        run = FinetuneConfig(batch_size=8, n_critic=2, max_kl=max_kl)
        stats = iteration(
            nets, make_method(run), run, lambda m: torch.randn(m, 2), (2,), torch.Generator().manual_seed(0), "cpu"
        )
        x = torch.randn(256, 2, generator=torch.Generator().manual_seed(3))
        k = torch.arange(256) % (K - run.pathwise_steps)  # the steps eq. 20 trains; the pathwise tail is not bounded
        moved[max_kl] = (sampler_kl(start, gen, x, k), stats)
    assert moved[0.0][0] > 10 * cfg.max_kl and "policy_kl" not in moved[0.0][1]
    assert moved[cfg.max_kl][1]["policy_kl"] > cfg.max_kl and moved[cfg.max_kl][1]["update_scale"] < 1
    assert moved[cfg.max_kl][0] < 3 * cfg.max_kl  # on fresh points; the probe itself is held within max_kl


class BaselineNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x, k):
        return self.lin(torch.cat([x, k[:, None]], 1))


def test_a_sampler_that_is_all_pathwise_tail_has_no_trust_region():
    """With every step reparameterised (K <= pathwise_steps) there is no score-function step to bound."""
    gen = policy()
    nets = Nets(
        gen,
        nn.Linear(2, 1),
        BaselineNet(),
        torch.optim.SGD(gen.parameters(), lr=1e-3),
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3),
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3),
    )
    run = FinetuneConfig(batch_size=8, n_critic=1, max_kl=1e-9, pathwise_steps=K)
    stats = iteration(
        nets, make_method(run), run, lambda m: torch.randn(m, 2), (2,), torch.Generator().manual_seed(0), "cpu"
    )
    assert "policy_kl" not in stats
