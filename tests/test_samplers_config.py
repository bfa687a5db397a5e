"""build_table dispatches on sampler.kind through the registry; each kind reads its own settings."""

import pytest
import torch

from fewstep.config import load_config
from fewstep.errors import FewstepError
from fewstep.samplers import (
    build_table,
    ddim_table,
    ddpm_table,
    dpm_solver_2m_table,
    dpm_solver_pp_2m_table,
    fastdpm_table,
    for_policy_gradient,
    spacing,
)
from fewstep.schedules import make_schedule


def _same(a, b):
    return a.name == b.name and all(torch.equal(getattr(a, c), getattr(b, c)) for c in ("t", "a", "b", "s", "c"))


def test_default_is_ddpm():
    config = load_config(None, ["schedule.T=50"])
    schedule = make_schedule(config.schedule.kind, 50)
    assert config.sampler.kind == "ddpm"
    assert _same(build_table(config.sampler, schedule), ddpm_table(schedule, None, "beta", True))


def test_kinds():
    sched = make_schedule("linear", 1000)
    base = ["schedule.kind=linear", "schedule.T=1000", "sampler.steps=5"]
    cfg = load_config(None, [*base, "sampler.kind=ddim", "sampler.spacing=logsnr", "sampler.ddim.eta=0.5"])
    assert _same(build_table(cfg.sampler, sched), ddim_table(sched, spacing("logsnr", sched, 5), 0.5))
    cfg = load_config(None, [*base, "sampler.kind=dpm_solver_2m", "sampler.timesteps=[0, 10, 500]"])
    assert _same(build_table(cfg.sampler, sched), dpm_solver_2m_table(sched, [0, 10, 500]))
    cfg = load_config(
        None, [*base, "sampler.kind=fastdpm", "sampler.fastdpm.approach=VAR", "sampler.fastdpm.kappa=0.2"]
    )
    assert _same(build_table(cfg.sampler, sched), fastdpm_table(sched, 5, "VAR", "linear", 0.2))
    cfg = load_config(None, [*base, "sampler.spacing=quadratic"])  # ddpm with sampler.steps uses the spacing
    assert _same(build_table(cfg.sampler, sched), ddpm_table(sched, [0, 62, 250, 562, 999], "beta", True))
    cfg = load_config(None, [*base, "sampler.kind=dpm_solver_pp_2m", "sampler.spacing=logsnr"])
    assert _same(build_table(cfg.sampler, sched), dpm_solver_pp_2m_table(sched, spacing("logsnr", sched, 5)))
    with pytest.raises(FewstepError, match="analytic_dpm.gamma"):  # Gamma needs the model and data, or a value
        build_table(load_config(None, [*base, "sampler.kind=analytic_dpm"]).sampler, sched)
    gamma = "sampler.analytic_dpm.gamma=[0.9, 0.8, 0.7, 0.6, 0.5]"
    assert build_table(load_config(None, [*base, "sampler.kind=analytic_dpm", gamma]).sampler, sched).K == 5
    with pytest.raises(FewstepError):
        load_config(None, ["sampler.kind=euler"])


def test_bad_sampler_settings_fail_when_the_config_is_loaded():
    """Refused before any training: the message names the key."""
    with pytest.raises(FewstepError, match="sampler.steps=20 is more than the model's T=10"):
        load_config(None, ["schedule.T=10", "sampler.steps=20"])
    with pytest.raises(FewstepError, match="sampler.timesteps"):
        load_config(None, ["schedule.T=10", "sampler.timesteps=[3, 2]"])
    with pytest.raises(FewstepError, match="sampler kind ddim needs sampler.steps"):
        load_config(None, ["sampler.kind=ddim"])


def test_noise_at_last_step_applies_to_every_first_order_kind():
    sched = make_schedule("linear", 1000)
    base = ["schedule.kind=linear", "schedule.T=1000", "sampler.steps=10", "sampler.noise_at_last_step=true"]
    for kind in ("ddim", "fastdpm", "ddpm"):
        table = build_table(load_config(None, [*base, f"sampler.kind={kind}"]).sampler, sched)
        assert float(table.s[-1]) == pytest.approx(float((1 - table.alpha_bar[-1]).sqrt())), kind
    # the paper's image initialisation, FastDPM VAR quadratic with kappa 1 and the DDPM reverse process,
    # is ready for policy gradient from the config alone
    cfg = load_config(
        None,
        [
            *base,
            "sampler.kind=fastdpm",
            "sampler.fastdpm.approach=VAR",
            "sampler.fastdpm.schedule=quadratic",
            "sampler.fastdpm.kappa=1",
            "sampler.fastdpm.reverse=ddpm",
        ],
    )
    table = build_table(cfg.sampler, sched)
    assert table.scoreable and for_policy_gradient(table) is table


def test_for_policy_gradient():
    sched = make_schedule("linear", 1000)
    fast = fastdpm_table(sched, 10, "VAR", "quadratic", 1.0, "ddpm")
    assert not fast.scoreable and (fast.s[:-1] > 0).all()
    ready = for_policy_gradient(fast)  # keeps FastDPM's means, adds DDPM's last-step noise
    assert ready.scoreable and torch.equal(ready.a, fast.a) and torch.equal(ready.b, fast.b)
    assert float(ready.s[-1]) == pytest.approx(float((1 - fast.alpha_bar[-1]).sqrt()))
    for table in (ddim_table(sched, spacing("uniform", sched, 6)), dpm_solver_pp_2m_table(sched, [0, 100, 500, 999])):
        ready = for_policy_gradient(table)  # deterministic inside the chain, or multistep: DDPM on its levels
        assert ready.scoreable and ready.name == "ddpm"
        assert torch.allclose(ready.t, table.t) and torch.allclose(ready.alpha_bar, table.alpha_bar)
