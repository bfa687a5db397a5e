"""DDPM baselines of the SFT-PG paper's Table 1: swiss roll, sigmoid schedule, T = 10, 100, 1000.

For each T a DDPM is pretrained (epsilon loss, EMA; cached in benchmarks/.cache) and its ancestral
sampler (the config's default: Sigma = beta, noise at every step, all T steps) is scored by the
library's Evaluator: exact W2, sliced W2 (100 projections) and k-NN precision/recall of 10K samples
against 10K fresh data points, each a mean over ``--repeats`` independent (sample seed, data draw)
pairs with its standard deviation, beside the noise floor measured the same way.

The paper trained each DDPM for 2000 epochs at batch 64 (20M examples); the default budget here is
20000 Adam steps at batch 256 (5.1M examples). The budget is printed and recorded.

    nice -n 10 python benchmarks/toy_ddpm.py --out benchmarks/results/toy_ddpm.json
    python benchmarks/toy_ddpm.py --quick --out /tmp/toy_ddpm.json      # smoke run
"""

from __future__ import annotations

import time

from _toy_common import (
    base_parser,
    budget,
    floor_override,
    pretrained,
    print_table,
    row,
    score,
    toy_config,
    write_results,
)

from fewstep.data import DataSource
from fewstep.plots import scatter
from fewstep.samplers import build_table

PAPER_X1E2 = {("ddpm", 10): 8.29, ("ddpm", 100): 2.36, ("ddpm", 1000): 1.78}  # Table 1, "W2 (x1e-2)"


def main():
    parser = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_ddpm.json", 0)
    parser.add_argument("--T", type=int, nargs="+", default=[10, 100, 1000], help="diffusion steps of the DDPMs")
    args = parser.parse_args()
    info = budget(args)
    rows, panels = [], []
    for T in args.T:
        config = toy_config("swiss_roll", T, args.pretrain_steps, [floor_override(args)])
        model, pretrain_seconds = pretrained(config, args.progress)
        table = build_table(config.sampler, model.schedule)
        started = time.time()
        samples, result = score(model, table, config, args.n_samples, args.repeats)
        rows.append(
            row(
                "ddpm",
                "swiss_roll",
                T,
                result,
                pretrain_seconds=pretrain_seconds,
                evaluate_seconds=time.time() - started,
            )
        )
        m = result["model"]
        panels.append((f"DDPM T={T}\nW2 {100 * m['w2']:.2f}, sliced W2 {100 * m['sw2']:.2f} (x1e-2)", samples))
        print(
            f"T={T}: W2 {m['w2']:.5f} +- {result['model_sd']['w2']:.5f}, floor {result['floor']['w2']:.5f}", flush=True
        )
    print_table(rows, "DDPM on the swiss roll, sigmoid schedule (all T ancestral steps)", PAPER_X1E2)
    write_results(
        args.out,
        rows,
        budget=info,
        paper_x1e_2={f"{m}@{s}": v for (m, s), v in PAPER_X1E2.items()},
        sampler="ancestral DDPM, Sigma = beta, noise at every step (sampler.* defaults)",
    )
    floor = rows[0]["floor"]
    reference, _ = DataSource(config.data).floor_pair(args.n_samples, config.evaluate.seed)
    scatter(
        panels,
        reference,
        args.out.with_suffix(".png"),
        suptitle=f"noise floor: W2 {100 * floor['w2']:.2f}, sliced W2 {100 * floor['sw2']:.2f} (x1e-2)",
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
