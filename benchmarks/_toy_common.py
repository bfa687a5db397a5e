"""Shared plumbing of the toy benchmarks: every number comes from the library's own calls.

Pretrained DDPMs are cached under ``benchmarks/.cache/`` (keyed by their config) so that the
benchmarks share them; pretraining is ``fewstep.training.pretrain``, fine-tuning
``fewstep.training.finetune`` (the loop the CLI runs), scoring ``fewstep.evaluation.Evaluator``
(W2, sliced W2, precision/recall/density/coverage, each a mean over ``--repeats`` independent
draws with its standard deviation, beside the noise floor measured the same way).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from fewstep.config import Config, FinetuneConfig, load_config, to_dict
from fewstep.data import DataSource
from fewstep.evaluation import Evaluator, evaluate_sampler, mean_sd
from fewstep.models import load_pretrained
from fewstep.pretrained import Pretrained
from fewstep.runs import Run
from fewstep.steps import StepTable
from fewstep.training.finetune import Finetuned, finetune
from fewstep.training.pretrain import pretrain

CACHE = Path(__file__).parent / ".cache"

VARIANTS = {
    "sft-pg-b": [],
    "sft-pg-gp": ["finetune.critic_reg=gp"],
    "sft-gp": ["finetune.estimator=pathwise", "finetune.critic_reg=gp"],
}
"""The three methods of the paper's Figure 4, as config overrides."""
TARGET_FLOOR_PAIRS = 20
"""Floor pairs of the benchmarks whose ratio to the floor decides a target (Table 1, fewer steps): a
5-pair floor of 10K toy draws has a standard error of 13-18%, more than a 1.10x target tolerates."""
LABELS = {"ddpm": "DDPM", "sft-gp": "SFT (GP)", "sft-pg-gp": "SFT-PG (GP)", "sft-pg-b": "SFT-PG (B)"}


def toy_config(data: str, T: int, pretrain_steps: int, extra: list[str] = (), schedule: str = "sigmoid") -> Config:
    return load_config(
        None,
        [
            f"data.name={data}",
            f"schedule.kind={schedule}",
            f"schedule.T={T}",
            f"pretrain.steps={pretrain_steps}",
            "pretrain.batch_size=256",
            f"pretrain.log_every={max(1, pretrain_steps // 20)}",
            f"pretrain.checkpoint_every={pretrain_steps}",
            *extra,
        ],
    )


def pretrained(config: Config, progress: bool = False) -> tuple[Pretrained, float]:
    """The DDPM of ``config`` (data, schedule, model, pretrain sections), trained once and cached,
    and its pretraining seconds."""
    key = json.dumps(
        {s: to_dict(getattr(config, s)) for s in ("data", "schedule", "model", "pretrain")}, sort_keys=True
    )
    path = CACHE / ("pretrain-" + hashlib.sha1(key.encode()).hexdigest()[:12])
    checkpoint = path / "checkpoints" / "pretrain.safetensors"
    if not checkpoint.is_file():
        run = Run(path, config, "pretrain").start()
        pretrain(config, run, progress=progress)
    model = load_pretrained(checkpoint)
    return model, float(model.meta.get("seconds", 0.0))


def evaluator(config: Config, n: int, repeats: int) -> Evaluator:
    cfg = dataclasses.replace(config.evaluate, n_samples=n, repeats=repeats)
    return Evaluator(DataSource(config.data), cfg)


def score(model, table: StepTable, config: Config, n: int, repeats: int = 1) -> tuple[torch.Tensor, dict]:
    """Samples of ``table`` (first repeat) and their scores, mean and sd over ``repeats`` draws, beside the floor."""
    network = model.model if isinstance(model, Pretrained) else model
    return evaluate_sampler(network, table, evaluator(config, n, repeats))


def run_finetune(
    config: Config, model: Pretrained, workdir: Path, progress: bool = False, table: StepTable | None = None
) -> tuple[Finetuned, list[dict], float]:
    """Fine-tune a copy of ``model`` in run directory ``workdir``; return the result, the logged
    held-out evaluations and the wall-clock seconds of the whole call."""
    import copy

    run = Run(workdir, config, "finetune").start()
    started = time.time()
    result = finetune(config, run, copy.deepcopy(model), table=table, progress=progress)
    wall = time.time() - started
    curve = [r for r in run.metrics("finetune") if r.get("eval_n")]
    return result, curve, wall


def pooled(results: list[dict]) -> dict:
    """Scores of S fine-tuning runs (training seeds), each over the same R draws, as one result.

    ``model`` is the mean over all S x R figures, ``model_sd`` their standard deviation (within-run
    draws and between runs together), ``model_seed_sd`` the standard deviation of the S runs' means:
    the spread a change of training seed alone brings, against which a change of settings is judged.
    """
    S, R = len(results), results[0]["repeats"]
    mean, seed_sd = mean_sd([r["model"] for r in results])
    sd = {}
    for k, m in mean.items():
        spread = sum((R - 1) * r["model_sd"][k] ** 2 + R * (r["model"][k] - m) ** 2 for r in results)
        sd[k] = math.sqrt(spread / (S * R - 1)) if S * R > 1 else 0.0
    draws = [r["draws"] for r in results]
    return {**results[0], "model": mean, "model_sd": sd, "model_seed_sd": seed_sd, "seeds": S, "draws_by_seed": draws}


