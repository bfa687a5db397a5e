"""Figure 7 of the SFT-PG paper: the Gaussian cluster (centre (0.5, 0.5), std 0.01) with T = 2.

Pretrains a T = 2 DDPM, fine-tunes it with SFT-PG (B), and draws the whole sampling path of 50
points with the same seeds before and after: the fine-tuned sampler finds a shortcut to the
cluster. With T = 2 the sigmoid schedule barely adds noise, so the generator must learn a large
correction; the generator learning rate here is 1e-3 (the toy default needs far more iterations);
set it back with --set finetune.lr_generator=5e-5.

    nice -n 5 python benchmarks/toy_fig7.py --out benchmarks/results/toy_fig7.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _toy_common import (
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

from fewstep.plots import sampling_paths
from fewstep.rollout import SeededNoise, rollout
from fewstep.samplers import build_table, for_policy_gradient


def main():
    args = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_fig7.json", 600).parse_args()
    info = budget(args)
    config = toy_config("gaussian", 2, args.pretrain_steps, finetune_overrides(args, ["finetune.lr_generator=1e-3"]))
    model, _ = pretrained(config, args.progress)
    table = for_policy_gradient(build_table(config.sampler, model.schedule))
    _, result = score(model, table, config, args.n_samples, args.repeats)
    rows = [row("ddpm", "gaussian", 2, result)]
    with tempfile.TemporaryDirectory() as tmp:
        tuned, curve, wall = run_finetune(config, model, Path(tmp), args.progress)
    _, result = score(tuned.model, tuned.table, config, args.n_samples, args.repeats)
    rows.append(row("sft-pg-b", "gaussian", 2, result, seconds=tuned.result.seconds, wall_seconds=wall))
    write_results(args.out, rows, budget={**info, "lr_generator": 1e-3}, curve=curve)
    print_table(rows, "Figure 7: Gaussian cluster, T = 2")
    noise = SeededNoise(0, torch.arange(50), (2,))
    with torch.no_grad():
        paths = [
            ("DDPM, T=2", rollout(model.model, table, noise).x),
            ("SFT-PG (B), T=2", rollout(tuned.model, table, noise).x),
        ]
    sampling_paths(paths, args.out.with_suffix(".png"), target=(0.5, 0.5))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
