"""Optimised schedule -> shortcut fine-tuning at its steps, against SFT-PG on heuristic steps and the
best training-free sampler (NFE 4 and 10, T = 1000 models on the swiss roll and the two moons).

For each data set and NFE:

* training-free: DDIM on log-SNR steps, DPM-Solver++(2M) on log-SNR steps, and DDIM on the optimised
  schedule (``fewstep schedule optimise``'s default: the path bound's DP refined on the measured
  error, ``fewstep.schedule_opt.jobs.phase1``);
* SFT-PG (B) with the library's defaults from a stochastic sampler on the heuristic (log-SNR) steps
  and on the optimised steps. Policy gradient needs a density at every step, so the deterministic
  samplers start as DDIM with ``--eta`` (all steps Gaussian; noise at the last step) and, with
  ``finetune.learn_variance`` (``--learn-variance``), may shrink or grow their noise.

Every row is scored by W2, sliced W2 and precision/recall at 10K samples against fresh data,
means over ``--repeats`` draws, beside the floor. Writes JSON and a figure, prints a table.

    nice -n 5 python benchmarks/toy_schedule_sftpg.py --out benchmarks/results/toy_schedule_sftpg.json
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from _toy_common import (
    base_parser,
    budget,
    finetune_overrides,
    pretrained,
    print_table,
    row,
    run_finetune,
    score,
    write_results,
)
from toy_path_schedules import toy_config

from fewstep.config import load_config, to_dict
from fewstep.data import DataSource
from fewstep.plots import curves
from fewstep.samplers import ddim_table, dpm_solver_pp_2m_table, spacing
from fewstep.schedule_opt.jobs import phase1


def main():
    parser = base_parser(__doc__.split("\n\n")[0], "benchmarks/results/toy_schedule_sftpg.json", 3000)
    parser.add_argument("--data", nargs="+", default=["swiss_roll", "moons"], help="data sets")
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 10], help="numbers of steps")
    parser.add_argument("--eta", type=float, default=0.5, help="DDIM stochasticity of the fine-tuning start")
    parser.add_argument(
        "--learn-variance",
        choices=["none", "last", "all"],
        default=None,
        help="finetune.learn_variance (default: the library's, the last step's std)",
    )
    args = parser.parse_args()
    info = budget(args)
    if args.quick:
        args.pretrain_steps = 300
    rows = []
    for data in args.data:
        base = toy_config(data, args.pretrain_steps)
        model, _ = pretrained(base, args.progress)
        schedule = model.schedule
        extra = [f"finetune.learn_variance={args.learn_variance}"] if args.learn_variance else []
        config = load_config(None, finetune_overrides(args, extra), base=to_dict(base))
        for K in args.nfe:
            logsnr = spacing("logsnr", schedule, K)
            started = time.time()
            opt_config = dataclasses.replace(
                config,
                schedule_opt=dataclasses.replace(config.schedule_opt, steps=K, n_starts=512 if not args.quick else 64),
            )
            times = phase1(model.model, opt_config, schedule, DataSource(config.data)).times  # ends at -1
            phase1_seconds = time.time() - started
            optimised = times[:-1].flip(0)  # increasing model times
            candidates = {
                "DDIM, log-SNR steps": ddim_table(schedule, logsnr),
                "DPM-Solver++(2M), log-SNR steps": dpm_solver_pp_2m_table(schedule, logsnr),
                "DDIM, optimised steps": ddim_table(schedule, optimised),
            }
            for name, table in candidates.items():
                _, result = score(model, table, config, args.n_samples, args.repeats)
                extra_info = (
                    {"phase1_seconds": phase1_seconds, "times": optimised.tolist()} if "optimised" in name else {}
                )
                rows.append(row(name, data, K, result, **extra_info))
            for name, steps in (("SFT-PG (B), log-SNR steps", logsnr), ("SFT-PG (B), optimised steps", optimised)):
                start = ddim_table(schedule, steps, eta=args.eta, noise_at_last_step=True)
                _, result = score(model, start, config, args.n_samples, args.repeats)
                rows.append(row(name.replace("SFT-PG (B)", f"start: DDIM eta={args.eta}"), data, K, result))
                with tempfile.TemporaryDirectory() as tmp:
                    tuned, curve, wall = run_finetune(config, model, Path(tmp), args.progress, table=start)
                _, result = score(tuned.model, tuned.table, config, args.n_samples, args.repeats)
                rows.append(
                    row(
                        name,
                        data,
                        K,
                        result,
                        seconds=tuned.result.seconds,
                        wall_seconds=wall,
                        curve=curve,
                        final_std=tuned.table.s.tolist(),
                    )
                )
                print(
                    f"{data} NFE {K} {name}: W2 {rows[-1]['w2']:.4f} (start {rows[-2]['w2']:.4f}, floor "
                    f"{result['floor']['w2']:.4f}) in {tuned.result.seconds:.0f} s",
                    flush=True,
                )
    print_table(
        [{k: v for k, v in r.items() if k != "curve"} for r in rows],
        "Optimised schedule -> SFT-PG, against heuristic steps and training-free samplers",
    )
    for data in args.data:
        for K in args.nfe:
            cell = [r for r in rows if r["data"] == data and r["steps"] == K and not r["method"].startswith("start")]
            best = min(cell, key=lambda r: r["w2"])
            print(f"{data} NFE {K}: best {best['method']} W2 {best['w2']:.4f} +- {best['w2_sd']:.4f}")
    write_results(args.out, rows, budget={**info, "eta": args.eta, "learn_variance": args.learn_variance})
    series = {}
    for r in rows:
        if r.get("curve"):
            series[f"{r['data']} NFE {r['steps']}: {r['method']}"] = (
                [c["seconds"] for c in r["curve"]],
                [c["w2"] for c in r["curve"]],
            )
    curves(
        series,
        args.out.with_suffix(".png"),
        "training seconds",
        "held-out W2 during fine-tuning",
        logy=True,
        title="SFT-PG (B) from log-SNR and optimised steps",
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
