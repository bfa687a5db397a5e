"""Figures and ``summary.md`` for a run: one place for what pretrain, finetune and quickstart report.

A report scores each sampler beside the noise floor with the metrics of the data's kind, logs the
scores to ``metrics.jsonl``, draws the figures the data allows (scatter and sampling paths for
2-D points, sample grids for images) and returns Markdown lines for the summary.
"""

from __future__ import annotations

import math

import torch

from .evaluation import METRICS, Evaluator, evaluate_sampler
from .plots import curves, grid_figure, sampling_paths, scatter
from .rollout import SeededNoise, eval_mode, rollout
from .runs import Run
from .steps import StepTable

LABELS = {
    "w2": "W2",
    "sw2": "sliced W2",
    "fid": "FID",
    "kid": "KID",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
}


def _cell(result: dict, key: str, part: str = "model") -> str:
    value = result[part][key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    sd = result.get(part + "_sd", {}).get(key)
    draws = result["floor_repeats"] if part == "floor" else result["repeats"]
    return f"{value:.4f}" + (f" +- {sd:.4f}" if draws > 1 and sd is not None else "")


def _short(result: dict, keys: tuple[str, ...]) -> str:
    return ", ".join(
        f"{LABELS[k]} {result['model'][k]:.4g}"
        for k in keys
        if not (isinstance(result["model"][k], float) and math.isnan(result["model"][k]))
    )


def report(
    run: Run,
    config,
    data,
    entries: list[tuple[str, torch.nn.Module, StepTable]],
    progress: bool = False,
    device: str = "cpu",
) -> list[str]:
    """Score each (name, model, table); log, draw, and return Markdown lines with the floor."""
    evaluator = Evaluator(data, config.evaluate, progress, device, config.autocast)
    keys = METRICS[evaluator.kind][:2] + ("precision", "recall")
    rows, panels, result = [], [], None
    for name, model, table in entries:
        x, result = evaluate_sampler(model, table, evaluator, device=device)
        run.log({"stage": "evaluate", "model": name, "sampler": table.name, "steps": table.K, **result})
        rows.append(f"| {name}, {table.K} steps | " + " | ".join(_cell(result, k) for k in keys) + " |")
        panels.append((f"{name}, {table.K} steps\n{_short(result, keys[:2])}", x))
    rows.append("| noise floor (two data draws) | " + " | ".join(_cell(result, k, "floor") for k in keys) + " |")
    floor_text = "noise floor: " + ", ".join(f"{LABELS[k]} {result['floor'][k]:.4g}" for k in keys[:2])
    if data.shape == (2,):
        reference, _ = data.floor_pair(result["n"], config.evaluate.seed)
        scatter(panels, reference, run.figure("samples"), suptitle=floor_text)
        noise = SeededNoise(config.evaluate.seed, torch.arange(50), (2,))
        paths = []
        for name, model, table in entries:
            with torch.no_grad(), eval_mode(model):
                paths.append((f"{name}, {table.K} steps", rollout(model, table, noise).x))
        sampling_paths(paths, run.figure("sampling_path"), data=reference)
    elif data.kind == "images":
        grid_figure(
            [(title, x[:64]) for title, x in panels], {k: result["floor"][k] for k in keys[:2]}, run.figure("samples")
        )
    header = "| sampler | " + " | ".join(LABELS[k] for k in keys) + " |"
    spread = f", mean +- sd over {result['repeats']} draws" if result["repeats"] > 1 else ""
    return [
        f"{data.describe()}; {result['n']} samples against as many held-out points{spread}",
        "",
        header,
        "|---|" + "---|" * len(keys),
        *rows,
    ]


def training_curves(run: Run) -> list[str]:
    """Loss and held-out score curves of the run's stages; returns the figure names."""
    names = []
    losses = [r for r in run.metrics("pretrain") if r.get("loss") is not None]
    if losses:
        curves(
            {"pretrain loss": ([r["step"] for r in losses], [r["loss"] for r in losses])},
            run.figure("pretrain_loss"),
            "step",
            "epsilon loss",
            logy=True,
        )
        names.append("figures/pretrain_loss.png")
    for stage in ("pretrain", "finetune", "phase2"):
        scored = [r for r in run.metrics(stage) if r.get("eval_n")]
        key = next((k for k in ("fid", "w2", "sw2") if scored and scored[-1].get(k) is not None), None)
        if key is None:
            continue
        curves(
            {stage: ([r["step"] for r in scored], [r[key] for r in scored])},
            run.figure(f"{stage}_{key}"),
            "step" if stage != "finetune" else "iteration",
            f"held-out {LABELS[key]} ({scored[-1]['eval_n']} samples)",
            floor=scored[-1].get(f"floor_{key}"),
            logy=True,
            title=(
                f"{scored[-1]['eval_n']} samples per evaluation (evaluate.train_samples; the summary's final "
                "scores use evaluate.n_samples)\nnoise floor at the same size dashed"
            ),
        )
        names.append(f"figures/{stage}_{key}.png")
    return names


def write_summary(run: Run, title: str, body: list[str], seconds: float) -> str:
    figures = sorted(f"figures/{p.name}" for p in (run.path / "figures").glob("*.png"))
    lines = [f"# {title}", "", *body, "", f"took {seconds:.0f} s; figures: {', '.join(figures) or 'none'}"]
    summary = "\n".join(lines) + "\n"
    run.write_summary(summary)
    return summary
