"""DPM-Solver(2M) tables and DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler."""

import torch
from diffusers import DPMSolverMultistepScheduler

from _sampler_models import GaussianEps, diffusers_kwargs, noise_block, random_net
from fewstep.rollout import rollout
from fewstep.samplers import ddim_table, dpm_solver_2m_table, dpm_solver_pp_2m_table, spacing
from fewstep.schedules import make_schedule

TAU = [0, 40, 130, 300, 520, 760, 999]


def _diffusers_run(model, schedule, algorithm, final_sigmas_type, x):
    # solver_order=2, midpoint, lower_order_final=True: 2M with first-order first and last steps.
    ref = DPMSolverMultistepScheduler(
        **diffusers_kwargs(schedule),
        algorithm_type=algorithm,
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type=final_sigmas_type,
    )
    ref.set_timesteps(timesteps=list(reversed(TAU)))
    with torch.no_grad():
        for t in ref.timesteps:
            eps = model(x, torch.full((x.shape[0],), float(t), dtype=torch.float64))
            x = ref.step(eps, t, x).prev_sample
    return x


def test_dpm_solver_pp_2m_matches_diffusers():
    schedule = make_schedule("linear", 1000)
    model = random_net(seed=5)
    noise = noise_block(len(TAU), 64, (2,), 0).double()
    table = dpm_solver_pp_2m_table(schedule, TAU)
    assert (table.d != 0).any()  # the x_prev column is used
    ours = rollout(model, table, noise).x0
    # final_sigmas_type="zero": the last step lands on clean data, like final_alpha_bar = 1.
    ref = _diffusers_run(model, schedule, "dpmsolver++", "zero", noise[0])
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()


def test_dpm_solver_2m_table_matches_diffusers():
    schedule = make_schedule("linear", 1000)
    model = random_net(seed=6)
    noise = noise_block(len(TAU), 64, (2,), 1).double()
    # diffusers only supports final_sigmas_type="sigma_min" for the noise-prediction solver:
    # its last step lands on alpha_bar[0], so the table does the same.
    table = dpm_solver_2m_table(schedule, TAU, final_alpha_bar=float(schedule.alpha_bar[0]))
    assert not table.is_markov and (table.d == 0).all()  # the c column is used
    ours = rollout(model, table, noise).x0
    ref = _diffusers_run(model, schedule, "dpmsolver", "sigma_min", noise[0])
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()


def test_dpm_solver_2m_first_step_is_ddim_and_gaussian_accuracy():
    schedule = make_schedule("linear", 1000)
    table, ddim = dpm_solver_2m_table(schedule, TAU), ddim_table(schedule, TAU)
    assert torch.allclose(table.a[0], ddim.a[0]) and torch.allclose(table.b[0], ddim.b[0])
    assert torch.allclose(table.a[-1], ddim.a[-1]) and torch.allclose(table.b[-1], ddim.b[-1])
    # Second order beats first order at few steps on Gaussian data with the exact eps-model.
    mu, s = torch.tensor([0.5, -1.0]), 0.3
    model = GaussianEps(schedule, mu, s)
    steps = spacing("logsnr", schedule, 8)
    noise = noise_block(8, 10_000, (2,), 0).double()
    err = {}
    for name, tab in {"2m": dpm_solver_2m_table(schedule, steps), "ddim": ddim_table(schedule, steps)}.items():
        x0 = rollout(model, tab, noise).x0
        err[name] = (x0.std(0) - s).abs().max().item()
    pp = rollout(model, dpm_solver_pp_2m_table(schedule, steps), noise).x0
    err["pp"] = (pp.std(0) - s).abs().max().item()
    assert err["2m"] < err["ddim"] and err["pp"] < err["ddim"], err
