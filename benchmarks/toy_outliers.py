"""Where off-data samples come from: which step of a fine-tuned 10-step sampler sends a chain off the data.

W2 near the floor can hide a few per cent of samples between the modes (the moons' bridges, the
cloud between the swiss roll's arms). A point is *off the data* when its distance to the nearest of
50K data points exceeds the 99.9th percentile of that distance for held-out data points, so data
itself is off 0.1% of the time. The sampler is fine-tuned with the defaults; then, for chains that
end off the data and for chains that do not, each chain is re-run from its state x_k (the input of
step k) with fresh noise, ``--continuations`` times: P(off | x_k) climbs from the base rate to 1
over the steps whose noise decides the outcome. Figure: P(off | x_k) against k, per data set.

    nice -n 5 python benchmarks/toy_outliers.py --out benchmarks/results/toy_outliers.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _toy_common import base_parser, budget, finetune_overrides, pretrained, run_finetune, toy_config, write_results

from fewstep.config import FinetuneConfig
from fewstep.data import DataSource
from fewstep.plots import curves
from fewstep.rollout import TensorNoise, rollout
from fewstep.steps import StepTable, steps_from


def nearest_distance(x: torch.Tensor, reference: torch.Tensor, rows: int = 500) -> torch.Tensor:
    """Distance of every row of ``x`` to its nearest row of ``reference``."""
    return torch.cat([torch.cdist(x[i : i + rows], reference).min(1).values for i in range(0, len(x), rows)])


@torch.no_grad()
def off_probability(model, table: StepTable, x_k: torch.Tensor, k: int, off, repeats: int, random) -> float:
    """P(the chain ends off the data | x_k), over ``repeats`` fresh continuations of every row of x_k."""
    start = x_k.repeat(repeats, 1)
    block = torch.cat([start[None], torch.randn((table.K - k, *start.shape), generator=random)])
    return float(off(rollout(model, steps_from(table, k), TensorNoise(block), states_only=True).x0).float().mean())


def main():
    parser = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_outliers.json", FinetuneConfig().iterations)
    parser.add_argument("--data", nargs="+", default=["moons", "swiss_roll"], help="data sets")
    parser.add_argument("--chains", type=int, default=10_000, help="chains rolled out to find off-data ones")
    parser.add_argument("--picked", type=int, default=100, help="chains per group whose continuations are run")
    parser.add_argument("--continuations", type=int, default=20, help="fresh continuations per chain and step")
    args = parser.parse_args()
    info = budget(args)
    rows, series = [], {}
    for data in args.data:
        config = toy_config(data, 10, args.pretrain_steps, finetune_overrides(args))
        model, _ = pretrained(config, args.progress)
        with tempfile.TemporaryDirectory() as tmp:
            tuned, _, _ = run_finetune(config, model, Path(tmp), args.progress)
        network, table = tuned.model.eval(), tuned.table
        reference, heldout = DataSource(config.data).floor_pair(50_000, seed=11)
        threshold = float(torch.quantile(nearest_distance(heldout[:10_000], reference), 0.999))

        def off(x: torch.Tensor) -> torch.Tensor:
            return nearest_distance(x, reference) > threshold

        random = torch.Generator().manual_seed(3)
        with torch.no_grad():
            noise = TensorNoise(torch.randn((table.K + 1, args.chains, 2), generator=random))
            chains = rollout(network, table, noise, states_only=True)
        ends_off = off(chains.x0)
        groups = {"chains that end off the data": ends_off, "chains that end on the data": ~ends_off}
        row = {
            "data": data,
            "steps": table.K,
            "threshold": threshold,
            "off_fraction": float(ends_off.float().mean()),
            "off_fraction_data": float(off(heldout[10_000:20_000]).float().mean()),
            "std": [float(s) for s in table.s],
        }
        for name, mask in groups.items():
            picked = torch.nonzero(mask).view(-1)[: args.picked]
            row[name] = [
                off_probability(network, table, chains.x[k][picked], k, off, args.continuations, random)
                for k in range(table.K)
            ]
            series[f"{data}: {name}"] = (list(range(table.K)), row[name])
        rows.append(row)
        print(
            f"{data}: {row['off_fraction']:.2%} of the samples off the data (data: {row['off_fraction_data']:.2%})",
            flush=True,
        )
    write_results(args.out, rows, budget=info)
    print("\n| data | step k | std s_k | P(off | x_k), chains that end off | P(off | x_k), chains that end on |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        names = list(groups)
        for k in range(r["steps"]):
            print(f"| {r['data']} | {k} | {r['std'][k]:.4f} | {r[names[0]][k]:.3f} | {r[names[1]][k]:.3f} |")
    curves(
        series,
        args.out.with_suffix(".png"),
        "step k (the chain re-run from its input x_k)",
        "P(sample ends off the data | x_k)",
        title="where the fine-tuned sampler's off-data samples are decided",
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
