"""(b) Ancestral DDPM with the exact epsilon-predictor of Gaussian data N(mu, s^2 I).

For x_0 ~ N(mu, s^2 I), x_i = sqrt(ab) x_0 + sqrt(1 - ab) eps gives the exact predictor
E[eps | x_i] = sqrt(1 - ab) (x_i - sqrt(ab) mu) / (ab s^2 + 1 - ab). Plugged into the sampler
of ``ddpm_table`` (eps form of the mean, rolled out by ``rollout.chain``), the samples must have
mean mu and variance s^2 up to Monte-Carlo error and the (computable) discretization error.

The chain is linear-Gaussian, so its output law is also known exactly: the moments of the ideal
T-step sampler follow a scalar recursion built from eq. 2's posterior (x_0-form, Gaussian
conditioning for E[x_0 | x_i]), independent of the eps-form coefficients in ``steps.py``. The
samples are compared with those moments at Monte-Carlo tolerance, and the moments with (mu, s^2).
"""

import math

import pytest
import torch

from fewstep.rollout import TensorNoise, chain
from fewstep.schedules import make_schedule, schedule_from_alpha_bar
from fewstep.samplers import ddpm_table

MU = torch.tensor([0.8, -0.4, 0.3, -1.2], dtype=torch.float64)
S = 0.5
N_SAMPLES = 40_000  # x 4 dimensions = 160K draws per case
CHUNK = 10_000
Z = 5.0  # tolerance in Monte-Carlo standard errors


def exact_eps(schedule):
    alpha_bar = schedule.alpha_bar

    def eps(x, t):
        t = t.long()
        # one time per step in a rollout: a scalar keeps the test fast; per-row times also work
        ab = alpha_bar[t[0]].item() if bool((t == t[0]).all()) else alpha_bar[t].to(x).view(-1, 1)
        if isinstance(ab, float):
            return math.sqrt(1 - ab) * (x - math.sqrt(ab) * MU) / (ab * S**2 + 1 - ab)
        return (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * S**2 + 1 - ab)

    return eps


def ideal_moments(schedule, tau, variance):
    """Mean offset and variance (per dim) of the ideal ancestral sampler's output, from x_T ~ N(0, I).

    Step from level ab to ab_prev: x_prev = x0_coef E[x0 | x] + xt_coef x + noise (eq. 2), with
    E[x0 | x] = mu + g (x - sqrt(ab) mu), g = sqrt(ab) s^2 / (ab s^2 + 1 - ab). Returns
    (r, v): output mean r * mu and variance v (the initial mean 0 scales to 0).
    """
    sub = schedule_from_alpha_bar("sub", schedule.alpha_bar[tau])
    r, v = 0.0, 1.0  # mean = r * mu, variance v
    for i in reversed(range(sub.T)):
        ab = sub.alpha_bar[i].item()
        g = math.sqrt(ab) * S**2 / (ab * S**2 + 1 - ab)
        x0c, xtc = sub.posterior_x0_coef[i].item(), sub.posterior_xt_coef[i].item()
        A = xtc + x0c * g
        r = A * r + x0c * (1 - g * math.sqrt(ab))
        var = sub.beta[i].item() if variance == "beta" else sub.beta_tilde[i].item()
        v = A * A * v + (var if i > 0 else 0.0)
    return r, v


@pytest.mark.parametrize("every", [1, 5], ids=["T1000", "T200-subsequence"])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_exact_predictor_reproduces_gaussian(every, variance, kind="linear"):
    torch.manual_seed(0)
    schedule = make_schedule(kind, 1000)
    tau = torch.arange(0, 1000, every)
    table = ddpm_table(schedule, tau if every > 1 else None, variance=variance)
    assert table.K == len(tau)
    eps = exact_eps(schedule)

    generator = torch.Generator().manual_seed(1)
    outputs = []
    for _ in range(N_SAMPLES // CHUNK):
        noise = torch.randn((table.K + 1, CHUNK, len(MU)), generator=generator).double()
        for _, _, _, x in chain(eps, table, TensorNoise(noise)):
            pass
        outputs.append(x)
    x = torch.cat(outputs)
    n = x.shape[0]
    mean = x.mean(0)
    var = ((x - mean) ** 2).sum() / (x.numel() - len(MU))  # pooled over dimensions

    r, v = ideal_moments(schedule, tau, variance)
    mean_tol = Z * math.sqrt(v / n)
    var_tol = Z * v * math.sqrt(2 / (x.numel() - len(MU)))
    # 1. The sampler's output law is the ideal chain's, at Monte-Carlo tolerance.
    torch.testing.assert_close(mean, r * MU, rtol=0, atol=mean_tol)
    assert abs(var.item() - v) < var_tol, (var.item(), v, var_tol)
    # 2. Both reproduce the data: mean mu and variance s^2 up to Monte-Carlo error and the
    #    discretization error of the finite chain (at most a few per cent of s^2 here).
    torch.testing.assert_close(mean, MU, rtol=0, atol=mean_tol + abs(r - 1) * MU.abs().max().item())
    assert abs(var.item() - S**2) < var_tol + abs(v - S**2)
    assert abs(v / S**2 - 1) < (0.02 if every == 1 else 0.08) and abs(r - 1) < 1e-3
