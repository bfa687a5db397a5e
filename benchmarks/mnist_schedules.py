"""Few-step schedules on an image model: Phase 1 (the path bound) and Phase 1 + 2 against the heuristics.

The model is the walkthrough's T = 1000 U-Net on 14x14 MNIST (``benchmarks/image_walkthrough.sh``
writes it to ``<walkthrough>/runs/mnist14/checkpoints/pretrain.safetensors``). For NFE 4, 6 and 10:

* training-free baselines: DDIM on uniform / quadratic / log-SNR / Karras steps, DPM-Solver++(2M)
  on log-SNR steps, and the GITS-style DP (one-step local error, no propagation);
* Phase 1: the path-bound DP (flow propagation) and its refinement on the measured error, exactly
  what ``fewstep schedule optimise`` does with its defaults (``schedule_opt.method=path``);
* Phase 1 + 2: the refined schedule, then the model distilled at those steps onto its own
  1000-step output (``schedule_opt.phase2=distill``, the library's ``finetune_on_path``).

Every schedule is optimised on 256 starts (seed of offset 0) and scored on 256 others (offset 1):
the discretisation error is the RMS per dimension between the K-step output and the model's
1000-step DDIM output from the same start. FID/KID/precision/recall: 500 samples per repeat, three
repeats with fresh sample seeds and fresh held-out data (mean and sd), beside the data-vs-data floor.
The path-bound cost matrix (all 1000 times, shared by every K) is computed once and cached in
``--work``, as is every row, so an interrupted run goes on where it stopped.

    bash benchmarks/image_walkthrough.sh          # once: the model, in /tmp/fewstep-walkthrough
    nice -n 5 python benchmarks/mnist_schedules.py \
        --checkpoint /tmp/fewstep-walkthrough/runs/mnist14/checkpoints/pretrain.safetensors
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

import fewstep
from fewstep.config import load_config
from fewstep.data import DataSource
from fewstep.evaluation import Evaluator, evaluate_sampler
from fewstep.files import write_text_atomic
from fewstep.samplers import dpm_solver_pp_2m_table, spacing
from fewstep.schedule_opt.distill import finetune_on_path
from fewstep.schedule_opt.dp import min_cost_path
from fewstep.schedule_opt.jobs import heuristic_times, reference_for, schedule_table
from fewstep.schedule_opt.path_bound import path_costs
from fewstep.schedule_opt.reference import output_error, table_output
from fewstep.schedule_opt.refine import refine_ddim

ROOT = Path(__file__).resolve().parent
HEURISTICS = ("uniform", "quadratic", "logsnr", "karras")
NEW = ("path-bound-dp+refine", "phase1+2 (distilled)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the T = 1000 14x14 MNIST U-Net")
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 6, 10])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fewstep-mnist-schedules"))
    parser.add_argument(
        "--refine-sweeps", type=int, default=4, help="coordinate-search sweeps of the refinement (the CLI's: 4)"
    )
    parser.add_argument("--phase2-steps", type=int, default=400)
    parser.add_argument("--phase2-batch", type=int, default=64)
    parser.add_argument("--phase2-lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "mnist_schedules.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    sets = [
        "data.name=mnist",
        f"data.path={ROOT.parent.parent / 'shared' / 'data' / 'mnist'}",
        "data.image_size=14",
        "evaluate.n_samples=500",
        "evaluate.train_samples=200",
        "evaluate.repeats=3",
        "schedule_opt.n_starts=256",
        "threads=1",
    ]
    config = load_config(None, sets)
    pretrained = fewstep.load(args.checkpoint)
    model, schedule = pretrained.model.eval(), pretrained.schedule
    data = DataSource(config.data)
    evaluator = Evaluator(data, config.evaluate)
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731

    @functools.cache
    def references() -> tuple:
        """The fine paths of the optimisation and the scoring starts (computed only if a row needs them)."""
        started = time.time()
        pair = tuple(reference_for(model, config, schedule, data.shape, offset=k) for k in (0, 1))
        log(f"fine references (2 x 256 starts x 1000 steps): {time.time() - started:.0f} s")
        return pair

    @functools.cache
    def costs(propagate: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(grid, path cost matrix on every time, seconds it took), cached in ``--work``."""
        cached = args.work / f"costs-{propagate}.pt"
        if cached.is_file():
            saved = torch.load(cached, weights_only=True)
            return saved["grid"], saved["cost"], float(saved["seconds"])
        started = time.time()
        grid, cost = path_costs(model, schedule, references()[0], None, propagate)
        seconds = time.time() - started
        torch.save({"grid": grid, "cost": cost, "seconds": seconds}, cached)
        log(f"path cost matrix ({propagate} propagation, every time): {seconds:.0f} s")
        return grid, cost, seconds

    rows_file = args.work / "rows.json"
    rows = json.loads(rows_file.read_text()) if rows_file.is_file() else {}

    def score(key: str, used_model, table, times, cost_s: float, **extra) -> None:
        if key in rows:
            return
        t0 = time.time()
        _, scores = evaluate_sampler(used_model, table, evaluator)
        with torch.no_grad():
            scored_on = references()[1]
            rmse = output_error(table_output(used_model, table, scored_on.x_T), scored_on) ** 0.5
        rows[key] = {
            "times": [float(t) for t in times],
            "discretisation_rmse": rmse,
            "scores": scores,
            "seconds_to_build": cost_s,
            **extra,
        }
        write_text_atomic(rows_file, json.dumps(rows, indent=1))
        m, sd = scores["model"], scores["model_sd"]
        took = time.time() - t0
        log(f"{key}: RMS {rmse:.4f}, FID {m['fid']:.2f} +- {sd['fid']:.2f}, recall {m['recall']:.3f} ({took:.0f} s)")

    for K in args.nfe:
        for name in HEURISTICS:
            times = heuristic_times(name, schedule, K)
            score(f"{K}/ddim/{name}", model, schedule_table(schedule, times, "ddim"), times, 0.0)
        logsnr = spacing("logsnr", schedule, K + 1)[1:]
        score(f"{K}/dpm_solver++_2m/logsnr", model, dpm_solver_pp_2m_table(schedule, logsnr), logsnr.flip(0), 0.0)
        for name, propagate in (("gits-style-dp", "none"), ("path-bound-dp", "flow")):
            if f"{K}/{name}" not in rows:
                grid, cost, seconds = costs(propagate)
                times = grid[min_cost_path(cost, K)[0]]
                score(f"{K}/{name}", model, schedule_table(schedule, times, "ddim"), times, seconds)
        key = f"{K}/path-bound-dp+refine"
        if key not in rows:
            t0 = time.time()
            dp_times = torch.tensor(rows[f"{K}/path-bound-dp"]["times"])
            times = refine_ddim(model, schedule, dp_times, references()[0], max_sweeps=args.refine_sweeps).times
            built = rows[f"{K}/path-bound-dp"]["seconds_to_build"] + time.time() - t0
            score(key, model, schedule_table(schedule, times, "ddim"), times, built, refine_sweeps=args.refine_sweeps)
        key = f"{K}/phase1+2 (distilled)"
        if key not in rows:
            times = torch.tensor(rows[f"{K}/path-bound-dp+refine"]["times"], dtype=torch.float64)
            t0 = time.time()
            tuned = finetune_on_path(
                model,
                schedule,
                times,
                references()[0],
                steps=args.phase2_steps,
                lr=args.phase2_lr,
                batch_size=args.phase2_batch,
                seed=K,
            ).eval()
            built = rows[f"{K}/path-bound-dp+refine"]["seconds_to_build"] + time.time() - t0
            score(key, tuned, schedule_table(schedule, times, "ddim"), times, built)

    result = {
        "checkpoint": str(args.checkpoint),
        "config": sets,
        "phase2": {"steps": args.phase2_steps, "batch": args.phase2_batch, "lr": args.phase2_lr, "target": "output"},
        "rows": rows,
        "cells": {K: summary(rows, K) for K in args.nfe},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2))
    print(markdown(result))
    figure(result, args.out.with_suffix(".png"))
    return 0


