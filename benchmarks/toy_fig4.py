"""Figure 4 of the SFT-PG paper: SFT (GP), SFT-PG (GP) and SFT-PG (B) on the swiss roll and two moons.

Each method fine-tunes the same pretrained T = 10 DDPM. Plots W2 against iterations and against
training wall-clock seconds (with the noise floor), and the final 10K samples of every method;
writes JSON (foundation shape, one row per method and data set).

    nice -n 5 python benchmarks/toy_fig4.py --out benchmarks/results/toy_fig4.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from _toy_common import (
    VARIANTS,
    base_parser,
    budget,
    finetune_overrides,
    pretrained,
    print_table,
    run_finetune,
    score,
    toy_config,
    write_results,
)

from fewstep.data import DataSource
from fewstep.schedules import make_schedule
from fewstep.steps import table_from_config

LABELS = {"ddpm": "DDPM", "sft-gp": "SFT (GP)", "sft-pg-gp": "SFT-PG (GP)", "sft-pg-b": "SFT-PG (B)"}


def main():
    parser = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_fig4.json", 1500)
    parser.add_argument("--data", nargs="+", default=["swiss_roll", "moons"], help="data sets")
    args = parser.parse_args()
    info = budget(args)
    rows, floors, curves_by, samples_by = [], {}, {}, {}
    for data in args.data:
        config = toy_config(data, 10, args.pretrain_steps)
        model, _ = pretrained(config, args.progress)
        table = table_from_config(config, make_schedule("sigmoid", 10))
        samples_by[(data, "ddpm")], result = score(model, table, config, args.n_samples)
        floors[data] = result["floor"]
        rows.append({"method": "ddpm", "data": data, "steps": 10, **result["model"], "seconds": 0.0})
        for method, extra in VARIANTS.items():
            cfg = toy_config(data, 10, args.pretrain_steps, finetune_overrides(args, extra))
            with tempfile.TemporaryDirectory() as tmp:
                tuned, tuned_table, curve = run_finetune(cfg, model, Path(tmp), args.progress)
            samples_by[(data, method)], result = score(tuned, tuned_table, cfg, args.n_samples)
            curves_by[(data, method)] = curve
            rows.append(
                {"method": method, "data": data, "steps": 10, **result["model"], "seconds": curve[-1]["seconds"]}
            )
            print(
                f"{data} {method}: W2 {result['model']['w2']:.4f} (floor {floors[data]['w2']:.4f}) "
                f"in {curve[-1]['seconds']:.0f} s",
                flush=True,
            )
    floor = floors[args.data[0]]
    write_results(
        args.out, floor, rows, floors=floors, budget=info, curves={f"{d}/{m}": c for (d, m), c in curves_by.items()}
    )
    for data in args.data:
        print_table([r for r in rows if r["data"] == data], floors[data], title=f"Figure 4, {data} (T = 10)")
    plot(args, rows, floors, curves_by, samples_by)


def plot(args, rows, floors, curves_by, samples_by):
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
            ax.axhline(curves_by[(data, "sft-pg-b")][-1]["floor_w2"], ls="--", c="k", lw=1, label="noise floor")
            ax.set_yscale("log")
            ax.set_xlabel("iteration" if x_key == "step" else "training seconds (2-core CPU)")
            ax.set_ylabel("W2 (during-training evaluation)")
            ax.set_title(data)
            ax.legend(fontsize=8)
        reference = DataSource(toy_config(data, 10, 1).data).draw(args.n_samples, 1).numpy()
        for j, method in enumerate(methods):
            ax, x = axes[i][2 + j], samples_by[(data, method)].numpy()
            ax.scatter(reference[:, 0], reference[:, 1], s=1, c="tab:red", alpha=0.3)
            ax.scatter(x[:, 0], x[:, 1], s=1, c="tab:blue", alpha=0.3)
            w = next(r["w2"] for r in rows if r["data"] == data and r["method"] == method)
            ax.set_title(f"{LABELS[method]}: W2 {w:.4f}")
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=90)


if __name__ == "__main__":
    main()
