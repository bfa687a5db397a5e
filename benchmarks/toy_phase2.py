"""Phase 2 on the toys: where fine-tuning at the K chosen times helps, and where it does not.

For T = 1000 linear DDPMs on the swiss roll and the moons, three pretrained models (MLP 3x128
trained 10k steps, MLP 2x32 trained 10k steps: capacity-limited, MLP 3x128 trained 1.5k steps:
under-trained), at NFE 2, 4, 10 on the path-bound schedule (DP then refinement, 512 starts):

* ``before``: the pretrained model;
* ``eps-loss (w)``: the eps-loss at the K steps with Phase 1's weights moved to the eps-error
  (``finetune_at_steps``, weighting="w", fixed); ``eps-loss (uniform)``: the old default;
* ``distill``: ``finetune_on_path`` (target "output": the K-step output matches the model's own
  1000-step DDIM output from 4,096 training starts; anchor 1 on every other time).

Scores on 2,000 independent starts: the discretisation error against the *pretrained* model's
fine reference (RMS per dim), W2 of 2,000 samples against data (floor about 0.05), the drift of
the tuned model at other times (eps-MSE against the pretrained model along its reference path)
and the change of the tuned model's own 1000-step output (RMS). ``--w2-10k`` adds W2 at 10K for
the before/distill pair at NFE 4.

    nice -n 10 python benchmarks/toy_phase2.py --out benchmarks/results/toy_phase2.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _toy_common import pretrained  # noqa: E402
from toy_path_schedules import starts, toy_config  # noqa: E402

from fewstep.data import DataSource  # noqa: E402
from fewstep.evaluation.points import w2  # noqa: E402
from fewstep.schedule_opt import finetune_at_steps  # noqa: E402
from fewstep.schedule_opt.distill import anchor_drift, finetune_on_path  # noqa: E402
from fewstep.schedule_opt.path_bound import optimise_path_dp  # noqa: E402
from fewstep.schedule_opt.reference import ddim_output, fine_reference, output_error  # noqa: E402
from fewstep.schedule_opt.refine import refine_ddim  # noqa: E402
from fewstep.schedules import make_schedule  # noqa: E402

MODELS = {
    "3x128 (10k steps)": (10_000, None),
    "2x32 (10k steps)": (10_000, "[32,32]"),
    "3x128 (1.5k steps)": (1_500, None),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sched/work"))
    parser.add_argument("--datasets", default="swiss_roll,moons")
    parser.add_argument("--nfe", default="2,4,10")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--w2-10k", action="store_true")
    parser.add_argument("--tables", action="store_true", help="print the tables of an existing --out and exit")
    args = parser.parse_args(argv)
    if args.tables:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    torch.set_num_threads(1)
    schedule = make_schedule("linear", 1000)
    rows = []
    for data_name in args.datasets.split(","):
        for label, (steps, hidden) in MODELS.items():
            config = toy_config(data_name, steps, hidden)
            model = pretrained(config)[0].model
            model.requires_grad_(False)
            source = DataSource(config.data)
            data = source.train()
            opt_ref = fine_reference(model, schedule, starts(512, 0), cache_dir=args.work)
            train_ref = fine_reference(model, schedule, starts(4096, 20), cache_dir=args.work)
            eval_ref = fine_reference(model, schedule, starts(2000, 1), cache_dir=args.work)
            target = source.floor_pair(10_000, 7)[0]
            gen = torch.Generator().manual_seed(3)
            drift_rows = torch.randint(0, 2000, (4096,), generator=gen)
            drift_fine = torch.randint(0, 1000, (4096,), generator=gen)
            for K in [int(k) for k in args.nfe.split(",")]:
                times = refine_ddim(model, schedule, optimise_path_dp(model, schedule, K, opt_ref).times, opt_ref).times
                level_times = times.clone()
                level_times[-1] = 0.0  # Phase 1's weights need a finite end level
                variants = {"before": lambda: model}
                for weighting in ("w", "uniform"):
                    variants[f"eps-loss ({weighting})"] = lambda wt=weighting: finetune_at_steps(
                        model, schedule, level_times, data, weighting=wt, steps=args.steps, lr=args.lr
                    ).requires_grad_(False)
                variants["distill"] = lambda: finetune_on_path(
                    model, schedule, times, train_ref, steps=args.steps, lr=args.lr
                )
                for variant, make in variants.items():
                    started = time.time()
                    tuned = make()
                    seconds = time.time() - started
                    with torch.no_grad():
                        out = ddim_output(tuned, schedule, times, eval_ref.x_T)
                        drift = float(anchor_drift(tuned, eval_ref, drift_rows, drift_fine))
                        fine_out = fine_reference(tuned, schedule, eval_ref.x_T[:500]).output
                    row = {
                        "data": data_name,
                        "model": label,
                        "nfe": K,
                        "variant": variant,
                        "times": times.tolist(),
                        "seconds": round(seconds, 1),
                        "error": output_error(out, eval_ref) ** 0.5,
                        "w2_2k": w2(out, target[:2000]),
                        "drift_eps_mse": drift,
                        "fine_output_change": float((fine_out - eval_ref.output[:500]).pow(2).mean().sqrt()),
                    }
                    if args.w2_10k and K == 4 and variant in ("before", "distill"):
                        big = ddim_output(tuned, schedule, times, torch.cat([starts(2000, s) for s in range(1, 6)]))
                        row["w2_10k"] = w2(big, target)
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "times"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "steps": args.steps, "lr": args.lr}
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """One table per data set: error / W2 at 2K per (model, NFE) and variant, with the drift columns."""
    lines = []
    rows = result["rows"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for name in dict.fromkeys(r["data"] for r in rows):
        lines += [
            f"\n**{name}**: discretisation error against the pretrained model's 1000-step DDIM / W2 of 2,000 "
            "samples (floor about 0.05) / [eps drift at other times, change of the 1000-step output]\n",
            "| model | NFE | " + " | ".join(variants) + " |",
            "|---|---:|" + "---|" * len(variants),
        ]
        for model in dict.fromkeys(r["model"] for r in rows):
            for k in sorted({r["nfe"] for r in rows}):
                cell = {r["variant"]: r for r in rows if r["data"] == name and r["model"] == model and r["nfe"] == k}
                if not cell:
                    continue
                texts = []
                for v in variants:
                    r = cell[v]
                    text = f"{r['error']:.4f} / {r['w2_2k']:.3f}"
                    if "w2_10k" in r:
                        text += f" (10K: {r['w2_10k']:.4f})"
                    if v != "before":
                        text += f" [{r['drift_eps_mse']:.1e}, {r['fine_output_change']:.3f}]"
                    texts.append(text)
                lines.append(f"| {model} | {k} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
