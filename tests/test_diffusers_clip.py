"""diffusers' ``clip_sample`` is reproduced exactly: fewstep's step equals ``DDPMScheduler.step``.

With ``clip_sample=True`` diffusers clips the x0-prediction to [-r, r] and takes the posterior mean
from it. fewstep's table does the same through ``clip_x0`` (``step_mean``), in rollout and in
re-scoring alike. Checked for clip_sample true and false, fixed_small and fixed_large, on all T
steps and on a sub-sequence, with x ~ N(0, 9) so the clipping is active at most steps.

Two comparisons, as in ``test_diffusers_step.py``: in float64 with diffusers' ``alphas_cumprod``
widened to fewstep's float64 values (the formulas agree to 1e-9), and in diffusers' own float32
(near t = 0, 1 - alpha_bar in float32 keeps only a few digits, so agreement is to about 1e-3 there).
"""

import pytest
import torch
from diffusers import DDPMScheduler

from fewstep.images.diffusers_io import sampler_settings
from fewstep.rollout import gaussian_log_prob, rollout, step_log_prob, step_mean
from fewstep.samplers import ddpm_table
from fewstep.schedules import NoiseSchedule

T = 1000
SUBSEQUENCE = [0, 3, 10, 47, 120, 333, 500, 721, 999]
VARIANCE = {"fixed_small": "beta_tilde", "fixed_large": "beta"}


def fixed_eps(x, t):
    """Any deterministic function of (x, t) serves as the epsilon-model here."""
    return torch.sin(3 * x + t.view(-1, 1, 1, 1) / 97.0) + 0.1 * x


def scheduler_and_table(variance_type, clip, timesteps, clip_range=1.0, exact=False):
    scheduler = DDPMScheduler(
        num_train_timesteps=T, variance_type=variance_type, clip_sample=clip, clip_sample_range=clip_range
    )
    # fewstep's schedule is the scheduler's own betas, as when a pipeline folder is loaded
    schedule = NoiseSchedule("diffusers-linear", scheduler.betas.double().clone())
    if exact:
        scheduler.alphas_cumprod = schedule.alpha_bar.clone()
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    settings = sampler_settings(dict(scheduler.config), VARIANCE[variance_type])
    assert settings["clip_x0"] == (clip_range if clip else None)
    table = ddpm_table(schedule, timesteps, VARIANCE[variance_type], False, settings["clip_x0"])
    if timesteps is None:
        scheduler.set_timesteps(num_inference_steps=T)
    else:
        scheduler.set_timesteps(timesteps=sorted(timesteps, reverse=True))
    return scheduler, table


@pytest.mark.parametrize("clip", [True, False], ids=["clip", "no-clip"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("timesteps", [None, SUBSEQUENCE], ids=["full", "sub"])
@pytest.mark.parametrize("exact", [True, False], ids=["float64", "float32"])
def test_step_equals_ddpm_scheduler_step(clip, variance_type, timesteps, exact):
    scheduler, table = scheduler_and_table(variance_type, clip, timesteps, exact=exact)
    assert table.K == len(scheduler.timesteps)
    dtype = torch.float64 if exact else torch.float32
    tol = dict(rtol=1e-9, atol=1e-9) if exact else dict(rtol=1e-3, atol=2e-3)
    g = torch.Generator().manual_seed(0)
    ks = range(table.K) if table.K < 20 else [0, 1, 2, 300, 500, 900, 997, 998, 999]
    worst = 0.0
    for k in ks:
        t = int(scheduler.timesteps[k])
        assert int(table.t[k]) == t
        x = 3 * torch.randn(8, 1, 4, 4, generator=g, dtype=dtype)  # x in N(0, 9): x0-predictions leave [-1, 1]
        eps = fixed_eps(x, table.t[k].to(dtype).expand(8))
        ref = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(k)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k), dtype=dtype)
        mean, _ = step_mean(fixed_eps, table, x, k)
        ours = mean + float(table.s[k]) * z
        torch.testing.assert_close(ours, ref, **tol, msg=lambda m: f"step {k} (t={t}): {m}")
        unclipped = table.a[k].to(dtype) * x + table.b[k].to(dtype) * eps
        worst = max(worst, float((unclipped - mean).abs().max()))
    # the clipping is not vacuous: without it the means would differ a lot
    assert (worst > 1.0) if clip else (worst < 1e-4)


def test_clip_range_is_diffusers_clip_sample_range():
    scheduler, table = scheduler_and_table("fixed_small", True, SUBSEQUENCE, clip_range=2.5)
    assert table.clip_x0 == 2.5
    x = 3 * torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    for k in range(table.K):
        t = int(scheduler.timesteps[k])
        eps = fixed_eps(x, table.t[k].float().expand(8))
        ref = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(k)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
        mean, _ = step_mean(fixed_eps, table, x, k)
        torch.testing.assert_close(mean + float(table.s[k]) * z, ref, rtol=1e-3, atol=2e-3)
        x = ref


def test_clipped_steps_are_scored_as_they_were_taken():
    """Rollout and re-scoring share the clipped mean, so the policy gradient sees the sampler that ran."""
    _, table = scheduler_and_table("fixed_large", True, SUBSEQUENCE)
    noise = torch.randn(table.K + 1, 6, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        traj = rollout(fixed_eps, table, noise)
        for k in range(table.K - 1):  # the last step is deterministic (no noise at the last step)
            rescored = step_log_prob(fixed_eps, table, traj.x[k], traj.x[k + 1], k)
            torch.testing.assert_close(rescored, traj.log_prob[k], rtol=1e-6, atol=1e-4)
        # the first step's x0-prediction is far outside [-1, 1]: the unclipped density would differ
        x, std = traj.x[0], torch.full((6,), float(table.s[0]))
        unclipped = table.a[0].float() * x + table.b[0].float() * fixed_eps(x, table.t[0].float().expand(6))
        assert not torch.allclose(gaussian_log_prob(traj.x[1], unclipped, std), traj.log_prob[0])
