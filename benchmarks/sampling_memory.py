"""Peak memory and speed of `fewstep` sampling beside a plain diffusers loop on the same network.

A 1000-step ancestral DDPM (fixed_small variance, as diffusers' DDPMScheduler samples it) draws a
batch of 3x32x32 images with the same diffusers ``UNet2DModel``:

* **fewstep**: ``fewstep.rollout.sample`` with per-sample seeds (counter-based noise drawn step by
  step, so sample i depends only on (seed, i) at any batch size);
* **diffusers**: the loop of ``DDPMPipeline`` written out (``scheduler.step`` with one generator).

Each measurement runs in a fresh process: the extra peak resident memory over the process after
loading the network, and the wall-clock seconds of sampling. Two networks: a small U-Net (the
network is the cost) and a trivial one (sampling overhead alone, where a pre-drawn noise block
would dominate memory). Writes JSON and a bar figure, prints a table.

    nice -n 5 python benchmarks/sampling_memory.py --out benchmarks/results/sampling_memory.json
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

NETWORKS = {
    "small-unet": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
    "trivial": None,
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class Trivial(torch.nn.Module):
    """eps(x, t) = 0.1 x: no activations to speak of, so sampling's own memory shows."""

    def forward(self, x, t):
        return 0.1 * x


def network(name: str):
    from diffusers import UNet2DModel

    if NETWORKS[name] is None:
        return None
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        **NETWORKS[name],
    ).eval()


def probe(side: str, name: str, batch: int, steps: int) -> dict:
    """One measurement in this (fresh) process."""
    from diffusers import DDPMScheduler

    from fewstep.images.diffusers_io import DiffusersEps
    from fewstep.rollout import sample
    from fewstep.samplers import ddpm_table
    from fewstep.schedules import NoiseSchedule

    torch.set_num_threads(1)
    unet = network(name)
    eps = Trivial() if unet is None else DiffusersEps(unet)
    scheduler = DDPMScheduler(num_train_timesteps=steps, variance_type="fixed_small", clip_sample=False)
    with torch.no_grad():  # warm up the kernels outside the measurement
        eps(torch.zeros(2, 3, 32, 32), torch.zeros(2))
    before = rss_mb()
    started = time.perf_counter()
    with torch.no_grad():
        if side == "fewstep":
            schedule = NoiseSchedule("diffusers", scheduler.betas.double())
            x = sample(eps, ddpm_table(schedule, None, "beta_tilde"), batch, (3, 32, 32), seed=0, batch_size=batch)
        else:
            g = torch.Generator().manual_seed(0)
            scheduler.set_timesteps(steps)
            x = torch.randn((batch, 3, 32, 32), generator=g)
            for t in scheduler.timesteps:
                out = eps(x, t.expand(batch).float())
                x = scheduler.step(out, t, x, generator=g).prev_sample
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert torch.isfinite(x).all()
    return {
        "side": side,
        "network": name,
        "batch": batch,
        "steps": steps,
        "seconds": seconds,
        "extra_peak_mb": round(peak - before, 1),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling_memory.json"))
    p.add_argument("--steps", type=int, default=1000, help="DDPM steps (T)")
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="batch sizes")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per measurement (the minimum is kept)")
    p.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        side, name, batch, steps = args.probe
        print(json.dumps(probe(side, name, int(batch), int(steps))))
        return
    rows = []
    for name in NETWORKS:
        for batch in args.batch:
            if name == "small-unet" and batch > 64:
                continue  # one core: the U-Net at batch 256 x 1000 steps takes too long to be worth it
            pair = {}
            for side in ("fewstep", "diffusers"):
                runs = []
                for _ in range(args.repeats):
                    cmd = [sys.executable, __file__, "--probe", side, name, str(batch), str(args.steps)]
                    runs.append(
                        json.loads(
                            subprocess.run(cmd, capture_output=True, text=True, check=True)
                            .stdout.strip()
                            .splitlines()[-1]
                        )
                    )
                best = {
                    **runs[0],
                    "seconds": min(r["seconds"] for r in runs),
                    "extra_peak_mb": min(r["extra_peak_mb"] for r in runs),
                }
                pair[side] = best
                rows.append(best)
                print(json.dumps(best), flush=True)
            rows.append(
                {
                    "side": "ratio fewstep/diffusers",
                    "network": name,
                    "batch": batch,
                    "steps": args.steps,
                    "seconds": pair["fewstep"]["seconds"] / pair["diffusers"]["seconds"],
                    "extra_peak_mb": pair["fewstep"]["extra_peak_mb"] / max(pair["diffusers"]["extra_peak_mb"], 1),
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "steps": args.steps,
                "repeats": args.repeats,
                "note": "fresh process per measurement, 1 thread, shared 2-core CPU",
            },
            indent=2,
        )
    )
    print(f"\nsampling {args.steps} DDPM steps of 3x32x32 images (min over {args.repeats} fresh processes)")
    print(
        "| network | batch | fewstep peak MB | diffusers peak MB | memory ratio | fewstep s | diffusers s "
        "| time ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["side"].startswith("ratio"):
            f = next(
                x for x in rows if x["side"] == "fewstep" and x["network"] == r["network"] and x["batch"] == r["batch"]
            )
            d = next(
                x
                for x in rows
                if x["side"] == "diffusers" and x["network"] == r["network"] and x["batch"] == r["batch"]
            )
            print(
                f"| {r['network']} | {r['batch']} | {f['extra_peak_mb']:.0f} | {d['extra_peak_mb']:.0f} | "
                f"{r['extra_peak_mb']:.2f} | {f['seconds']:.1f} | {d['seconds']:.1f} | {r['seconds']:.2f} |"
            )
    plot(rows, args.out.with_suffix(".png"))


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [r for r in rows if not r["side"].startswith("ratio")]
    labels = sorted({(r["network"], r["batch"]) for r in pairs})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, unit in ((axes[0], "extra_peak_mb", "extra peak memory (MB)"), (axes[1], "seconds", "seconds")):
        for i, side in enumerate(("fewstep", "diffusers")):
            values = [
                next(r[key] for r in pairs if r["side"] == side and (r["network"], r["batch"]) == lab) for lab in labels
            ]
            ax.bar([j + 0.4 * i for j in range(len(labels))], values, width=0.4, label=side)
        ax.set_xticks([j + 0.2 for j in range(len(labels))], [f"{n}\nbatch {b}" for n, b in labels])
        ax.set_ylabel(unit)
        ax.legend()
    fig.suptitle("1000-step DDPM sampling, 3x32x32: fewstep (per-sample seeds) vs a plain diffusers loop")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
