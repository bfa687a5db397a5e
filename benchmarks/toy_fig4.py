"""Figure 4 of the SFT-PG paper: SFT (GP), SFT-PG (GP) and SFT-PG (B) on the swiss roll and two moons.

Each method fine-tunes the same pretrained T = 10 DDPM with the same budget. Plots the held-out W2
during training against iterations and against training seconds (with the noise floor), and the
final samples of every method; the table gives W2, sliced W2 and precision/recall of 10K samples
(means over ``--repeats`` draws) beside the floor.

    nice -n 5 python benchmarks/toy_fig4.py --out benchmarks/results/toy_fig4.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from _toy_common import (
    LABELS,
    VARIANTS,
    base_parser,
    budget,
    finetune_overrides,
    pretrained,
    print_table,
    row,
    run_finetune,
    score,
    toy_config,
    write_results,
)

from fewstep.data import DataSource
from fewstep.samplers import build_table, for_policy_gradient


def main():
    parser = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_fig4.json", 1200)
    parser.add_argument("--data", nargs="+", default=["swiss_roll", "moons"], help="data sets")
    args = parser.parse_args()
    info = budget(args)
    rows, curves_by, samples_by = [], {}, {}
    for data in args.data:
        config = toy_config(data, 10, args.pretrain_steps)
        model, _ = pretrained(config, args.progress)
        table = for_policy_gradient(build_table(config.sampler, model.schedule))
        samples_by[(data, "ddpm")], result = score(model, table, config, args.n_samples, args.repeats)
        rows.append(row("ddpm", data, 10, result))
        for method, extra in VARIANTS.items():
            cfg = toy_config(data, 10, args.pretrain_steps, finetune_overrides(args, extra))
            with tempfile.TemporaryDirectory() as tmp:
                tuned, curve, wall = run_finetune(cfg, model, Path(tmp), args.progress)
            samples_by[(data, method)], result = score(tuned.model, tuned.table, cfg, args.n_samples, args.repeats)
            curves_by[(data, method)] = curve
            rows.append(row(method, data, 10, result, seconds=tuned.result.seconds, wall_seconds=wall))
            print(
                f"{data} {method}: W2 {result['model']['w2']:.4f} (floor {result['floor']['w2']:.4f}) "
                f"in {tuned.result.seconds:.0f} s",
                flush=True,
            )
    write_results(args.out, rows, budget=info, curves={f"{d}/{m}": c for (d, m), c in curves_by.items()})
    for data in args.data:
        print_table([r for r in rows if r["data"] == data], f"Figure 4, {data} (T = 10)")
    plot(args, rows, curves_by, samples_by)


def plot(args, rows, curves_by, samples_by):
    methods = ["ddpm", *VARIANTS]
    fig, axes = plt.subplots(
        len(args.data), 2 + len(methods), figsize=(4 * (2 + len(methods)), 4 * len(args.data)), squeeze=False
    )
    for i, data in enumerate(args.data):
        for j, x_key in enumerate(("step", "seconds")):
            ax = axes[i][j]
            for method in VARIANTS:
                c = curves_by[(data, method)]
                ax.plot([r[x_key] for r in c], [r["w2"] for r in c], label=LABELS[method], marker="o", ms=3)
            c = curves_by[(data, "sft-pg-b")][-1]
            ax.axhline(c["floor_w2"], ls="--", c="k", lw=1, label=f"noise floor ({c['eval_n']} points)")
            ax.set_yscale("log")
            ax.set_xlabel("iteration" if x_key == "step" else "training seconds (2-core CPU)")
            ax.set_ylabel(f"held-out W2 ({c['eval_n']} samples)")
            ax.set_title(data)
            ax.legend(fontsize=8)
        reference = DataSource(toy_config(data, 10, 1).data).floor_pair(args.n_samples, 1)[0].numpy()
        for j, method in enumerate(methods):
            ax, x = axes[i][2 + j], samples_by[(data, method)].numpy()
            ax.scatter(reference[:, 0], reference[:, 1], s=1, c="tab:red", alpha=0.3)
            ax.scatter(x[:, 0], x[:, 1], s=1, c="tab:blue", alpha=0.3)
            r = next(r for r in rows if r["data"] == data and r["method"] == method)
            ax.set_title(f"{LABELS[method]}: W2 {r['w2']:.4f}, precision {r['precision']:.2f}", fontsize=9)
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=90)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
