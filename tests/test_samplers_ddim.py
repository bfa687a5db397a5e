"""DDIM tables against diffusers' DDIMScheduler and against the closed-form Gaussian case."""

import pytest
import torch
from diffusers import DDIMScheduler

from _sampler_models import GaussianEps, diffusers_kwargs, noise_block, random_net
from fewstep.errors import FewstepError
from fewstep.rollout import rollout
from fewstep.samplers import ddim_table, spacing
from fewstep.schedules import make_schedule


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_diffusers(eta):
    schedule = make_schedule("linear", 1000)
    K, n = 8, 64
    model = random_net()
    # clip_sample=False and thresholding off: diffusers would otherwise clip x0_hat to [-1, 1].
    # set_alpha_to_one=True: the last step lands on clean data (alpha_bar = 1), as ddim_table does.
    # "leading" spacing with steps_offset=0 gives the sub-sequence 0, T/K, 2T/K, ...
    ref = DDIMScheduler(
        **diffusers_kwargs(schedule),
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
        steps_offset=0,
    )
    ref.set_timesteps(K)
    timesteps = ref.timesteps.flip(0).tolist()
    table = ddim_table(schedule, timesteps, eta=eta)
    noise = noise_block(K, n, (2,), 1).double()
    ours = rollout(model, table, noise).x0
    x = noise[0]
    with torch.no_grad():
        for k, t in enumerate(ref.timesteps):
            eps = model(x, torch.full((n,), float(t), dtype=torch.float64))
            x = ref.step(eps, t, x, eta=eta, variance_noise=noise[k + 1]).prev_sample
    assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4), (ours - x).abs().max()


def test_ddim_eta0_gaussian_exact_at_many_steps():
    """With the exact eps-model, DDIM (eta=0) maps N(0, I) at t=T-1 to the data law N(mu, s^2) almost exactly."""
    schedule = make_schedule("linear", 1000)
    mu, s = torch.tensor([0.5, -1.0]), 0.3
    table = ddim_table(schedule, spacing("uniform", schedule, 200))
    noise = noise_block(table.K, 10_000, (2,), 0).double()
    x0 = rollout(GaussianEps(schedule, mu, s), table, noise).x0
    assert torch.allclose(x0.mean(0), mu.double(), atol=0.015)
    assert torch.allclose(x0.std(0), torch.full((2,), s, dtype=torch.float64), rtol=0.03)


def test_ddim_eta0_single_step_gaussian_closed_form():
    """One deterministic step from level ab to data is x0_hat: for Gaussian data its law is known exactly."""
    schedule = make_schedule("linear", 1000)
    mu, s, t = 0.5, 0.3, 400
    table = ddim_table(schedule, [t])
    ab = float(schedule.alpha_bar[t])
    x = torch.linspace(-2, 2, 5, dtype=torch.float64).view(-1, 1)
    eps = GaussianEps(schedule, [mu], s)(x, torch.full((5,), float(t)))
    expected = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
    out = table.a[0] * x + table.b[0] * eps
    assert torch.allclose(out, expected, atol=1e-12)
    # posterior mean of x0 given x_t for Gaussian data: mu + sqrt(ab) s^2 (x - sqrt(ab) mu) / (ab s^2 + 1 - ab)
    posterior = mu + ab**0.5 * s**2 * (x - ab**0.5 * mu) / (ab * s**2 + 1 - ab)
    assert torch.allclose(out, posterior, atol=1e-12)


def test_ddim_eta1_is_ddpm_beta_tilde():
    from fewstep.samplers import ddpm_table

    schedule = make_schedule("linear", 1000)
    tau = [0, 100, 350, 999]
    ours, ref = ddim_table(schedule, tau, eta=1.0), ddpm_table(schedule, tau, variance="beta_tilde")
    for col in ("t", "a", "b", "s", "alpha_bar"):
        assert torch.allclose(getattr(ours, col), getattr(ref, col), atol=1e-10), col


def test_ddim_rejects_bad_steps():
    schedule = make_schedule("linear", 100)
    with pytest.raises(FewstepError):
        ddim_table(schedule, [5, 3])
    with pytest.raises(FewstepError):
        ddim_table(schedule, [0, 100])
    with pytest.raises(FewstepError):
        ddim_table(schedule, [0, 10], eta=-1)
