"""Figures and ``summary.md`` for a run: one place for what pretrain, finetune and quickstart report.

Each report evaluates the sampler(s) beside the noise floor, logs the scores to ``metrics.jsonl``,
draws the figures the data allows (scatter and sampling paths for 2-D points, sample grids for
images) and returns Markdown lines for the summary.
"""
from __future__ import annotations

import torch

from .config import Config
from .data import DataSource
from .evaluation import evaluate_sampler
from .plots import curves, sampling_paths, scatter
from .rollout import draw_noise, rollout
from .runs import Run
from .steps import StepTable

HEADER = ["| sampler | W2 | sliced W2 |", "|---|---|---|"]


def _samples_figure(run: Run, config: Config, data: DataSource, panels: list[tuple[str, torch.Tensor]], floor: dict, name: str) -> None:
    if data.shape == (2,):
        scatter(panels, data.draw(len(panels[0][1]), config.evaluate.seed), run.figure(name))
    elif len(data.shape) == 3:
        from .images.fid import grid_figure

        grid_figure([(title, x[:64]) for title, x in panels], floor, run.figure(name))


def _paths_figure(run: Run, data: DataSource, panels: list[tuple[str, torch.nn.Module]], table: StepTable) -> None:
    if data.shape != (2,):
        return
    noise = draw_noise(table.K, 50, (2,), seeds=range(50))
    with torch.no_grad():
        sampling_paths([(title, rollout(model, table, noise).x) for title, model in panels], run.figure("sampling_path"))


def score_rows(run: Run, config: Config, models: list[tuple[str, torch.nn.Module]], table: StepTable, progress: bool) -> list[str]:
    """Evaluate each (name, model) with ``table``; log, draw, and return table rows with the floor."""
    rows, panels, floor = [], [], None
    data = DataSource(config.data)  # loaded once for every evaluation and figure
    for name, model in models:
        x, result = evaluate_sampler(model, table, config, progress=progress, data=data)
        run.log({"stage": "evaluate", "model": name, "sampler": table.name, "steps": table.K, **result})
        rows.append(f"| {name}, {table.K} steps | {result['model']['w2']:.4f} | {result['model']['sw2']:.4f} |")
        panels.append((f"{name}, {table.K} steps", x))
        floor = result["floor"]
    rows.append(f"| noise floor (two data draws) | {floor['w2']:.4f} | {floor['sw2']:.4f} |")
    _samples_figure(run, config, data, panels, floor, "samples")
    _paths_figure(run, data, models, table)
    return [f"{config.evaluate.n_samples} samples, {config.data.name}", "", *HEADER, *rows]


def training_curves(run: Run, config: Config) -> list[str]:
    """Loss and W2 curves of the run's stages; returns the figure names."""
    names = []
    losses = run.metrics("pretrain")
    if losses:
        curves({"pretrain loss": ([r["step"] for r in losses], [r["loss"] for r in losses])}, run.figure("pretrain_loss"),
               "step", "epsilon loss", logy=True)
        names.append("figures/pretrain_loss.png")
    tuning = [r for r in run.metrics("finetune") if "w2" in r]
    if tuning:
        curves({"fine-tuning": ([r["step"] for r in tuning], [r["w2"] for r in tuning])}, run.figure("finetune_w2"),
               "iteration", f"W2 ({config.finetune.eval_samples} samples)", floor=tuning[-1]["floor_w2"])
        names.append("figures/finetune_w2.png")
    return names


def write_summary(run: Run, title: str, body: list[str], seconds: float) -> str:
    figures = sorted(f"figures/{p.name}" for p in (run.path / "figures").glob("*.png"))
    lines = [f"# {title}", "", *body, "", f"took {seconds:.0f} s; figures: {', '.join(figures) or 'none'}"]
    summary = "\n".join(lines) + "\n"
    run.write_summary(summary)
    return summary
