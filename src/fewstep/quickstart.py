"""``fewstep quickstart``: the main job end to end on the swiss roll with laptop-sized defaults."""
from __future__ import annotations

import time

from .evaluation import evaluate_sampler, format_scores
from .plots import curves, sampling_paths, scatter
from .data import DataSource
from .pretrain import pretrain
from .rollout import draw_noise, rollout
from .runs import Run
from .schedules import make_schedule
from .steps import table_from_config

QUICKSTART_DEFAULTS = [
    "data.name=swiss_roll",
    "schedule.kind=sigmoid",
    "schedule.T=10",
    "pretrain.steps=6000",
    "pretrain.batch_size=256",
    "evaluate.n_samples=5000",
]


def run_quickstart(run: Run, resume: bool = False, progress: bool = True) -> str:
    """Pretrain, evaluate with the noise floor, draw figures, write the summary; return it."""
    config = run.config
    started = time.time()
    model = pretrain(config, run, resume=resume, progress=progress)
    table = table_from_config(config, make_schedule(config.schedule.kind, config.schedule.T))
    samples, result = evaluate_sampler(model, table, config, progress=progress)
    run.log({"stage": "evaluate", "step": config.pretrain.steps, "model": "pretrained", **result})
    data = DataSource(config.data).draw(len(samples), config.evaluate.seed)
    scatter([(f"DDPM, T={config.schedule.T}", samples)], data, run.figure("samples"))
    traj = rollout(model, table, draw_noise(table.K, 50, data.shape[1:], seeds=range(50)))
    sampling_paths([(f"DDPM sampling path, T={config.schedule.T}", traj.x.detach())], run.figure("sampling_path"))
    losses = run.metrics("pretrain")
    curves({"pretrain loss": ([r["step"] for r in losses], [r["loss"] for r in losses])}, run.figure("pretrain_loss"),
           "step", "epsilon loss", logy=True)
    lines = [
        f"# fewstep quickstart ({config.data.name}, {config.schedule.kind} schedule, T={config.schedule.T})",
        "",
        f"pretrained DDPM ({config.pretrain.steps} steps): {format_scores(result)}",
        f"evaluated on {config.evaluate.n_samples} samples; took {time.time() - started:.0f} s",
        "figures: figures/samples.png, figures/sampling_path.png, figures/pretrain_loss.png",
    ]
    summary = "\n".join(lines) + "\n"
    run.write_summary(summary)
    return summary
