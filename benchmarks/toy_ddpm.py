"""DDPM baselines of the SFT-PG paper's Table 1 (issue 2): swiss roll, sigmoid schedule, T = 10, 100, 1000.

For each T a DDPM is pretrained with ``fewstep.pretrain.pretrain`` (epsilon loss, EMA) and its
ancestral sampler (the config's default: Sigma = beta, noise at every step, all T steps) is scored
with ``fewstep.evaluation.evaluate_samples``: exact W2 (POT network simplex) and sliced W2 (100
projections) of 10K samples against 10K fresh data points, beside the noise floor (the same metrics
between two independent 10K draws of the data).

The paper trained each DDPM for 2000 epochs at batch 64 (20M examples); the default budget here is
``--steps`` 20000 Adam steps at batch 256 (5.1M examples, ~2/7 of the paper's) so that the whole
benchmark runs in about 10 minutes on a shared 2-core CPU. The budget is printed and recorded.

JSON (metrics in data units): {"floor": {"w2", "sw2"}, "rows": [{"method": "ddpm", "steps": T, "w2",
"sw2", "seconds" (drawing the samples), "pretrain_seconds", "evaluate_seconds", "final_loss"}],
"paper_x1e-2", "budget"}.

    nice -n 10 python benchmarks/toy_ddpm.py --out benchmarks/results/toy_ddpm.json
    python benchmarks/toy_ddpm.py --quick --out /tmp/toy_ddpm.json      # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fewstep.config import load_config
from fewstep.data import DataSource
from fewstep.evaluation import evaluate_samples
from fewstep.plots import scatter
from fewstep.pretrain import pretrain
from fewstep.rollout import sample
from fewstep.runs import Run
from fewstep.schedules import make_schedule
from fewstep.steps import table_from_config

PAPER_X1E2 = {10: 8.29, 100: 2.36, 1000: 1.78}  # Table 1, "W2 (x1e-2)", DDPM rows
PAPER_EXAMPLES = 2000 * 10_000  # 2000 epochs of the 10K-point training set (App. F.1)


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/toy_ddpm.json"), help="JSON output; the PNG goes beside it"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="pretraining Adam steps per DDPM (default 20000; 300 with --quick)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="pretraining batch size (paper: 64)")
    p.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="generated and data points compared (default 10000; 2000 with --quick)",
    )
    p.add_argument("--T", type=int, nargs="+", default=[10, 100, 1000], help="diffusion steps of the DDPMs")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (numbers meaningless)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    return p.parse_args()


def main():
    args = parse_args()
    steps = args.steps or (300 if args.quick else 20_000)
    n = args.n_samples or (2_000 if args.quick else 10_000)
    budget = {
        "pretrain_steps": steps,
        "batch_size": args.batch_size,
        "examples": steps * args.batch_size,
        "paper_examples": PAPER_EXAMPLES,
        "n_samples": n,
        "quick": args.quick,
    }
    print(
        f"budget: {steps} pretraining steps x batch {args.batch_size} = {steps * args.batch_size / 1e6:.2f}M examples "
        f"per DDPM (paper: 2000 epochs = {PAPER_EXAMPLES / 1e6:.0f}M); {n} samples per evaluation",
        flush=True,
    )

    rows, floors, panels = [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        for T in args.T:
            config = load_config(
                None,
                [
                    "data.name=swiss_roll",
                    "schedule.kind=sigmoid",
                    f"schedule.T={T}",
                    f"pretrain.steps={steps}",
                    f"pretrain.batch_size={args.batch_size}",
                    f"pretrain.log_every={max(1, steps // 20)}",
                    f"pretrain.checkpoint_every={steps}",
                    f"evaluate.n_samples={n}",
                ],
            )
            run = Run(Path(workdir) / f"T{T}", config)
            started = time.time()
            model = pretrain(config, run, progress=args.progress)
            pretrain_seconds = time.time() - started
            table = table_from_config(config, make_schedule(config.schedule.kind, T))
            data = DataSource(config.data)
            started = time.time()
            samples = sample(model, table, n, data.shape, seed=config.evaluate.seed, progress=args.progress)
            seconds = time.time() - started
            started = time.time()
            result = evaluate_samples(samples, config, data)
            eval_seconds = time.time() - started
            final_loss = run.metrics("pretrain")[-1]["loss"]
            m = result["model"]
            rows.append(
                {
                    "method": "ddpm",
                    "steps": T,
                    "w2": m["w2"],
                    "sw2": m["sw2"],
                    "seconds": seconds,
                    "pretrain_seconds": pretrain_seconds,
                    "evaluate_seconds": eval_seconds,
                    "final_loss": final_loss,
                }
            )
            floors.append(result["floor"])
            panels.append((f"DDPM T={T}\nW2 {100 * m['w2']:.2f}, sliced W2 {100 * m['sw2']:.2f}", samples))
            print(
                f"T={T}: W2 {m['w2']:.5f}, sliced W2 {m['sw2']:.5f}, final loss {final_loss:.4f}, "
                f"pretrain {pretrain_seconds:.0f} s, sampling {seconds:.1f} s, metrics {eval_seconds:.0f} s",
                flush=True,
            )
            del model

    # every evaluation uses the same seeds, so the floors must coincide
    assert all(f == floors[0] for f in floors), floors
    floor = floors[0]
    print_table(rows, floor, budget)
    out = {
        "floor": floor,
        "rows": rows,
        "paper_x1e-2": {str(k): v for k, v in PAPER_X1E2.items()},
        "budget": budget,
        "sampler": "ancestral DDPM, Sigma = beta, noise at every step (sampler.* defaults)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    data = DataSource(config.data).draw(n, config.evaluate.seed)
    floor_text = f" (x1e-2)\nnoise floor: W2 {100 * floor['w2']:.2f}, sliced W2 {100 * floor['sw2']:.2f}"
    scatter([(title + floor_text, x) for title, x in panels], data, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def print_table(rows, floor, budget):
    print()
    print(
        f"DDPM on the swiss roll, sigmoid schedule, {budget['n_samples']} samples; "
        f"pretraining {budget['pretrain_steps']} steps x batch {budget['batch_size']} (paper: 2000 epochs x batch 64)"
    )
    print(f"{'':12}{'W2 (x1e-2)':>12}{'sliced W2 (x1e-2)':>20}{'paper (x1e-2)':>16}{'sample s':>10}")
    for r in rows:
        paper = PAPER_X1E2.get(r["steps"])
        print(
            f"{'DDPM T=' + str(r['steps']):12}{100 * r['w2']:12.2f}{100 * r['sw2']:20.2f}"
            f"{paper if paper is not None else float('nan'):16.2f}{r['seconds']:10.1f}"
        )
    print(f"{'noise floor':12}{100 * floor['w2']:12.2f}{100 * floor['sw2']:20.2f}{'':16}{'':10}")


if __name__ == "__main__":
    torch.set_num_threads(1)  # small MLPs: one thread is fastest on a busy 2-core machine
    main()
