"""Shortcut fine-tuning with fewer steps: SFT-PG (B) on the swiss roll and two moons at T = 2, 4 and 10.

For each data set and T a DDPM is pretrained with T steps (sigmoid schedule) and fine-tuned with the
default settings, once per training seed (``--seeds``); rows give W2, sliced W2 and precision/recall
of 10K samples before and after (means over ``--repeats`` independent draws of every run), beside the
noise floor, and the training seconds.
Figure: W2 against T with the floor.

    nice -n 5 python benchmarks/toy_fewer_steps.py --out benchmarks/results/toy_fewer_steps.json
"""

from __future__ import annotations

from _toy_common import (
    add_seeds,
    budget,
    finetune_overrides,
    finetune_seeds,
    mean_or_none,
    per_seed,
    pretrained,
    print_table,
    row,
    score,
    target_parser,
    toy_config,
    write_results,
)

from fewstep.plots import curves
from fewstep.samplers import build_table, for_policy_gradient


def main():
    parser = target_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_fewer_steps.json")
    parser.add_argument("--T", type=int, nargs="+", default=[2, 4, 10], help="numbers of steps")
    add_seeds(parser)
    args = parser.parse_args()
    info = budget(args)
    rows = []
    for data in args.data:
        for T in args.T:
            config = toy_config(data, T, args.pretrain_steps, finetune_overrides(args))
            model, _ = pretrained(config, args.progress)
            table = for_policy_gradient(build_table(config.sampler, model.schedule))
            _, result = score(model, table, config, args.n_samples, args.repeats)
            rows.append(row("ddpm", data, T, result))
            _, result, runs = finetune_seeds(config, model, args.seeds, args.n_samples, args.repeats, args.progress)
            seeds = per_seed(runs)
            seconds = mean_or_none([r["seconds"] for r in seeds])
            by_seed = ", ".join(f"{r['w2']:.4f}" for r in seeds)
            rows.append(row("sft-pg-b", data, T, result, seconds=seconds, per_seed=seeds, curve=runs[0]["curve"]))
            print(
                f"{data} T={T}: DDPM W2 {rows[-2]['w2']:.4f} -> SFT-PG (B) {rows[-1]['w2']:.4f} (training seeds: "
                f"{by_seed}; floor {result['floor']['w2']:.4f}) "
                f"in {seconds:.0f} s",
                flush=True,
            )
    write_results(args.out, rows, budget=info)
    print_table([{k: v for k, v in r.items() if k != "curve"} for r in rows], "SFT-PG (B) with fewer steps")
    series, floor = {}, None
    for data in args.data:
        for m in ("ddpm", "sft-pg-b"):
            picked = [r for r in rows if r["method"] == m and r["data"] == data]
            series[f"{data}: {m}"] = ([r["steps"] for r in picked], [r["w2"] for r in picked])
        floor = picked[-1]["floor"]["w2"]
    curves(
        series,
        args.out.with_suffix(".png"),
        "T (sampling steps)",
        f"W2 ({args.n_samples} samples)",
        floor=floor,
        logy=True,
        title=f"DDPM vs SFT-PG (B); dashed: the {args.data[-1]} floor",
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
