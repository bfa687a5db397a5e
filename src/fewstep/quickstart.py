"""``fewstep quickstart``: the main job end to end on the swiss roll with laptop-sized defaults.

Pretrain a T = 10 DDPM, fine-tune its sampler with SFT-PG (B), evaluate both beside the noise
floor, and draw before/after figures.
"""
from __future__ import annotations

import copy
import time

from .data import DataSource
from .evaluation import evaluate_sampler
from .finetune import finetune
from .plots import curves, sampling_paths, scatter
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
    "finetune.iterations=1500",
    "finetune.batch_size=256",
    "finetune.eval_every=250",
    "evaluate.n_samples=5000",
]


def run_quickstart(run: Run, resume: bool = False, progress: bool = True) -> str:
    """Pretrain, fine-tune, evaluate with the noise floor, draw figures, write the summary."""
    config = run.config
    started = time.time()
    pretrained = pretrain(config, run, resume=resume, progress=progress)
    table = table_from_config(config, make_schedule(config.schedule.kind, config.schedule.T))
    before, result_before = evaluate_sampler(pretrained, table, config, progress=progress)
    tuned, table = finetune(config, run, copy.deepcopy(pretrained), resume=resume, progress=progress, table=table)
    after, result_after = evaluate_sampler(tuned, table, config, progress=progress)
    for name, result in (("pretrained", result_before), ("finetuned", result_after)):
        run.log({"stage": "evaluate", "model": name, **result})

    data = DataSource(config.data).draw(len(before), config.evaluate.seed)
    T = config.schedule.T
    scatter([(f"DDPM, T={T}", before), (f"SFT-PG (B), T={T}", after)], data, run.figure("samples"))
    noise = draw_noise(table.K, 50, data.shape[1:], seeds=range(50))
    sampling_paths([(f"DDPM, T={T}", rollout(pretrained, table, noise).x.detach()),
                    (f"SFT-PG (B), T={T}", rollout(tuned, table, noise).x.detach())], run.figure("sampling_path"))
    losses, tuning = run.metrics("pretrain"), [r for r in run.metrics("finetune") if "w2" in r]
    curves({"pretrain loss": ([r["step"] for r in losses], [r["loss"] for r in losses])}, run.figure("pretrain_loss"),
           "step", "epsilon loss", logy=True)
    curves({"SFT-PG (B)": ([r["step"] for r in tuning], [r["w2"] for r in tuning])}, run.figure("finetune_w2"),
           "iteration", f"W2 ({config.finetune.eval_samples} samples)", floor=tuning[-1]["floor_w2"])

    b, a, f = result_before["model"], result_after["model"], result_after["floor"]
    lines = [
        f"# fewstep quickstart ({config.data.name}, {config.schedule.kind} schedule, T={T})",
        "",
        f"| sampler ({config.evaluate.n_samples} samples) | W2 | sliced W2 |",
        "|---|---|---|",
        f"| DDPM, T={T} (pretrained {config.pretrain.steps} steps) | {b['w2']:.4f} | {b['sw2']:.4f} |",
        f"| SFT-PG (B), T={T} ({config.finetune.iterations} iterations) | {a['w2']:.4f} | {a['sw2']:.4f} |",
        f"| noise floor (two data draws) | {f['w2']:.4f} | {f['sw2']:.4f} |",
        "",
        f"took {time.time() - started:.0f} s; figures: figures/samples.png, figures/sampling_path.png, "
        "figures/pretrain_loss.png, figures/finetune_w2.png",
    ]
    summary = "\n".join(lines) + "\n"
    run.write_summary(summary)
    return summary