def summary(rows: dict, K: int) -> dict:
    """Per NFE: the best training-free baseline by each figure, and where the new methods stand."""
    cell = {k.split("/", 1)[1]: v for k, v in rows.items() if k.startswith(f"{K}/")}
    baselines = {k: v for k, v in cell.items() if k not in NEW and k != "path-bound-dp"}
    by_rmse = min(baselines, key=lambda k: baselines[k]["discretisation_rmse"])
    by_fid = min(baselines, key=lambda k: baselines[k]["scores"]["model"]["fid"])
    out = {"best_baseline_by_rmse": by_rmse, "best_baseline_by_fid": by_fid}
    best = baselines[by_fid]["scores"]
    for name in NEW:
        s = cell[name]["scores"]
        gap = s["model"]["fid"] - best["model"]["fid"]
        spread = max(s["model_sd"]["fid"], best["model_sd"]["fid"])
        out[name] = {
            "rmse_vs_best": cell[name]["discretisation_rmse"] / baselines[by_rmse]["discretisation_rmse"],
            "fid_vs_best": "best" if gap < 0 else ("within spread" if gap <= spread else f"worse by {gap:.2f}"),
        }
    return out


def markdown(result: dict) -> str:
    lines = [
        "| NFE | method | discretisation RMS | FID (floor) | precision | recall |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for key, row in result["rows"].items():
        K, name = key.split("/", 1)
        m, sd, floor = row["scores"]["model"], row["scores"]["model_sd"], row["scores"]["floor"]
        bold = "**" if name in NEW else ""
        lines.append(
            f"| {K} | {bold}{name}{bold} | {row['discretisation_rmse']:.4f} | {m['fid']:.2f} +- {sd['fid']:.2f} "
            f"({floor['fid']:.2f}) | {m['precision']:.3f} | {m['recall']:.3f} |"
        )
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    """FID and discretisation error against NFE, one line per method."""
    from fewstep.plots import curves

    series: dict[str, tuple[list[float], list[float]]] = {}
    spread: dict[str, list[float]] = {}
    floor = None
    for key, row in result["rows"].items():
        K, name = key.split("/", 1)
        x, y = series.setdefault(name, ([], []))
        x.append(float(K))
        y.append(row["scores"]["model"]["fid"])
        spread.setdefault(name, []).append(row["scores"]["model_sd"]["fid"])
        floor = row["scores"]["floor"]["fid"]
    curves(
        series,
        path,
        xlabel="NFE",
        ylabel="FID (500 samples, mean +- sd of 3)",
        floor=floor,
        logy=True,
        title="14x14 MNIST, T = 1000 U-Net: schedules",
        spread=spread,
    )


if __name__ == "__main__":
    sys.exit(main())
