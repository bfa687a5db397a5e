"""FastDPM STEP / VAR tables: sub-sequences, variance schedules, and the kappa limits."""

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.samplers import alpha_bar_at, ddim_table, fastdpm_table, step_subsequence, var_times, variance_schedule
from fewstep.schedules import make_schedule
from fewstep.samplers import ddpm_table


def test_step_subsequences():
    schedule = make_schedule("linear", 1000)
    lin = step_subsequence(schedule, 6, "linear")
    assert lin.tolist() == [0, 200, 400, 599, 799, 999]
    quad = step_subsequence(schedule, 5, "quadratic")
    assert quad.tolist() == [0, 50, 200, 450, 800]  # c i^2 with c = 0.8 T / (K-1)^2


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_var_schedule_reaches_terminal_level(kind):
    schedule = make_schedule("linear", 1000)
    betas = variance_schedule(schedule, 6, kind)
    assert betas[0] == pytest.approx(float(schedule.beta[0]))
    assert (betas[1:] > betas[:-1]).all()
    gamma_bar = torch.cumprod(1 - betas, 0)
    assert gamma_bar[-1] == pytest.approx(float(schedule.alpha_bar[-1]), rel=1e-6)
    t = var_times(schedule, 6, kind)
    # the continuous times have exactly the signal levels of the short schedule
    assert torch.allclose(alpha_bar_at(schedule, t), gamma_bar, rtol=1e-6)
    if kind == "linear":  # linear in beta means second differences vanish
        assert torch.allclose(betas.diff().diff(), torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_kappa_limits():
    schedule = make_schedule("linear", 1000)
    tau = step_subsequence(schedule, 5, "linear")
    ddpm_rev = fastdpm_table(schedule, 5, "STEP", "linear", kappa=1.0, reverse="ddpm")
    ref = ddpm_table(schedule, tau.long(), variance="beta_tilde")
    for col in ("t", "a", "b", "s"):
        assert torch.allclose(getattr(ddpm_rev, col), getattr(ref, col), atol=1e-10), col
    ddim_rev = fastdpm_table(schedule, 5, "STEP", "linear", kappa=0.3, reverse="ddim")
    ref = ddim_table(schedule, tau, eta=0.3)
    for col in ("a", "b", "s"):
        assert torch.allclose(getattr(ddim_rev, col), getattr(ref, col), atol=1e-12), col
    # DDPM-rev with kappa < 1 keeps the DDPM mean but shrinks the noise
    half = fastdpm_table(schedule, 5, "STEP", "linear", kappa=0.5, reverse="ddpm")
    assert torch.allclose(half.b, ddpm_rev.b) and torch.allclose(half.s, 0.5 * ddpm_rev.s)


def test_fastdpm_bad_options():
    schedule = make_schedule("linear", 100)
    with pytest.raises(FewstepError):
        fastdpm_table(schedule, 4, "STEPS")
    with pytest.raises(FewstepError):
        fastdpm_table(schedule, 4, kappa=2.0)
    with pytest.raises(FewstepError):
        step_subsequence(schedule, 4, "cubic")
