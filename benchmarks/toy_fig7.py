"""Figure 7 of the SFT-PG paper: the Gaussian cluster (centre (0.5, 0.5), std 0.01) with T = 2.

Pretrains a T = 2 DDPM, fine-tunes it with SFT-PG (B), and draws the whole sampling path of 50
points with the same seeds before and after: the fine-tuned sampler finds a shortcut to the
cluster. With T = 2 the sigmoid schedule barely adds noise, so the generator must learn a large
correction; the default generator learning rate here is 1e-3 (the paper's toy 5e-5 needs far
more iterations) — set it back with --set finetune.lr_generator=5e-5.

    nice -n 5 python benchmarks/toy_fig7.py --out benchmarks/results/toy_fig7.json
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

from fewstep.plots import sampling_paths
from fewstep.rollout import draw_noise, rollout
from fewstep.schedules import make_schedule
from fewstep.steps import table_from_config


def main():
    args = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_fig7.json", 600).parse_args()
    info = budget(args)
    extra = ["finetune.lr_generator=1e-3"]
    config = toy_config("gaussian", 2, args.pretrain_steps, finetune_overrides(args, extra))
    model, _ = pretrained(config, args.progress)
    table = table_from_config(config, make_schedule("sigmoid", 2))
    _, result = score(model, table, config, args.n_samples)
    floor = result["floor"]
    rows = [{"method": "ddpm", "data": "gaussian", "steps": 2, **result["model"], "seconds": 0.0}]
    with tempfile.TemporaryDirectory() as tmp:
        tuned, table, curve = run_finetune(config, model, Path(tmp), args.progress)
    _, result = score(tuned, table, config, args.n_samples)
    rows.append(
        {"method": "sft-pg-b", "data": "gaussian", "steps": 2, **result["model"], "seconds": curve[-1]["seconds"]}
    )
    write_results(args.out, floor, rows, budget={**info, "lr_generator": 1e-3}, curve=curve)
    print_table(rows, floor, title="Figure 7: Gaussian cluster, T = 2")
    noise = draw_noise(table.K, 50, (2,), seeds=range(50))
    sampling_paths(
        [
            ("DDPM, T=2", rollout(model, table, noise).x.detach()),
            ("SFT-PG (B), T=2", rollout(tuned, table, noise).x.detach()),
        ],
        args.out.with_suffix(".png"),
        target=(0.5, 0.5),
    )


if __name__ == "__main__":
    main()
