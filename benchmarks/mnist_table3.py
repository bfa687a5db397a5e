"""The shape of the paper's Table 3 (Section 6.3) on 28x28 MNIST, through the command line.

A U-Net DDPM with T = 1000 (linear schedule) is pretrained with ``fewstep pretrain`` (whose report
is the 1000-step DDPM row), then sampled in 10 steps with ``fewstep evaluate --set sampler...``:
naive DDPM sub-sampling, FastDPM (VAR approximation, quadratic, kappa = 1, DDPM reverse process:
the paper's initialisation, App. F.2), Analytic-DPM; and the FastDPM sampler is fine-tuned by
``fewstep finetune --preset images`` (SFT-PG (B): lambda = 1, n_critic = 5, n_generator = 10,
gamma = 0.1). Every sampler clips its x0-prediction to [-1, 1] (``sampler.clip_x0=1``, diffusers'
``clip_sample``, the DDPMScheduler default; FastDPM is also reported without it). Policy gradient
needs a density at every step, so the tuned sampler adds noise at
FastDPM's deterministic last step (``sampler.noise_at_last_step=true``; that row is reported too).
The fine-tuned model is then written as a diffusers pipeline (``fewstep export``), sampled by
diffusers alone (a Python process in which fewstep cannot be imported) and those samples are scored
with ``fewstep evaluate --samples``. All rows use ``evaluate.n_samples`` samples against as many
held-out digits, beside the noise floor (the other half of the held-out digits).

Target: the fine-tuned 10-step FID at or below the 1000-step FID.

    nice -n 10 python benchmarks/mnist_table3.py                 # about 70 CPU minutes (see the JSON)
    python benchmarks/mnist_table3.py --quick                    # smoke test, a few minutes

Writes benchmarks/results/mnist_table3.json and .png (sample grids, FID and floor in the titles).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_common import (  # noqa: E402
    CONFIG,
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

FASTDPM = [
    "sampler.kind=fastdpm",
    "sampler.steps=10",
    "sampler.fastdpm.approach=VAR",
    "sampler.fastdpm.schedule=quadratic",
    "sampler.fastdpm.kappa=1",
    "sampler.fastdpm.reverse=ddpm",
]
ROWS = {
    "DDPM sub-sampled, 10 steps": ["sampler.steps=10"],
    "FastDPM (VAR quadratic, kappa 1, DDPM-rev), 10 steps": FASTDPM,
    "FastDPM without x0 clipping, 10 steps": [*FASTDPM, "sampler.clip_x0=null"],
    "FastDPM + last-step noise (the fine-tuning start)": [*FASTDPM, "sampler.noise_at_last_step=true"],
    "Analytic-DPM, 10 steps": ["sampler.kind=analytic_dpm", "sampler.steps=10"],
}

DIFFUSERS_ALONE = """
import sys
sys.modules["fewstep"] = None  # diffusers alone: any import of fewstep fails here
import numpy as np, torch
from diffusers import DiffusionPipeline
torch.set_num_threads(1)
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
n, parts = int(sys.argv[2]), []
for start in range(0, n, 250):
    g = torch.Generator().manual_seed(start)
    parts.append(pipe(batch_size=min(250, n - start), generator=g, output_type="np").images)
