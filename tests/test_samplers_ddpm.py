"""DDPM on a sub-sequence (fewstep.steps.ddpm_table) against diffusers' DDPMScheduler."""

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from _sampler_models import GaussianEps, diffusers_kwargs, noise_block, random_net
from fewstep.rollout import rollout
from fewstep.samplers import ddpm_table
from fewstep.schedules import make_schedule


@pytest.mark.parametrize("variance,diffusers_variance", [("beta", "fixed_large"), ("beta_tilde", "fixed_small")])
def test_ddpm_subsequence_matches_diffusers(monkeypatch, variance, diffusers_variance):
    schedule = make_schedule("linear", 1000)
    tau = [0, 7, 60, 200, 455, 700, 999]  # irregular, so respacing of the betas is exercised
    K, n = len(tau), 64
    model = random_net(seed=3)
    table = ddpm_table(schedule, tau, variance=variance, noise_at_last_step=False)
    noise = noise_block(K, n, (2,), 2).double()
    ours = rollout(model, table, noise).x0

    # clip_sample=False: no clipping of x0_hat. Custom time-steps make diffusers respace beta from
    # alpha_bar exactly like ddpm_table; it adds no noise at t = 0, like noise_at_last_step=False.
    ref = DDPMScheduler(**diffusers_kwargs(schedule), clip_sample=False, variance_type=diffusers_variance)
    ref.set_timesteps(timesteps=list(reversed(tau)))
    draws = iter(noise[1:])
    # diffusers draws its step noise inside step(); hand it ours, in order.
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda shape, **kw: next(draws))
    x = noise[0]
    with torch.no_grad():
        for t in ref.timesteps:
            eps = model(x, torch.full((n,), float(t), dtype=torch.float64))
            x = ref.step(eps, t, x).prev_sample
            if t == 0:
                next(draws, None)
    assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4), (ours - x).abs().max()


def test_full_ddpm_gaussian_moments():
    """Ancestral DDPM on all T steps with the exact eps-model reproduces N(mu, s^2) (closed form)."""
    schedule = make_schedule("cosine", 100)  # alpha_bar(T-1) ~ 0: x_T ~ N(0, I) is the exact prior
    mu, s = torch.tensor([1.0, -0.5]), 0.4
    table = ddpm_table(schedule, variance="beta_tilde")
    noise = noise_block(table.K, 10_000, (2,), 0).double()
    x0 = rollout(GaussianEps(schedule, mu, s), table, noise).x0
    assert torch.allclose(x0.mean(0), mu.double(), atol=0.02)
    assert torch.allclose(x0.std(0), torch.full((2,), s, dtype=torch.float64), rtol=0.05)
