"""(c) Rollout and re-scoring agree; gradients flow; per-sample seeds; the Gaussian log-density."""

import math

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.nets import TimeMLP
from _sampler_models import noise_block, random_net
from fewstep.noise import gaussian_noise
from fewstep.rollout import (
    GeneratorNoise,
    KeptNoise,
    SeededNoise,
    gaussian_log_prob,
    rollout,
    sample,
    step_log_prob,
    step_mean,
)
from fewstep.schedules import make_schedule
from fewstep.samplers import ddpm_table
from fewstep.steps import steps_from


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TimeMLP(2, hidden=[32, 32])


def stochastic_table(K=10):
    return ddpm_table(make_schedule("sigmoid", K), variance="beta", noise_at_last_step=True)


def test_rescored_log_prob_equals_rollout(model):
    table = stochastic_table()
    noise = noise_block(table.K, 12, (2,), 1)
    with torch.no_grad():
        traj = rollout(model, table, noise)
    assert traj.x.shape == (11, 12, 2) and traj.mean.shape == (10, 12, 2) and traj.log_prob.shape == (10, 12)
    torch.testing.assert_close(traj.x0, traj.x[-1])
    # every step is x_next = mean + std * z with the recorded noise
    torch.testing.assert_close(traj.x[1:], traj.mean + traj.std.view(-1, 1, 1).float() * noise[1:])

    # a buffer of (x_k, x_{k+1}, k) with mixed steps, shuffled
    K, n = traj.K, traj.x.shape[1]
    ks = torch.arange(K).repeat_interleave(n)
    rows = torch.arange(n).repeat(K)
    perm = torch.randperm(K * n, generator=torch.Generator().manual_seed(2))
    ks, rows = ks[perm], rows[perm]
    x, x_next = traj.x[ks, rows], traj.x[ks + 1, rows]
    rescored = step_log_prob(model, table, x, x_next, ks)
    torch.testing.assert_close(rescored, traj.log_prob[ks, rows], rtol=1e-5, atol=1e-4)
    # the log-density is a real, non-constant function of the step (not zeros)
    assert rescored.std() > 0.1


def test_log_prob_matches_independent_formula(model):
    """log N(x_next; a x + b eps(x, t), s^2 I) written out by hand for one step."""
    table = stochastic_table()
    g = torch.Generator().manual_seed(3)
    x, x_next = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    k = 4
    with torch.no_grad():
        eps = model(x, torch.full((5,), float(table.t[k])))
        mean = float(table.a[k]) * x + float(table.b[k]) * eps
        s = float(table.s[k])
        expected = (-((x_next - mean) ** 2) / (2 * s * s) - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)
        torch.testing.assert_close(step_log_prob(model, table, x, x_next, k), expected, rtol=1e-5, atol=1e-4)


def test_gradients_flow(model):
    table = stochastic_table()
    traj = rollout(model, table, noise_block(table.K, 8, (2,), 4))
    x, x_next = traj.x[:-1].detach().flatten(0, 1), traj.x[1:].detach().flatten(0, 1)
    ks = torch.arange(table.K).repeat_interleave(8)
    model.zero_grad()
    step_log_prob(model, table, x, x_next, ks).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    # rollout is not wrapped in no_grad either: the sample is differentiable in the parameters
    model.zero_grad()
    rollout(model, table, noise_block(table.K, 4, (2,), 5)).x0.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()


def test_deterministic_step_has_no_log_prob(model):
    table = ddpm_table(make_schedule("sigmoid", 10), variance="beta", noise_at_last_step=False)
    x = torch.randn(3, 2)
    with pytest.raises(FewstepError, match="deterministic"):
        step_log_prob(model, table, x, x, table.K - 1)
    with pytest.raises(FewstepError, match=r"step\(s\) \[9\]"):
        step_log_prob(model, table, x, x, torch.tensor([0, 9, 3]))
    step_log_prob(model, table, x, x, torch.tensor([0, 8, 3]))  # stochastic steps of the same table score fine
    # rollout records log-density 0 at the deterministic step and lands exactly on the mean
    traj = rollout(model, table, noise_block(table.K, 3, (2,), 6))
    assert (traj.log_prob[-1] == 0).all() and torch.equal(traj.x0, traj.mean[-1])