def finetune_seeds(config: Config, model: Pretrained, seeds: int, n: int, repeats: int, progress: bool = False):
    """Fine-tune ``model`` once per training seed (``config.seed``, +1, ...) and score each run.

    Returns the first run's samples, the pooled result (:func:`pooled`) and one dict per run (its
    ``Finetuned``, held-out curve, wall-clock seconds and own result).
    """
    runs = []
    for offset in range(seeds):
        run_config = dataclasses.replace(config, seed=config.seed + offset)
        with tempfile.TemporaryDirectory() as tmp:
            tuned, curve, wall = run_finetune(run_config, model, Path(tmp), progress)
        samples, result = score(tuned.model, tuned.table, run_config, n, repeats)
        runs.append({"tuned": tuned, "curve": curve, "wall": wall, "result": result, "samples": samples})
    return runs[0]["samples"], pooled([r["result"] for r in runs]), runs


def per_seed(runs: list[dict], extra: Callable[[dict], dict] | None = None) -> list[dict]:
    """The per-run figures a JSON row keeps: W2, precision, recall, training seconds, and ``extra(run)``."""
    return [
        {
            "seed_offset": i,
            **{k: r["result"]["model"][k] for k in ("w2", "sw2", "precision", "recall")},
            "seconds": r["tuned"].result.seconds,
            **(extra(r) if extra else {}),
        }
        for i, r in enumerate(runs)
    ]


def mean_or_none(values: list) -> float | None:
    """The mean, or None when some run never got there."""
    return None if any(v is None for v in values) else sum(values) / len(values)


def seconds_to_reach(curve: list[dict], key: str, target: float) -> float | None:
    """Training wall-clock at the first evaluation with ``key`` <= target (None if never)."""
    return next((r["seconds"] for r in curve if r.get(key) is not None and r[key] <= target), None)


def row(method: str, data: str, steps: int, result: dict, **extra) -> dict:
    """A JSON row: every metric's mean and sd, the floor's, the sample count and repeats."""
    return {
        "method": method,
        "data": data,
        "steps": steps,
        **result["model"],
        **{f"{k}_sd": v for k, v in result["model_sd"].items()},
        **{f"{k}_seed_sd": v for k, v in result.get("model_seed_sd", {}).items()},
        "seeds": result.get("seeds", 1),
        "floor": result["floor"],
        "floor_sd": result["floor_sd"],
        "floor_repeats": result["floor_repeats"],
        "n": result["n"],
        "repeats": result["repeats"],
        # per training seed, per draw; draw r shares its data draw with floor pair r
        "w2_draws": [[d["w2"] for d in seed] for seed in result.get("draws_by_seed", [result.get("draws", [])])],
        "floor_w2_draws": [d["w2"] for d in result.get("floor_draws", [])],
        **extra,
    }


def paired(first: list[list[float]], second: list[list[float]] | list[float], factor: float = 1.0) -> dict:
    """``first - factor * second`` on the draws they share, one difference per data draw.

    Each argument holds per-draw figures, a list per training seed (or one flat list, as a floor's);
    draw r of either was scored against the same data draw, so subtracting per draw removes the data
    draw's own spread, the largest part of a toy W2's spread (the swiss roll's floor ranges 0.017-0.029
    over pairs). Seeds are averaged per draw first. Returns the mean difference, its standard error
    over the R shared draws, ``t`` (mean / se) and ``R``.
    """

    def per_draw(values):
        rows = values if values and isinstance(values[0], list) else [values]
        R = min(len(r) for r in rows)
        return [sum(r[i] for r in rows) / len(rows) for i in range(R)]

    a, b = per_draw(first), per_draw(second)
    diffs = [x - factor * y for x, y in zip(a, b)]
    R = len(diffs)
    mean = sum(diffs) / R
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (R - 1) / R) if R > 1 else float("nan")
    return {"mean": mean, "se": se, "t": mean / se if se > 0 else float("nan"), "R": R, "factor": factor}


def write_results(out: Path, rows: list[dict], **extra) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, **extra}, indent=2, default=float))


def _pm(r: dict, key: str, scale: float = 1.0) -> str:
    value, sd = r.get(key), r.get(f"{key}_sd")
    if value is None:
        return ""
    several = r.get("repeats", 1) * r.get("seeds", 1) > 1
    text = f"{scale * value:.2f}" + (f" +- {scale * sd:.2f}" if sd and several else "")
    if r.get("seeds", 1) > 1 and key == "w2":  # the spread of the training runs' means, on its own
        text += f" (seeds: +- {scale * r[f'{key}_seed_sd']:.2f})"
    return text


