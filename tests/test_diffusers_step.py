"""(d) Each ancestral DDPM step of a ``ddpm_table`` equals diffusers' ``DDPMScheduler.step``.

Same eps, same x, same noise: diffusers draws its noise with ``randn_tensor(shape, generator)``, so
the test passes it a generator seeded like the one that drew our z. clip_sample=False.

Two comparisons: in float64 with diffusers' ``alphas_cumprod`` replaced by ours (exact agreement
of the formulas), and with diffusers' own float32 schedule (agreement of the schedules too).
diffusers adds noise at every step whose time-step is > 0, so on a sub-sequence that does not start
at 0 its last step is stochastic: the table is built with ``noise_at_last_step`` to match.
"""

import pytest
import torch
from diffusers import DDPMScheduler

from fewstep.rollout import step_mean
from fewstep.schedules import make_schedule
from fewstep.samplers import ddpm_table

DIFFUSERS_VARIANCE = {"beta": "fixed_large", "beta_tilde": "fixed_small"}
DIFFUSERS_SCHEDULE = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "sigmoid": dict(beta_schedule="sigmoid", beta_start=1e-5, beta_end=1e-2),
}
T = 1000
SUBSEQUENCE = [3, 10, 47, 120, 333, 500, 721, 999]


def fixed_eps(x, t):
    """Any deterministic function of (x, t) serves as the epsilon-model here."""
    return torch.sin(3 * x + t.view(-1, 1) / 97.0) + 0.1 * x


def compare(kind, variance, timesteps, exact):
    dtype = torch.float64 if exact else torch.float32
    schedule = make_schedule(kind, T)
    scheduler = DDPMScheduler(
        num_train_timesteps=T, variance_type=DIFFUSERS_VARIANCE[variance], clip_sample=False, **DIFFUSERS_SCHEDULE[kind]
    )
    if exact:
        scheduler.alphas_cumprod = schedule.alpha_bar.clone()
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if timesteps is None:
        scheduler.set_timesteps(num_inference_steps=T)
    else:
        scheduler.set_timesteps(timesteps=sorted(timesteps, reverse=True))
    noisy_last = timesteps is not None and timesteps[0] > 0
    table = ddpm_table(schedule, timesteps, variance=variance, noise_at_last_step=noisy_last)
    assert table.K == len(scheduler.timesteps)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=g, dtype=dtype)
    ks = range(table.K) if table.K < 20 else [0, 1, 2, 500, 997, 998, 999]
    for k in ks:
        t_diffusers = int(scheduler.timesteps[k])
        assert int(table.t[k]) == t_diffusers
        eps = fixed_eps(x, table.t[k].to(dtype).expand(16))
        ref = scheduler.step(eps, t_diffusers, x, generator=torch.Generator().manual_seed(k)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k), dtype=dtype)
        mean, _ = step_mean(fixed_eps, table, x, k)
        ours = mean + table.s[k].to(dtype) * z
        tol = dict(rtol=1e-10, atol=1e-10) if exact else dict(rtol=2e-4, atol=2e-5)
        torch.testing.assert_close(ours, ref, **tol, msg=lambda m: f"step {k} (t={t_diffusers}): {m}")
        x = ref
    return table


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("timesteps", [None, SUBSEQUENCE, [0, 250, 500, 750, 999]], ids=["full", "sub", "sub-from-0"])
@pytest.mark.parametrize("exact", [True, False], ids=["float64", "float32"])
def test_step_matches_diffusers(variance, timesteps, exact):
    compare("linear", variance, timesteps, exact)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_sigmoid_schedule_step_matches_diffusers(variance):
    compare("sigmoid", variance, SUBSEQUENCE, exact=False)


def test_last_step_noise_is_a_choice():
    """Ho et al. add no noise at the last step; ``noise_at_last_step`` adds beta there (for policy gradients)."""
    schedule = make_schedule("linear", T)
    assert ddpm_table(schedule, SUBSEQUENCE, "beta").s[-1] == 0
    assert ddpm_table(schedule, SUBSEQUENCE, "beta", noise_at_last_step=True).s[-1] ** 2 == pytest.approx(
        1 - schedule.alpha_bar[3].item(), rel=1e-12
    )
    assert ddpm_table(schedule, None, "beta_tilde", noise_at_last_step=True).s[-1] == 0