def test_per_sample_seeds_independent_of_batch_size(model):
    table = stochastic_table()
    ref = sample(model, table, 64, (2,), seed=7, batch_size=64)
    assert ref.shape == (64, 2) and torch.isfinite(ref).all()
    for bs in (1, 7):
        torch.testing.assert_close(sample(model, table, 64, (2,), seed=7, batch_size=bs), ref, rtol=0, atol=1e-6)
    # the first samples of a larger draw are the same samples
    torch.testing.assert_close(sample(model, table, 20, (2,), seed=7, batch_size=3), ref[:20], rtol=0, atol=1e-6)
    assert not torch.allclose(sample(model, table, 64, (2,), seed=8), ref)
    # the noise itself is bit-identical whichever batch a sample lands in, at every step
    for step in (0, 3, table.K):
        full = SeededNoise(7, torch.arange(0, 9), (2,))(step)
        torch.testing.assert_close(SeededNoise(7, torch.tensor([4]), (2,))(step)[0], full[4], rtol=0, atol=0)
    assert not torch.equal(gaussian_noise(7, torch.arange(3), 1, (2,)), gaussian_noise(7, torch.arange(3), 2, (2,)))


def test_sampling_memory_does_not_grow_with_steps():
    """The chain keeps one batch of noise at a time: no [K + 1, n, *shape] block is ever built."""
    import tracemalloc

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    peaks = {}
    for K in (10, 400):
        table = ddpm_table(make_schedule("linear", K), variance="beta", noise_at_last_step=True)
        tracemalloc.start()
        sample(Zero(), table, 256, (3, 8, 8), seed=0, batch_size=256)
        peaks[K] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    block_400 = 401 * 256 * 3 * 8 * 8 * 4  # what a pre-drawn noise block would take
    assert peaks[400] < block_400 / 10, peaks


def test_gaussian_log_prob_equals_torch_normal():
    g = torch.Generator().manual_seed(9)
    x, mean = (
        torch.randn(6, 3, 4, generator=g, dtype=torch.float64),
        torch.randn(6, 3, 4, generator=g, dtype=torch.float64),
    )
    std = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    expected = torch.distributions.Normal(mean, std.view(-1, 1, 1)).log_prob(x).sum(dim=(1, 2))
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected, rtol=1e-12, atol=1e-12)


def test_kept_noise_reruns_the_tail_to_the_rollouts_own_output():
    """SFT-PG's reparameterised tail re-runs the last steps with the noise KeptNoise kept: same x_0, same formula."""
    table = ddpm_table(make_schedule("linear", 10), variance="beta", noise_at_last_step=True)
    model = random_net(seed=3).float()
    kept = KeptNoise(GeneratorNoise(torch.Generator().manual_seed(0), 16, (2,)), table.K - 3)
    with torch.no_grad():
        traj = rollout(model, table, kept, states_only=True)
        tail = range(table.K - 3, table.K)
        z = kept.of_steps(tail, traj.x0)
        x = traj.x[tail.start]
        for j, k in enumerate(tail):
            mean, _ = step_mean(model, table, x, k)
            x = mean + table.s[k].to(mean) * z[j]
    assert sorted(kept.kept) == list(tail)  # nothing before the tail is kept
    torch.testing.assert_close(x, traj.x0, rtol=0, atol=0)


@pytest.mark.parametrize("k", [0, 4, 9])
def test_steps_from_k_rerun_a_stored_state_to_the_chains_own_output(k):
    """The table's steps k..K-1, started at the stored x_k with the chain's own noise, end at the chain's x_0."""
    table = ddpm_table(make_schedule("linear", 10), variance="beta", noise_at_last_step=True)
    model = random_net(seed=5).float()
    block = noise_block(table.K, 32, (2,), seed=2).float()
    with torch.no_grad():
        full = rollout(model, table, block, states_only=True)
        tail = rollout(model, steps_from(table, k), torch.cat([full.x[k][None], block[k + 1 :]]), states_only=True)
    assert steps_from(table, k).K == table.K - k
    torch.testing.assert_close(tail.x, full.x[k:], rtol=0, atol=0)


def test_steps_from_refuses_multistep_tables_and_steps_outside():
    from fewstep.samplers import dpm_solver_pp_2m_table

    with pytest.raises(FewstepError, match="multistep"):
        steps_from(dpm_solver_pp_2m_table(make_schedule("linear", 1000), [0, 100, 500, 999]), 2)
    with pytest.raises(FewstepError, match="outside"):
        steps_from(stochastic_table(4), 4)
