"""Shared plumbing of the toy shortcut-fine-tuning benchmarks (issue 3).

Pretrained DDPMs are cached under ``benchmarks/.cache/`` (keyed by their config) so that the
Table 1, Figure 4 and fewer-steps benchmarks share them; every number is still produced by the
library's own ``pretrain``, ``finetune`` and ``evaluate_samples``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import torch

from fewstep.config import Config, load_config, to_dict
from fewstep.data import DataSource
from fewstep.evaluation import evaluate_samples
from fewstep.finetune import finetune
from fewstep.models import load_model
from fewstep.pretrain import pretrain
from fewstep.rollout import sample
from fewstep.runs import Run
from fewstep.schedules import make_schedule
from fewstep.steps import StepTable, table_from_config

CACHE = Path(__file__).parent / ".cache"

VARIANTS = {
    "sft-pg-b": [],
    "sft-pg-gp": ["finetune.critic_reg=gp"],
    "sft-gp": ["finetune.estimator=pathwise", "finetune.critic_reg=gp"],
}
"""The three methods of the paper's Figure 4, as config overrides."""


def toy_config(data: str, T: int, pretrain_steps: int, extra: list[str] = ()) -> Config:
    return load_config(
        None,
        [
            f"data.name={data}",
            "schedule.kind=sigmoid",
            f"schedule.T={T}",
            f"pretrain.steps={pretrain_steps}",
            "pretrain.batch_size=256",
            f"pretrain.log_every={max(1, pretrain_steps // 20)}",
            f"pretrain.checkpoint_every={pretrain_steps}",
            *extra,
        ],
    )


def pretrained(config: Config, progress: bool = False) -> tuple[torch.nn.Module, float]:
    """The DDPM of ``config`` (data, schedule, model, pretrain sections), trained once and cached."""
    key = json.dumps(
        {s: to_dict(getattr(config, s)) for s in ("data", "schedule", "model", "pretrain")}, sort_keys=True
    )
    path = CACHE / hashlib.sha1(key.encode()).hexdigest()[:12]
    checkpoint = path / "checkpoints" / "pretrain.safetensors"
    if checkpoint.is_file():
        model, _, meta = load_model(checkpoint)
        return model, meta.get("seconds", 0.0)
    started = time.time()
    model = pretrain(config, Run(path, config), progress=progress)
    seconds = time.time() - started
    from fewstep.models import save_model

    save_model(
        checkpoint,
        model,
        config,
        DataSource(config.data).shape,
        "pretrain",
        extra_meta={"step": config.pretrain.steps, "seconds": seconds},
    )
    return model, seconds


def score(
    model: torch.nn.Module, table: StepTable, config: Config, n: int, seed: int = 12_345
) -> tuple[torch.Tensor, dict]:
    """Samples of ``table`` and their W2 / sliced W2 against fresh data, with the noise floor."""
    data = DataSource(config.data)
    samples = sample(model, table, n, data.shape, seed=seed)
    cfg = copy.deepcopy(config)
    cfg.evaluate.n_samples, cfg.evaluate.seed = n, seed
    return samples, evaluate_samples(samples, cfg, data)


def run_finetune(config: Config, model: torch.nn.Module, workdir: Path, progress: bool = False):
    """Fine-tune a copy of ``model``; return it, its table and the logged W2 curve."""
    run = Run(workdir, config)
    table = table_from_config(config, make_schedule(config.schedule.kind, config.schedule.T))
    tuned, table = finetune(config, run, copy.deepcopy(model), progress=progress, table=table)
    curve = [r for r in run.metrics("finetune") if "w2" in r]
    return tuned, table, curve


def seconds_to_reach(curve: list[dict], target: float) -> float | None:
    """Training wall-clock at the first evaluation with W2 <= target (None if never)."""
    return next((r["seconds"] for r in curve if r["w2"] <= target), None)


def write_results(out: Path, floor: dict, rows: list[dict], **extra) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"floor": floor, "rows": rows, **extra}, indent=2))


def print_table(rows: list[dict], floor: dict, paper: dict | None = None, title: str = "") -> None:
    """A Markdown table of rows (W2 and sliced W2 in units of 1e-2) with the noise floor."""
    if title:
        print(f"\n{title}")
    head = "| method | data | steps | W2 (x1e-2) | sliced W2 (x1e-2) | paper W2 (x1e-2) | seconds |"
    print(head + "\n|" + "---|" * 7)
    for r in rows:
        ref = (paper or {}).get((r["method"], r["steps"]), "")
        print(
            f"| {r['method']} | {r.get('data', '')} | {r['steps']} | {100 * r['w2']:.2f} | "
            f"{100 * r['sw2']:.2f} | {ref} | {r['seconds']:.0f} |"
        )
    print(f"| noise floor (two data draws) | | | {100 * floor['w2']:.2f} | {100 * floor['sw2']:.2f} | | |")


def base_parser(description: str, out: str, iterations: int):
    """Arguments every toy SFT benchmark takes."""
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(out), help="JSON output; the PNG figure goes beside it")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=20_000,
        help="DDPM pretraining steps at batch 256 (paper: 2000 epochs at 64)",
    )
    p.add_argument("--iterations", type=int, default=iterations, help="outer iterations of Algorithm 1")
    p.add_argument("--n-samples", type=int, default=10_000, help="samples of the final evaluation (paper: 10K)")
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


def budget(args) -> dict:
    """Scale the budget down for --quick and describe it (printed and stored in the JSON)."""
    if args.quick:
        args.pretrain_steps, args.iterations, args.n_samples = 300, 20, 1000
    torch.set_num_threads(1)  # small MLPs: threads only add overhead (see Config.threads)
    info = {
        "pretrain_steps": args.pretrain_steps,
        "pretrain_batch": 256,
        "iterations": args.iterations,
        "n_samples": args.n_samples,
        "overrides": args.overrides,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "note": "2-core shared CPU; paper: 2000 pretraining epochs, 300 fine-tuning epochs",
    }
    print("budget:", json.dumps(info), flush=True)
    return info


def finetune_overrides(args, extra: list[str] = ()) -> list[str]:
    every = max(1, args.iterations // 12)
    return [
        f"finetune.iterations={args.iterations}",
        f"finetune.eval_every={every}",
        f"finetune.checkpoint_every={args.iterations}",
        *extra,
        *args.overrides,
    ]
