"""The shape of the paper's Table 2 (Section 6.2.3) on 28x28 MNIST, through the command line.

A U-Net DDPM with T = 10 (cosine schedule: the linear 1e-4..0.02 betas of Ho et al. leave
alpha_bar = 0.9 after 10 steps, far from noise) is pretrained with ``fewstep pretrain``, then
fine-tuned with ``fewstep finetune --preset images`` (SFT-PG (B): lambda = 1, n_critic = 5) with
n_generator = 1 (no clipping), and with n_generator = 5 and gradient clipping gamma in
{10, 1, 0.1, 0.001}, each setting from the same pretrained weights with two or more seeds (the
seed sets the critic's initialisation and the rollout noise). Every run scores its final sampler
by FID/KID against held-out digits beside the noise floor (``evaluate.n_samples`` samples), and
logs the FID during training (``evaluate.train_samples`` samples). The table reports the mean and
standard deviation over seeds, so an ordering can be read against the run-to-run spread.

    nice -n 10 python benchmarks/mnist_table2.py                 # about 45 CPU minutes (see the JSON)
    python benchmarks/mnist_table2.py --quick                    # smoke test, a few minutes

Writes benchmarks/results/mnist_table2.json and .png (FID curves, mean +- sd over seeds, floor dashed).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_common import (  # noqa: E402
    RESULTS,
    Commands,
    budget_record,
    curve,
    evaluation,
    pretrain_once,
    row,
    records,
    run_evaluations,
    table_markdown,
    write,
)

SETTINGS = [
    ("1 step (no clipping)", 1, None),
    ("5 steps, gamma=10", 5, 10.0),
    ("5 steps, gamma=1", 5, 1.0),
    ("5 steps, gamma=0.1", 5, 0.1),
    ("5 steps, gamma=0.001", 5, 0.001),
]


def mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("benchmarks/.cache/mnist28"), help="runs, logs, cache")
    p.add_argument("--pretrain-steps", type=int, default=2000)
    p.add_argument("--iterations", type=int, default=40, help="outer iterations of Algorithm 1 per run")
    p.add_argument("--batch-size", type=int, default=32, help="m (the paper: 128)")
    p.add_argument("--lr-generator", type=float, default=1e-5, help="the paper: 1e-6 for 100 epochs")
    p.add_argument("--lr-critic", type=float, default=2e-4, help="critic and baseline (the paper: 1e-4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra --set for every command")
    p.add_argument("--only", type=int, nargs="+", help="run only these settings (0-4, the table's order)")
    p.add_argument("--quick", action="store_true", help="tiny budget; results go to mnist_table2_quick.*")
    args = p.parse_args()
    if args.quick:
        args.work = args.work.with_name(args.work.name + "-quick")
        args.pretrain_steps, args.iterations, args.seeds = 20, 2, [0, 1]
        args.overrides += ["evaluate.n_samples=50", "evaluate.train_samples=20"]
    every = max(1, args.iterations // 4)
    finetune_sets = [
        "sampler.clip_x0=1",  # diffusers' clip_sample: without it the cosine T=10 first step amplifies eps errors 30x
        "finetune.max_kl=0",  # the paper's image settings: no trust region beside gamma
        f"finetune.iterations={args.iterations}",
        f"finetune.batch_size={args.batch_size}",
        "finetune.critic_channels=[32, 64, 128]",
        "finetune.baseline_hidden=[256, 256, 64]",
        f"finetune.lr_generator={args.lr_generator}",
        f"finetune.lr_critic={args.lr_critic}",
        f"finetune.lr_baseline={args.lr_critic}",
        f"finetune.eval_every={every}",
        f"finetune.checkpoint_every={args.iterations}",
        f"finetune.log_every={every}",
    ]
    budget = budget_record(
        args,
        10,
        "cosine",
        finetune_sets,
        "60K digits, 100 fine-tuning epochs at generator lr 1e-6, m = 128, critic 256/512/1024",
        seeds=args.seeds,
    )
    c = Commands(args.work, args.overrides)
    w = c.work
    cosine10 = ["schedule.kind=cosine", "schedule.T=10"]
    pre, ckpt, unclipped = pretrain_once(c, "pretrain-T10", args.pretrain_steps, cosine10)
    rows = [row("DDPM T=10, no x0 clipping", 10, unclipped, cpu_min=round(c.history[-1]["cpu_s"] / 60, 1))]
    out = w / "t2-ddpm10-clip.json"
    c.run(
        "t2-ddpm10-clip",
        ["evaluate", "--checkpoint", str(ckpt), "--set", "sampler.clip_x0=1", "--out", str(out)] + ["--quiet"],
        done=out,
    )
    start = evaluation(out)
    rows.append(
        row("DDPM T=10, clip_x0=1 (the fine-tuning start)", 10, start, cpu_min=round(c.history[-1]["cpu_s"] / 60, 1))
    )
    curves, settings = {}, []
    for i, (name, n_generator, clip) in enumerate(SETTINGS):
        if args.only is not None and i not in args.only:
            continue
        finals, runs = [], []
        for seed in args.seeds:
            budget_tag = f"lr{args.lr_generator:g}-c{args.lr_critic:g}-it{args.iterations}-m{args.batch_size}"
            tag = f"t2-g{n_generator}-clip{clip}-{budget_tag}-s{seed}"
            run_dir = w / tag
            sets = [*finetune_sets, f"seed={seed}", f"finetune.n_generator={n_generator}", f"finetune.clip={clip}"]
            c.run(
                tag,
                ["finetune", "--checkpoint", str(ckpt), "--preset", "images", "--run-dir", str(run_dir), "--quiet"]
                + [x for s in sets for x in ("--set", s.replace("None", "null"))],
                done=run_dir / "summary.md",
                resume=run_dir / "checkpoints" / "finetune.safetensors",
            )
            logged = records(run_dir)
            final = run_evaluations(logged)[-1]
            finals.append(final)
            runs.append({"seed": seed, "fid": round(final["model"]["fid"], 3), "curve": curve(logged)})
            runs[-1]["cpu_min"] = round(c.history[-1]["cpu_s"] / 60, 1)
        fid_mean, fid_sd = mean_sd([f["model"]["fid"] for f in finals])
        kid_mean, kid_sd = mean_sd([f["model"]["kid"] for f in finals])
        r = row(f"SFT-PG (B), {name}", 10, finals[0], n_generator=n_generator, gamma=clip, runs=runs)
        r.update(fid=round(fid_mean, 3), fid_sd=round(fid_sd, 3), kid=round(kid_mean, 4), kid_sd=round(kid_sd, 4))
        r["precision"] = round(sum(f["model"]["precision"] for f in finals) / len(finals), 3)
        r["recall"] = round(sum(f["model"]["recall"] for f in finals) / len(finals), 3)
        r["improvement"] = round(start["model"]["fid"] / fid_mean, 2)
        r["cpu_min"] = round(sum(x["cpu_min"] for x in runs), 1)
        rows.append(r)
        settings.append(name)
        curves[name] = runs
        print(f"{name}: FID {fid_mean:.2f} +- {fid_sd:.2f} over seeds {args.seeds} (floor {r['floor_fid']:.2f})")

    total = c.cpu_minutes()
    for r in rows:
        r.setdefault("fid_sd", 0.0)
        r["fid_cell"] = f"{r['fid']:.2f} +- {r['fid_sd']:.2f}" if r.get("runs") else f"{r['fid']:.2f}"
    name = "mnist_table2" + ("_quick" if args.quick else "") + ("_partial" if args.only is not None else "")
    out = write(name, {"budget": budget, "rows": rows, "cpu_minutes_total": total, "commands": c.history})
    figure(curves, start, RESULTS / f"{name}.png")
    print(f"\n{name} (28x28 MNIST, T = 10; FID mean +- sd over seeds {args.seeds}; {total} CPU minutes)")
    print(table_markdown(rows, ("fid_cell", "improvement", "cpu_min")))
    print(f"wrote {out} and {RESULTS / (name + '.png')}")


def figure(curves: dict, start: dict, path: Path) -> None:
    """FID during fine-tuning, mean +- sd over seeds per setting, the noise floor dashed."""
    from fewstep.plots import curves as plot_curves

    series, spread = {}, {}
    floor = None
    for name, runs in curves.items():
        steps = [p["iteration"] for p in runs[0]["curve"]]
        per_step = list(zip(*[[p["fid"] for p in r["curve"]] for r in runs]))
        stats = [mean_sd(list(v)) for v in per_step]
        series[name] = (steps, [m for m, _ in stats])
        spread[name] = [s for _, s in stats]
        floor = runs[0]["curve"][-1]["floor_fid"]
    plot_curves(
        series,
        path,
        "iteration",
        f"held-out FID ({start['n']} final / curve: evaluate.train_samples)",
        floor=floor,
        logy=True,
        title="SFT-PG (B) on a T = 10 DDPM, 28x28 MNIST: mean +- sd over seeds; floor dashed",
        spread=spread,
    )


if __name__ == "__main__":
    main()
