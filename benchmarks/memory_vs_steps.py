"""Peak memory and seconds of one shortcut fine-tuning iteration against the number of steps T.

The paper's case for policy gradient over back-propagating through the chain is memory that does
not grow with the number of steps. For T = 10, 100 and 1000 this measures one iteration of
Algorithm 1 (``fewstep.training.sftpg.iteration``: n_critic rollouts, critic and baseline rounds,
generator steps) in a fresh process, for SFT-PG (B), plain policy gradient without a baseline, and
the pathwise SFT estimator, on the toy MLP (2-D points) and on an MNIST-sized U-Net (1x28x28).
Reported: the extra peak resident memory over the process after building the networks, and the
seconds of the iteration. Weights are random (memory does not depend on them). Pathwise runs whose
linear extrapolation from smaller T exceeds ``--max-gb`` are skipped and say so.

    nice -n 5 python benchmarks/memory_vs_steps.py --out benchmarks/results/memory_vs_steps.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ESTIMATORS = {
    "sft-pg-b": [],
    "pg": ["finetune.estimator=pg"],
    "sft-gp": ["finetune.estimator=pathwise", "finetune.critic_reg=gp"],
}
MODELS = {
    "toy-mlp": ["data.name=moons", "finetune.batch_size=64"],
    "mnist-unet": [
        "model.kind=unet",
        "model.channels=16",
        "finetune.batch_size=16",
        "finetune.n_generator=10",
        "finetune.critic_channels=[32, 64, 128]",
        "finetune.baseline_hidden=[256, 256, 64]",
    ],
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def probe(model: str, estimator: str, T: int) -> dict:
    from fewstep.config import load_config
    from fewstep.models import adam, build_baseline, build_critic, build_eps_model
    from fewstep.samplers import ddpm_table
    from fewstep.schedules import make_schedule
    from fewstep.training.policy import Policy
    from fewstep.training.sftpg import Nets, iteration, make_method

    torch.set_num_threads(1)
    config = load_config(None, ["schedule.kind=linear", f"schedule.T={T}", *MODELS[model], *ESTIMATORS[estimator]])
    shape = (1, 28, 28) if model == "mnist-unet" else (2,)
    torch.manual_seed(0)
    cfg = config.finetune
    table = ddpm_table(make_schedule("linear", T), variance="beta", noise_at_last_step=True)
    policy = Policy(build_eps_model(config.model, shape).eval(), table)
    critic, baseline = build_critic(cfg, shape), build_baseline(cfg, shape, config.model.time_dim)
    nets = Nets(
        policy,
        critic,
        baseline,
        adam(policy.parameters(), 1e-6),
        adam(critic.parameters(), 1e-4),
        adam(baseline.parameters(), 1e-4),
    )
    real = torch.randn(512, *shape).clamp(-1, 1)
    random = torch.Generator().manual_seed(0)

    def draw_real(m):
        return real[torch.randint(0, len(real), (m,), generator=random)]

    before = rss_mb()
    started = time.perf_counter()
    iteration(nets, make_method(cfg), cfg, draw_real, shape, random, "cpu")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model,
        "estimator": estimator,
        "T": T,
        "seconds": round(seconds, 3),
        "extra_peak_mb": round(max(peak - before, 0.0), 1),
        "m": cfg.batch_size,
        "n_critic": cfg.n_critic,
        "n_generator": cfg.n_generator,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_vs_steps.json"))
    p.add_argument("--T", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--max-gb", type=float, default=12.0, help="skip runs extrapolated beyond this memory")
    p.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], args.probe[1], int(args.probe[2]))))
        return
    rows = []
    for model in args.models:
        for estimator in ESTIMATORS:
            done = []
            for T in args.T:
                if len(done) >= 2:  # linear extrapolation from the last two sizes
                    (t1, m1), (t2, m2) = done[-2:]
                    guess = m2 + (m2 - m1) / (t2 - t1) * (T - t2)
                    if guess > 1024 * args.max_gb:
                        rows.append(
                            {
                                "model": model,
                                "estimator": estimator,
                                "T": T,
                                "skipped": f"extrapolated to {guess / 1024:.0f} GB (> {args.max_gb} GB)",
                            }
                        )
                        print(json.dumps(rows[-1]), flush=True)
                        continue
                cmd = [sys.executable, __file__, "--probe", model, estimator, str(T)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    rows.append(
                        {
                            "model": model,
                            "estimator": estimator,
                            "T": T,
                            "skipped": f"failed: {out.stderr.strip().splitlines()[-1][:200]}",
                        }
                    )
                else:
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    done.append((T, rows[-1]["extra_peak_mb"]))
                print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"rows": rows, "note": "fresh process per run, 1 thread, shared 2-core CPU"}, indent=2)
    )
    print("\n| model | estimator | T | extra peak MB | seconds / iteration |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['model']} | {r['estimator']} | {r['T']} | skipped: {r['skipped']} | |")
        else:
            print(f"| {r['model']} | {r['estimator']} | {r['T']} | {r['extra_peak_mb']:.0f} | {r['seconds']:.2f} |")
    plot(rows, args.out.with_suffix(".png"))


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for estimator in ESTIMATORS:
            picked = [r for r in rows if r["model"] == model and r["estimator"] == estimator and "skipped" not in r]
            if picked:
                ax.plot(
                    [r["T"] for r in picked], [max(r["extra_peak_mb"], 1) for r in picked], marker="o", label=estimator
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("steps T")
        ax.set_ylabel("extra peak memory of one iteration (MB)")
        ax.set_title(model)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
