"""table_from_config dispatches on sampler.kind; the default stays DDPM."""
import pytest
import torch

from fewstep.config import load_config
from fewstep.errors import FewstepError
from fewstep.samplers import ddim_table, dpm_solver_2m_table, fastdpm_table, spacing
from fewstep.schedules import make_schedule
from fewstep.steps import ddpm_table, table_from_config


def _same(a, b):
    return a.name == b.name and all(torch.equal(getattr(a, c), getattr(b, c)) for c in ("t", "a", "b", "s", "c"))


def test_default_is_ddpm():
    config = load_config(None, ["schedule.T=50"])
    schedule = make_schedule(config.schedule.kind, 50)
    assert config.sampler.kind == "ddpm"
    assert _same(table_from_config(config, schedule), ddpm_table(schedule, None, "beta", True))


def test_kinds():
    sched = make_schedule("linear", 1000)
    base = ["schedule.kind=linear", "schedule.T=1000", "sampler.steps=5"]
    cfg = load_config(None, [*base, "sampler.kind=ddim", "sampler.spacing=logsnr", "sampler.eta=0.5"])
    assert _same(table_from_config(cfg, sched), ddim_table(sched, spacing("logsnr", sched, 5), 0.5))
    cfg = load_config(None, [*base, "sampler.kind=dpm_solver_2m", "sampler.timesteps=[0, 10, 500]"])
    assert _same(table_from_config(cfg, sched), dpm_solver_2m_table(sched, [0, 10, 500]))
    cfg = load_config(None, [*base, "sampler.kind=fastdpm", "sampler.fastdpm_approach=VAR", "sampler.kappa=0.2"])
    assert _same(table_from_config(cfg, sched), fastdpm_table(sched, 5, "VAR", "linear", 0.2))
    cfg = load_config(None, [*base, "sampler.spacing=quadratic"])  # ddpm with sampler.steps uses the spacing
    assert _same(table_from_config(cfg, sched), ddpm_table(sched, [0, 62, 250, 562, 999], "beta", True))
    with pytest.raises(FewstepError):
        table_from_config(load_config(None, [*base, "sampler.kind=analytic_dpm"]), sched)
    with pytest.raises(FewstepError):
        load_config(None, ["sampler.kind=euler"])