def print_table(rows: list[dict], title: str = "", paper: dict | None = None) -> None:
    """A Markdown table (W2 and sliced W2 in units of 1e-2, precision/recall) with each data set's floor."""
    if title:
        print(f"\n{title}")
    print("| method | data | steps | W2 (x1e-2) | sliced W2 (x1e-2) | precision | recall | paper (x1e-2) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    floors = {}
    for r in rows:
        paper = paper or {}
        ref = paper.get((r["method"], r["steps"], r["data"]), paper.get((r["method"], r["steps"]), ""))
        seconds = f"{r['seconds']:.0f}" if r.get("seconds") else ""
        print(
            f"| {LABELS.get(r['method'], r['method'])} | {r['data']} | {r['steps']} | {_pm(r, 'w2', 100)} | "
            f"{_pm(r, 'sw2', 100)} | {_pm(r, 'precision')} | {_pm(r, 'recall')} | {ref} | {seconds} |"
        )
        floors[r["data"]] = r
    for data, r in floors.items():
        pairs = r["floor_repeats"]
        floor = {**r["floor"], **{f"{k}_sd": v for k, v in r["floor_sd"].items()}, "repeats": pairs}
        print(
            f"| noise floor (two data draws, {pairs} pairs) | {data} | | {_pm(floor, 'w2', 100)} | "
            f"{_pm(floor, 'sw2', 100)} | {_pm(floor, 'precision')} | {_pm(floor, 'recall')} | | |"
        )


def base_parser(description: str, out: str, iterations: int, floor_repeats: int = 0) -> argparse.ArgumentParser:
    """Arguments every toy SFT benchmark takes; ``floor_repeats`` is the default of ``--floor-repeats``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(out), help="JSON output; the PNG figure goes beside it")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=20_000,
        help="DDPM pretraining steps at batch 256 (paper: 2000 epochs at 64)",
    )
    p.add_argument("--iterations", type=int, default=iterations, help="outer iterations of Algorithm 1")
    p.add_argument("--n-samples", type=int, default=10_000, help="samples of each final evaluation (paper: 10K)")
    p.add_argument("--repeats", type=int, default=5, help="independent draws (sample seed, data draw) per figure")
    p.add_argument(
        "--floor-repeats",
        type=int,
        default=floor_repeats,
        help="independent data pairs of each noise floor, at least --repeats (0: as many as --repeats); 5 pairs of "
        "10K toy draws leave the floor a standard error of 13-18%%, more than a target of 1.10x the floor tolerates",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config overrides for fine-tuning",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (numbers meaningless)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    return p


def target_parser(
    description: str, out: str, data: tuple[str, ...] = ("swiss_roll", "moons")
) -> argparse.ArgumentParser:
    """:func:`base_parser` of a benchmark whose floors decide a target: the default fine-tuning iterations,
    ``TARGET_FLOOR_PAIRS`` floor pairs, and ``--data``."""
    parser = base_parser(description, out, FinetuneConfig().iterations, floor_repeats=TARGET_FLOOR_PAIRS)
    parser.add_argument("--data", nargs="+", default=list(data), help="data sets")
    return parser


def add_seeds(parser: argparse.ArgumentParser, default: int = 3) -> None:
    """``--seeds``: fine-tuning runs per figure (see :func:`finetune_seeds`)."""
    parser.add_argument(
        "--seeds",
        type=int,
        default=default,
        help="fine-tuning runs per figure, one per training seed, each scored over --repeats draws (one run is not "
        "a measurement either: on the moons at T = 10, 3000 iterations, three seeds gave W2 1.81, 1.92 and 2.17e-2)",
    )


def budget(args) -> dict:
    """Scale the budget down for --quick and describe it (printed and stored in the JSON)."""
    if args.quick:
        args.pretrain_steps, args.iterations, args.n_samples, args.repeats, args.floor_repeats = 300, 20, 1000, 2, 2
    torch.set_num_threads(1)  # small MLPs: threads only add overhead (see Config.threads)
    info = {
        "pretrain_steps": args.pretrain_steps,
        "pretrain_batch": 256,
        "iterations": args.iterations,
        "n_samples": args.n_samples,
        "repeats": args.repeats,
        "floor_repeats": args.floor_repeats,
        "seeds": getattr(args, "seeds", 1),
        "overrides": args.overrides,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "note": "2-core shared CPU; paper: 2000 pretraining epochs, 300 fine-tuning epochs",
    }
    print("budget:", json.dumps(info), flush=True)
    return info


def floor_override(args) -> str:
    """The config override that gives every noise floor ``--floor-repeats`` data pairs."""
    return f"evaluate.floor_repeats={args.floor_repeats}"


def finetune_overrides(args, extra: list[str] = ()) -> list[str]:
    every = max(1, args.iterations // 12)
    return [
        f"finetune.iterations={args.iterations}",
        f"finetune.eval_every={every}",
        f"finetune.checkpoint_every={args.iterations}",
        floor_override(args),
        *extra,
        *args.overrides,
    ]
