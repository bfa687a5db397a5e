"""The shape of the paper's Table 3 (Section 6.3) on MNIST at a CPU budget.

A U-Net DDPM with T = 1000 (linear schedule) is pretrained and sampled with: all 1000 steps; naive
10-step DDPM sub-sampling; 10 FastDPM steps (VAR approximation, DDPM reverse process, as the
paper's initialisation, App. F.2); and the same 10 steps fine-tuned by SFT-PG (B) (lambda = 1,
n_critic = 5, n_generator = 10, gamma = 0.1). Policy-gradient fine-tuning needs a density at every
step, so the fine-tuned sampler adds noise of std sqrt(beta) at the last step (FastDPM's own last
step is deterministic); both variants of FastDPM are reported. The paper's generator lr is 1e-6 for
100 epochs; this benchmark uses 2e-6 for 400 iterations (n_generator = 10 steps each), and stores the
FID every 50 iterations ("curve"). Target: the fine-tuned 10-step FID
at or below the 1000-step model's.

Memory: rollouts are collected without gradient and the generator update back-propagates one step
at a time, so an SFT-PG iteration's peak memory does not grow with the number of steps T'; the
benchmark measures it in fresh processes at T' = 10 and 20 (and, for contrast, the pathwise SFT
estimator that back-propagates through the whole chain).

    python benchmarks/mnist_table3.py            # 10 to 20 minutes on one CPU core
    python benchmarks/mnist_table3.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_common import features_for, fid_monitor, peak_rss_mb, prepare_data, pretrained, row, score, sft_pg, write  # noqa: E402

from fewstep.schedules import make_schedule  # noqa: E402
from fewstep.samplers.fastdpm import fastdpm_table  # noqa: E402
from fewstep.steps import StepTable, ddpm_table  # noqa: E402


def with_last_step_noise(table: StepTable) -> StepTable:
    """The same table with std sqrt(1 - alpha_bar) = sqrt(beta) at its (deterministic) last step."""
    s = table.s.clone()
    s[-1] = (1.0 - table.alpha_bar[-1]).sqrt()
    return dataclasses.replace(
        table, name=table.name + "+last-noise", s=s, settings={**table.settings, "noise_at_last_step": True}
    )


def fastdpm(schedule, K: int, kind: str) -> StepTable:
    return fastdpm_table(schedule, K, approach="VAR", kind=kind, kappa=1.0, reverse="ddpm")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (4096 / 2**20)


def memory_probe(work: Path, budget: dict, K: int, estimator: str) -> dict:
    """One SFT-PG iteration (n_critic = 5, n_generator = 10) at T' = K in this fresh process: the
    peak resident memory above the resident memory after loading the data and the model."""
    train_x, _, _ = prepare_data(work, budget["image_size"])
    model, _, _ = pretrained(
        work, budget["image_size"], 1000, budget["pretrain_steps"], budget["batch"], budget["channels"]
    )
    table = with_last_step_noise(fastdpm(make_schedule("linear", 1000), K, budget["fastdpm_kind"]))
    before = current_rss_mb()
    sft_pg(
        model,
        table,
        train_x,
        1,
        budget["critic_widths"],
        budget["baseline_hidden"],
        progress=False,
        batch_size=budget["m"],
        n_critic=5,
        n_generator=10,
        estimator=estimator,
    )
    return {"steps": K, "estimator": estimator, "peak_mb_above_setup": round(peak_rss_mb() - before, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test); results go to *_quick files")
    parser.add_argument(
        "--work", default="runs/bench-mnist", help="work directory (data splits, checkpoints, classifier)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine)"
    )
    parser.add_argument("--memory-probe", nargs=2, metavar=("K", "ESTIMATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = dict(
        image_size=8,
        n_train=8000,
        n_heldout=2000,
        channels=16,
        pretrain_steps=3000,
        batch=64,
        T=1000,
        fastdpm_kind="quadratic",
        finetune_iterations=400,
        monitor_every=50,
        m=64,
        lr_generator=2e-6,
        lr_critic=2e-4,
        lr_baseline=2e-4,
        critic_widths=[64, 128, 256],
        baseline_hidden=[512, 512, 128],
        n_eval=500,
    )
    if args.quick:
        budget.update(pretrain_steps=20, finetune_iterations=2, m=16, n_eval=100)
    work = Path(args.work) / f"s{budget['image_size']}"
    if args.memory_probe:
        print(json.dumps(memory_probe(work, budget, int(args.memory_probe[0]), args.memory_probe[1])))
        return

    train_x, train_y, test_x = prepare_data(work, budget["image_size"])
    features = features_for(work, train_x, train_y)
    shape = tuple(train_x.shape[1:])
    model, _, pre_seconds = pretrained(
        work, budget["image_size"], 1000, budget["pretrain_steps"], budget["batch"], budget["channels"]
    )
    schedule = make_schedule("linear", 1000)
    n = budget["n_eval"]
    rows, panels = [], [("held-out data", test_x[:64])]

    def evaluate(name: str, table: StepTable, model=model, **extra):
        samples, result, seconds = score(model, table, n, shape, test_x, features)
        rows.append(row(name, table.K, result, seconds, **extra))
        panels.append((f"{name}\nFID {result['model']['fid']:.3f}", samples[:64]))
        print(f"{name}: FID {result['model']['fid']:.4f} (floor {result['floor']['fid']:.4f})", flush=True)
        return result

    full = ddpm_table(schedule, None, variance="beta")
    floor = evaluate("DDPM, 1000 steps", full, train_seconds=pre_seconds and round(pre_seconds, 1))["floor"]
    evaluate(
        "DDPM sub-sampled, 10 steps", ddpm_table(schedule, torch.linspace(0, 999, 10).round().long(), variance="beta")
    )
    init = fastdpm(schedule, 10, budget["fastdpm_kind"])
    evaluate(f"FastDPM (VAR {budget['fastdpm_kind']}, DDPM-rev), 10 steps", init)
    init = with_last_step_noise(init)
    evaluate("FastDPM + last-step noise (fine-tuning init)", init)
    monitor = fid_monitor(init, n, shape, test_x, features)
    tuned, train_seconds, curve = sft_pg(
        copy.deepcopy(model),
        init,
        train_x,
        budget["finetune_iterations"],
        budget["critic_widths"],
        budget["baseline_hidden"],
        batch_size=budget["m"],
        n_critic=5,
        n_generator=10,
        clip=0.1,
        monitor=monitor,
        monitor_every=budget["monitor_every"],
        lam=1.0,
        lr_generator=budget["lr_generator"],
        lr_critic=budget["lr_critic"],
        lr_baseline=budget["lr_baseline"],
    )
    evaluate("SFT-PG (B) from FastDPM, 10 steps", init, model=tuned, train_seconds=round(train_seconds, 1), curve=curve)

    memory = []
    for estimator in ("pg_baseline", "pathwise"):
        for K in (10, 20):
            cmd = [
                sys.executable,
                __file__,
                "--work",
                args.work,
                "--threads",
                str(args.threads),
                "--memory-probe",
                str(K),
                estimator,
            ]
            cmd += ["--quick"] if args.quick else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            memory.append(json.loads(out))
            print(
                f"peak memory of one iteration, {estimator}, T'={K}: {memory[-1]['peak_mb_above_setup']} MB", flush=True
            )
    write("mnist_table3" + ("_quick" if args.quick else ""), budget, floor, rows, panels, extra={"memory": memory})


if __name__ == "__main__":
    main()
