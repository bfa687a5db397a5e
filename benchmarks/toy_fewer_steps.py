"""Shortcut fine-tuning with fewer steps: SFT-PG (B) on the swiss roll at T = 2, 4 and 10.

For each T a DDPM is pretrained with T steps (sigmoid schedule) and fine-tuned; rows give W2 of
10K samples before and after, beside the noise floor. Figure: W2 against T.

    nice -n 5 python benchmarks/toy_fewer_steps.py --out benchmarks/results/toy_fewer_steps.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _toy_common import (
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

from fewstep.plots import curves
from fewstep.schedules import make_schedule
from fewstep.steps import table_from_config


def main():
    parser = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_fewer_steps.json", 2000)
    parser.add_argument("--T", type=int, nargs="+", default=[2, 4, 10], help="numbers of steps")
    args = parser.parse_args()
    info = budget(args)
    rows, floor = [], None
    for T in args.T:
        config = toy_config("swiss_roll", T, args.pretrain_steps, finetune_overrides(args))
        model, _ = pretrained(config, args.progress)
        table = table_from_config(config, make_schedule("sigmoid", T))
        _, result = score(model, table, config, args.n_samples)
        floor = result["floor"]
        rows.append({"method": "ddpm", "data": "swiss_roll", "steps": T, **result["model"], "seconds": 0.0})
        with tempfile.TemporaryDirectory() as tmp:
            tuned, table, curve = run_finetune(config, model, Path(tmp), args.progress)
        _, result = score(tuned, table, config, args.n_samples)
        rows.append(
            {"method": "sft-pg-b", "data": "swiss_roll", "steps": T, **result["model"], "seconds": curve[-1]["seconds"]}
        )
        print(
            f"T={T}: DDPM W2 {rows[-2]['w2']:.4f} -> SFT-PG (B) {rows[-1]['w2']:.4f} (floor {floor['w2']:.4f})",
            flush=True,
        )
    write_results(args.out, floor, rows, budget=info)
    print_table(rows, floor, title="SFT-PG (B) with fewer steps, swiss roll")
    series = {
        m: ([r["steps"] for r in rows if r["method"] == m], [r["w2"] for r in rows if r["method"] == m])
        for m in ("ddpm", "sft-pg-b")
    }
    curves(
        series,
        args.out.with_suffix(".png"),
        "T (sampling steps)",
        "W2 (10K samples)",
        floor=floor["w2"],
        logy=True,
        title="swiss roll: DDPM vs SFT-PG (B)",
    )


if __name__ == "__main__":
    main()
