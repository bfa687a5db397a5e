"""The shape of the paper's Table 2 (Section 6.2.3) on MNIST at a CPU budget.

A U-Net DDPM with T = 10 (App. F.2; cosine schedule, since the linear 1e-4..0.02 betas of Ho et al.
leave alpha_bar = 0.9 after 10 steps, far from noise) is pretrained, then fine-tuned with SFT-PG (B) (Algorithm 1,
baseline regulariser, lambda = 1, n_critic = 5) with n_generator = 1, and with n_generator = 5 and
gradient clipping gamma in {10, 1, 0.1, 0.001}. Each run starts from the same pretrained weights
and is scored by FID/KID on classifier features (and W2 on pixels) against held-out digits,
beside the noise floor. The paper fine-tunes for 100 epochs at lr 1e-6 on 60K 28x28 digits; this
benchmark runs 150 iterations at lr 2e-6 on 8x8 digits (the budget is printed and stored; at
1e-4 the 1-step run diverged to FID > 3000, at 1e-5 the 5-step runs passed FID ~1100).
FID during fine-tuning is stored per row ("curve"); the table reports the final iterate.

    python benchmarks/mnist_table2.py            # about 15 minutes on one CPU core
    python benchmarks/mnist_table2.py --quick    # smoke test, about a minute
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_common import features_for, fid_monitor, prepare_data, pretrained, row, score, sft_pg, write  # noqa: E402

from fewstep.schedules import make_schedule  # noqa: E402
from fewstep.steps import ddpm_table  # noqa: E402

SETTINGS = [
    ("1 step (no clipping)", 1, None),
    ("5 steps, gamma=10", 5, 10.0),
    ("5 steps, gamma=1", 5, 1.0),
    ("5 steps, gamma=0.1", 5, 0.1),
    ("5 steps, gamma=0.001", 5, 0.001),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test); results go to *_quick files")
    parser.add_argument(
        "--work", default="runs/bench-mnist", help="work directory (data splits, checkpoints, classifier)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = dict(
        image_size=8,
        n_train=8000,
        n_heldout=2000,
        channels=16,
        pretrain_steps=1500,
        batch=64,
        T=10,
        schedule="cosine",
        finetune_iterations=150,
        monitor_every=25,
        m=64,
        lr_generator=2e-6,
        lr_critic=2e-4,
        lr_baseline=2e-4,
        critic_widths=[64, 128, 256],
        baseline_hidden=[512, 512, 128],
        n_eval=1000,
    )
    if args.quick:
        budget.update(pretrain_steps=20, finetune_iterations=2, m=16, n_eval=200)
    work = Path(args.work) / f"s{budget['image_size']}"
    train_x, train_y, test_x = prepare_data(work, budget["image_size"])
    features = features_for(work, train_x, train_y)
    shape = tuple(train_x.shape[1:])
    model, config, pre_seconds = pretrained(
        work,
        budget["image_size"],
        budget["T"],
        budget["pretrain_steps"],
        budget["batch"],
        budget["channels"],
        schedule=budget["schedule"],
    )
    table = ddpm_table(make_schedule(budget["schedule"], budget["T"]), None, variance="beta", noise_at_last_step=True)
    n = budget["n_eval"]
    samples, result, seconds = score(model, table, n, shape, test_x, features)
    floor = result["floor"]
    rows = [
        row("DDPM T=10 (pretrained)", table.K, result, seconds, train_seconds=pre_seconds and round(pre_seconds, 1))
    ]
    panels = [("held-out data", test_x[:64]), (f"pretrained\nFID {result['model']['fid']:.3f}", samples[:64])]
    for name, n_generator, clip in SETTINGS:
        monitor = fid_monitor(table, n, shape, test_x, features)
        tuned, train_seconds, curve = sft_pg(
            copy.deepcopy(model),
            table,
            train_x,
            budget["finetune_iterations"],
            budget["critic_widths"],
            budget["baseline_hidden"],
            batch_size=budget["m"],
            monitor=monitor,
            monitor_every=budget["monitor_every"],
            n_critic=5,
            n_generator=n_generator,
            clip=clip,
            lam=1.0,
            lr_generator=budget["lr_generator"],
            lr_critic=budget["lr_critic"],
            lr_baseline=budget["lr_baseline"],
        )
        samples, result, seconds = score(tuned, table, n, shape, test_x, features)
        rows.append(
            row(
                f"SFT-PG (B), {name}",
                table.K,
                result,
                seconds,
                train_seconds=round(train_seconds, 1),
                n_generator=n_generator,
                gamma=clip,
                curve=curve,
            )
        )
        panels.append((f"{name}\nFID {result['model']['fid']:.3f}", samples[:64]))
        print(f"{name}: FID {result['model']['fid']:.4f} (floor {floor['fid']:.4f})", flush=True)
    write("mnist_table2" + ("_quick" if args.quick else ""), budget, floor, rows, panels)


if __name__ == "__main__":
    main()