x = np.concatenate(parts).transpose(0, 3, 1, 2) * 2 - 1  # [0, 1] HWC -> [-1, 1] CHW
np.save(sys.argv[3], x.astype(np.float32))
print(type(pipe).__name__, type(pipe.scheduler).__name__, len(pipe.scheduler.timesteps), "steps:", x.shape)
"""


def sets(items: list[str]) -> list[str]:
    return [x for s in items for x in ("--set", s)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("benchmarks/.cache/mnist28"), help="runs, logs, cache")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--iterations", type=int, default=150, help="outer iterations of Algorithm 1")
    p.add_argument("--batch-size", type=int, default=32, help="m (the paper: 128)")
    p.add_argument("--lr-generator", type=float, default=1e-5, help="the paper: 1e-6 for 100 epochs")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra --set for every command")
    p.add_argument("--quick", action="store_true", help="tiny budget; results go to mnist_table3_quick.*")
    args = p.parse_args()
    if args.quick:
        args.work = args.work.with_name(args.work.name + "-quick")
        args.pretrain_steps, args.iterations = 20, 2
        args.overrides += ["evaluate.n_samples=50", "evaluate.train_samples=20", "schedule.T=100"]
    every = max(1, args.iterations // 6)
    finetune_sets = [
        *FASTDPM,
        "sampler.clip_x0=1",
        "sampler.noise_at_last_step=true",
        "finetune.max_kl=0",  # the paper's image settings: no trust region beside gamma
        f"finetune.iterations={args.iterations}",
        f"finetune.batch_size={args.batch_size}",
        "finetune.n_generator=10",
        "finetune.clip=0.1",
        "finetune.critic_channels=[32, 64, 128]",
        "finetune.baseline_hidden=[256, 256, 64]",
        f"finetune.lr_generator={args.lr_generator}",
        "finetune.lr_critic=2e-4",
        "finetune.lr_baseline=2e-4",
        f"finetune.eval_every={every}",
        f"finetune.log_every={every}",
        "finetune.checkpoint_every=25",
    ]
    budget = budget_record(
        args, 1000, "linear", finetune_sets, "CIFAR-10/CelebA; generator lr 1e-6, m = 128, critic 256/512/1024"
    )
    c = Commands(args.work, args.overrides)
    w = c.work
    # every sampler clips its x0-prediction to [-1, 1] (diffusers' clip_sample, its DDPMScheduler default)
    pre, ckpt, full = pretrain_once(c, "pretrain-T1000", args.pretrain_steps, ["sampler.clip_x0=1"])
    rows = [row("DDPM, 1000 steps", full["steps"], full, cpu_min=round(c.history[-1]["cpu_s"] / 60, 1))]
    grids = {"DDPM, 1000 steps": grid(c, "grid-ddpm1000", ckpt)}  # 64 samples (the pretrain run keeps a PNG)
    for name, extra in ROWS.items():
        tag = "t3-" + name.split(",")[0].split(" (")[0].lower().replace(" ", "-").replace("+", "plus")
        out, npy = w / f"{tag}.json", w / f"{tag}.npy"
        argv = ["evaluate", "--checkpoint", str(ckpt), *sets(extra), "--out", str(out), "--save-samples", str(npy)]
        c.run(tag, [*argv, "--quiet"], done=out)
        rows.append(row(name, 10, evaluation(out), cpu_min=round(c.history[-1]["cpu_s"] / 60, 1)))
        grids[name] = npy

    run_dir = w / "t3-finetune"
    tuned = run_dir / "checkpoints" / "finetune.safetensors"
    c.run(
        "t3-finetune",
        ["finetune", "--checkpoint", str(ckpt), "--preset", "images", "--run-dir", str(run_dir), "--quiet"]
        + sets(finetune_sets),
        done=run_dir / "summary.md",
        resume=tuned,
    )
    logged = records(run_dir)
    before, after = run_evaluations(logged)[-2:]
    train_minutes = round(c.history[-1]["cpu_s"] / 60, 1)
    rows.append(row("SFT-PG (B) from FastDPM, 10 steps", 10, after, cpu_min=train_minutes, curve=curve(logged)))
    rows[-1]["start_fid_in_run"] = round(before["model"]["fid"], 3)
    grids["SFT-PG (B), 10 steps"] = grid(c, "grid-sftpg", tuned)

    pipeline = w / "mnist28-sftpg-pipeline"
    c.run("t3-export", ["export", "--checkpoint", str(tuned), "--out", str(pipeline)], done=pipeline)
    npy = w / "t3-diffusers-alone.npy"
    c.run_python("t3-diffusers-alone", DIFFUSERS_ALONE, [str(pipeline), str(after["n"]), str(npy)], done=npy)
    scores = w / "t3-diffusers-alone.json"
    c.run(
        "t3-diffusers-alone-evaluate",
        ["evaluate", "--samples", str(npy), "--config", str(CONFIG), "--out", str(scores), "--quiet"],
        done=scores,
    )
    rows.append(row("SFT-PG (B), exported, sampled by diffusers alone", 10, evaluation(scores)))

    total = c.cpu_minutes()
    name = "mnist_table3" + ("_quick" if args.quick else "")
    figure(rows, grids, npy, RESULTS / f"{name}.png")
    target = after["model"]["fid"] <= full["model"]["fid"]
    out = write(
        name,
        {
            "budget": budget,
            "rows": rows,
            "target_met": target,
            "cpu_minutes_total": c.cpu_minutes(),
            "commands": c.history,
        },
    )
    print(f"\n{name} (28x28 MNIST, T = 1000 model; {total} CPU minutes)")
    print(table_markdown(rows, ("cpu_min",)))
    print(
        f"target (fine-tuned 10-step FID <= 1000-step FID): {'met' if target else 'NOT met'} "
        f"({after['model']['fid']:.2f} vs {full['model']['fid']:.2f}; floor {full['floor']['fid']:.2f})"
    )
    print(f"wrote {out} and {RESULTS / (name + '.png')}")


def grid(c: Commands, name: str, checkpoint: Path) -> Path:
    """64 samples of a checkpoint's sampler (``fewstep sample``), for the figure."""
    out = c.work / f"{name}.npy"
    c.run(name, ["sample", "--checkpoint", str(checkpoint), "-n", "64", "--out", str(out), "--quiet"], done=out)
    return out


def figure(rows: list[dict], grids: dict, npy: Path, path: Path) -> None:
    """Sample grids of every row, FID in the titles, the noise floor on top."""
    import numpy as np
    import torch

    from fewstep.plots import grid_figure

    panels = []
    for (name, samples), r in zip(grids.items(), rows):
        title = name.replace(", ", "\n", 1) + f"\nFID {r['fid']:.2f}"
        panels.append((title, torch.from_numpy(np.load(samples)[:64])))
    panels.append((f"exported, diffusers alone\nFID {rows[-1]['fid']:.2f}", torch.from_numpy(np.load(npy)[:64])))
    grid_figure(panels, {"fid": rows[0]["floor_fid"], "kid": rows[0]["floor_kid"]}, path)


if __name__ == "__main__":
    main()
