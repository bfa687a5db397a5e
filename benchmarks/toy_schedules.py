"""Few-step samplers and schedules on T=1000 linear-schedule DDPMs (issue 4).

For the swiss roll and the two moons, a DDPM (linear betas, T = 1000) is pretrained, then every
sampler is scored by exact W2 (and sliced W2) against fresh data at NFE in {2, 4, 6, 10}:

* fixed samplers (K evaluations at the first K points of a K+1-point spacing from T-1 to 0, the
  last step landing on data): DDPM on a uniform sub-sequence, DDIM (eta = 0) with each spacing (uniform,
  quadratic, log-SNR, Karras rho=7), FastDPM STEP/VAR x linear/quadratic (kappa = 0),
  Analytic-DPM (DDPM mean, uniform steps), DPM-Solver(2M) and DPM-Solver++(2M) (log-SNR steps);
* schedule methods, all sampled with the discretisation bound's DDIM sampler (endpoints T-1 and 0):
  Phase 1 by exact DP on a grid, Phase 1 by Adam early-stopped on held-out sliced W2,
  Phase 1 + Phase 2, Phase 2 at uniform steps, Align Your Steps; and Watson et al.'s ELBO DP
  (sampled with DDPM on its steps); and the Phase-1 schedule as the initial sampler of shortcut
  fine-tuning (SFT-PG with a baseline, fewstep.finetune; DDPM with noise at every step on its steps).

"seconds" is the optimisation cost of a row (0 for fixed samplers). Writes JSON of the shape
{"floor", "floors", "budget", "rows", "adam_trace"} and a PNG (W2 against NFE, one line per method).

    python benchmarks/toy_schedules.py --quick --out benchmarks/results/toy_schedules.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from fewstep.config import load_config
from fewstep.data import DataSource
from fewstep.metrics import score
from fewstep.pretrain import pretrain
from fewstep.rollout import sample
from fewstep.runs import Run
from fewstep.samplers import (
    analytic_dpm_table,
    ddim_table,
    dpm_solver_2m_table,
    dpm_solver_pp_2m_sample,
    estimate_gamma,
    fastdpm_table,
    spacing,
)
from fewstep.schedule_opt import (
    align_your_steps,
    bound_sampler_table,
    finetune_at_steps,
    optimise_adam,
    optimise_dp,
    watson_dp,
)
from fewstep.schedules import make_schedule
from fewstep.steps import ddpm_table
from fewstep.metrics import sliced_w2

NFES = (2, 4, 6, 10)
DATASETS = ("swiss_roll", "moons")
BUDGETS = {
    "quick": {
        "pretrain_steps": 10000,
        "eval_samples": 2000,
        "n_mc": 2048,
        "adam_steps": 200,
        "finetune_steps": 600,
        "sft_iterations": 300,
    },
    "full": {
        "pretrain_steps": 20000,
        "eval_samples": 5000,
        "n_mc": 4096,
        "adam_steps": 400,
        "finetune_steps": 2000,
        "sft_iterations": 2000,
    },
}


def pretrained(name: str, budget: dict, workdir: Path):
    config = load_config(
        None,
        [
            f"data.name={name}",
            "schedule.kind=linear",
            "schedule.T=1000",
            f"pretrain.steps={budget['pretrain_steps']}",
            "pretrain.batch_size=256",
            f"evaluate.n_samples={budget['eval_samples']}",
        ],
    )
    run = Run(workdir / name, config)
    started = time.time()
    model = pretrain(config, run, progress=False)
    return model.requires_grad_(False), config, time.time() - started


class Scorer:
    """Exact W2 and sliced W2 of n samples against one fresh data draw (the same for every method)."""

    def __init__(self, config, n: int):
        data = DataSource(config.data)
        self.n, self.shape = n, data.shape
        self.reference = data.draw(n, config.evaluate.seed)
        floor = score(*data.floor_pair(n, config.evaluate.seed + 1), seed=config.evaluate.seed)
        self.floor = floor.as_dict()
        self.seed = config.evaluate.seed

    def table(self, model, table) -> dict:
        return self.samples(sample(model, table, self.n, self.shape, seed=self.seed + 5))

    def samples(self, x: torch.Tensor) -> dict:
        return score(x, self.reference, seed=self.seed).as_dict()


def evaluated(times: torch.Tensor) -> torch.Tensor:
    """The K model evaluations of a K+1-point spacing from 0 to T-1: drop t = 0 (the last step lands on data)."""
    return times[1:]


def fixed_samplers(model, schedule, K: int, data: torch.Tensor, n_mc: int) -> dict:
    """name -> (table or a callable noise -> samples, seconds of setup)."""
    uniform_int = evaluated(spacing("uniform", schedule, K + 1, integer=True))
    out = {"ddpm/uniform": (ddpm_table(schedule, uniform_int.long(), "beta_tilde", False), 0.0)}
    for name in ("uniform", "quadratic", "logsnr", "karras"):
        out[f"ddim/{name}"] = (ddim_table(schedule, evaluated(spacing(name, schedule, K + 1))), 0.0)
    for approach in ("STEP", "VAR"):
        for kind in ("linear", "quadratic"):
            out[f"fastdpm/{approach}-{kind}"] = (fastdpm_table(schedule, K, approach, kind, kappa=0.0), 0.0)
    started = time.time()
    gamma = estimate_gamma(model, schedule, uniform_int, data, n_mc)
    out["analytic_dpm/uniform"] = (analytic_dpm_table(schedule, uniform_int, gamma, "ddpm"), time.time() - started)
    logsnr = evaluated(spacing("logsnr", schedule, K + 1))
    out["dpm_solver_2m/logsnr"] = (dpm_solver_2m_table(schedule, logsnr), 0.0)
    out["dpm_solver++_2m/logsnr"] = (lambda noise: dpm_solver_pp_2m_sample(model, schedule, logsnr, noise), 0.0)
    return out


def schedule_methods(model, config, schedule, K: int, data: torch.Tensor, budget: dict, scorer: Scorer, log) -> dict:
    """name -> (model, table, seconds) for the optimised-schedule methods."""
    out = {}
    ft = {"steps": budget["finetune_steps"], "lr": 1e-4, "batch_size": 256, "weighting": "uniform"}
    started = time.time()
    dp = optimise_dp(model, schedule, K, data, grid_size=200, n_mc=budget["n_mc"])
    t_dp = time.time() - started
    out["opt/phase1-dp"] = (model, bound_sampler_table(schedule, dp.times), t_dp)
    log(f"  K={K} phase-1 DP times {[round(float(t)) for t in dp.times]}")

    heldout = DataSource(config.data).draw(2000, config.evaluate.seed + 101)

    def metric(times):
        x = sample(model, bound_sampler_table(schedule, times), 2000, scorer.shape, seed=config.evaluate.seed + 102)
        return sliced_w2(x, heldout, 50, seed=0)

    started = time.time()
    adam = optimise_adam(
        model,
        schedule,
        spacing("logsnr", schedule, K + 1).flip(0),
        data,
        metric,
        steps=budget["adam_steps"],
        lr=0.05,
        batch_size=512,
        eval_every=20,
        patience=4,
    )
    out["opt/phase1-adam"] = (model, bound_sampler_table(schedule, adam.times), time.time() - started)
    log(f"  K={K} phase-1 Adam times {[round(float(t)) for t in adam.times]}")

    started = time.time()
    tuned = finetune_at_steps(model, schedule, dp.times, data, **ft).requires_grad_(False)
    out["opt/phase1+2"] = (tuned, bound_sampler_table(schedule, dp.times), t_dp + time.time() - started)

    uniform = spacing("uniform", schedule, K + 1).round().flip(0)
    started = time.time()
    tuned_u = finetune_at_steps(model, schedule, uniform, data, **ft).requires_grad_(False)
    out["opt/phase2-uniform"] = (tuned_u, bound_sampler_table(schedule, uniform), time.time() - started)
    out["uniform (bound sampler)"] = (model, bound_sampler_table(schedule, uniform), 0.0)

    if budget.get("sft_iterations"):
        out.update(shortcut_rows(model, config, dp, budget, t_dp))

    started = time.time()
    ays = align_your_steps(model, schedule, K, data, grid_size=120, n_mc=1024)
    out["ays"] = (model, bound_sampler_table(schedule, ays.times), time.time() - started)
    log(f"  K={K} AYS times {[round(float(t)) for t in ays.times]}")

    started = time.time()
    watson = watson_dp(model, schedule, K, data, n_mc=1024)
    steps = watson.times.flip(0).long()
    out["watson-elbo-dp"] = (model, ddpm_table(schedule, steps, "beta_tilde", False), time.time() - started)
    log(f"  K={K} Watson times {steps.flip(0).tolist()}")
    return out


def shortcut_rows(model, config, dp, budget: dict, t_dp: float) -> dict:
    """Optimised schedule (Phase 1, DP) as the initial sampler of shortcut fine-tuning (SFT-PG, fewstep.finetune)."""
    import copy

    from fewstep.finetune import finetune
    from fewstep.schedule_opt import shortcut_table

    schedule = make_schedule("linear", 1000)
    table = shortcut_table(schedule, dp.times)
    n = budget["sft_iterations"]
    ft_config = load_config(
        None,
        [
            f"data.name={config.data.name}",
            "schedule.kind=linear",
            "schedule.T=1000",
            f"finetune.iterations={n}",
            f"finetune.eval_every={n}",
            f"finetune.checkpoint_every={n}",
            "finetune.eval_samples=500",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        tuned, _ = finetune(
            ft_config, Run(Path(tmp) / "sft", ft_config), copy.deepcopy(model), progress=False, table=table
        )
        seconds = time.time() - started
    return {
        "opt/phase1-dp as DDPM (SFT init)": (model, table, t_dp),
        "opt/phase1-dp + SFT-PG": (tuned.requires_grad_(False), table, t_dp + seconds),
    }


def adam_trace(model, config, schedule, data, K: int, budget: dict, scorer: Scorer) -> list[dict]:
    """Adam without early stopping: the bound keeps falling while held-out sample quality turns (over-optimisation)."""
    heldout = DataSource(config.data).draw(2000, config.evaluate.seed + 101)

    trace = []

    def metric(times):
        x = sample(model, bound_sampler_table(schedule, times), 2000, scorer.shape, seed=config.evaluate.seed + 102)
        value = sliced_w2(x, heldout, 50, seed=0)
        trace.append({"w2_eval": scorer.samples(x)["w2"]})
        return value

    result = optimise_adam(
        model,
        schedule,
        spacing("logsnr", schedule, K + 1).flip(0),
        data,
        metric,
        steps=budget["adam_steps"] * 2,
        lr=0.05,
        batch_size=512,
        eval_every=20,
        patience=10**9,
    )
    return [{**h, **t} for h, t in zip(result.history, trace)]


def figure(rows: list[dict], floors: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(floors)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5.5), squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("reference")))
    cmap = plt.get_cmap("tab20")
    for ax, name in zip(axes[0], datasets):
        for i, m in enumerate(methods):
            pts = sorted((r["steps"], r["w2"]) for r in rows if r["method"] == m and r["data"] == name)
            bold = m.startswith("opt/phase1")
            ax.plot(
                *zip(*pts),
                marker="o",
                ms=3,
                lw=2.5 if bold else 1.0,
                color=cmap(i % 20),
                ls="-" if i < 20 else "--",
                label=m,
            )
        ax.axhline(floors[name]["w2"], color="k", ls=":", label="noise floor")
        ref = [r["w2"] for r in rows if r["data"] == name and r["method"] == "reference: ddpm/all"]
        if ref:
            ax.axhline(ref[0], color="k", ls="--", lw=1, label="DDPM, all 1000 steps")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (model evaluations)")
        ax.set_ylabel("W2 to data")
        ax.set_title(f"{name} (T=1000 linear DDPM)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trace_figure(traces: dict, floors: dict, path: Path) -> None:
    """Adam on the bound without early stopping (K = 4): the loss and the held-out W2 per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(traces), figsize=(5.5 * len(traces), 4), squeeze=False)
    for ax, (name, trace) in zip(axes[0], traces.items()):
        pts = [(h["step"], h["loss"], h["w2_eval"]) for h in trace if "loss" in h]
        steps, loss, w2 = zip(*pts)
        ax.plot(steps, loss, color="tab:blue", marker="o", ms=3, label="discretisation loss (MC)")
        ax.set_xlabel("Adam iteration")
        ax.set_ylabel("loss", color="tab:blue")
        twin = ax.twinx()
        twin.plot(steps, w2, color="tab:red", marker="s", ms=3, label="W2 of samples")
        twin.set_ylabel("W2 to data", color="tab:red")
        ax.set_title(f"{name}: Phase 1 by Adam, K=4, no early stopping")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON output file (the PNG goes next to it)")
    parser.add_argument(
        "--quick", action="store_true", help="reduced budget for a shared 2-core CPU (stated in the output)"
    )
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated toy data sets")
    parser.add_argument("--nfe", default=",".join(map(str, NFES)), help="comma-separated NFEs")
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="override the budget's pretraining steps (smoke tests)"
    )
    args = parser.parse_args(argv)
    budget = dict(BUDGETS["quick" if args.quick else "full"])
    if args.pretrain_steps:
        budget["pretrain_steps"] = args.pretrain_steps
    nfes = [int(k) for k in args.nfe.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows, floors, traces, pretrain_seconds = [], {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            model, config, secs = pretrained(name, budget, Path(tmp))
            pretrain_seconds[name] = round(secs, 1)
            log(f"{name}: pretrained in {secs:.0f} s")
            schedule = make_schedule("linear", 1000)
            data = DataSource(config.data).train()
            scorer = Scorer(config, budget["eval_samples"])
            floors[name] = scorer.floor
            reference = scorer.table(model, ddpm_table(schedule, None, "beta_tilde", False))
            rows.append(
                {"data": name, "method": "reference: ddpm/all", "steps": schedule.T, **reference, "seconds": 0.0}
            )
            log(f"{name}: DDPM with all {schedule.T} steps W2 {reference['w2']:.4f}")
            for K in nfes:
                for method, (table, secs) in fixed_samplers(model, schedule, K, data, budget["n_mc"]).items():
                    if callable(table):
                        noise = torch.randn(
                            budget["eval_samples"], *scorer.shape, generator=torch.Generator().manual_seed(5)
                        )
                        scores = scorer.samples(table(noise))
                    else:
                        scores = scorer.table(model, table)
                    rows.append({"data": name, "method": method, "steps": K, **scores, "seconds": round(secs, 2)})
                for method, (m, table, secs) in schedule_methods(
                    model, config, schedule, K, data, budget, scorer, log
                ).items():
                    rows.append(
                        {
                            "data": name,
                            "method": method,
                            "steps": K,
                            **scorer.table(m, table),
                            "seconds": round(secs, 2),
                        }
                    )
                log(
                    f"{name} K={K}: "
                    + ", ".join(f"{r['method']} {r['w2']:.3f}" for r in rows if r["data"] == name and r["steps"] == K)
                )
            traces[name] = adam_trace(model, config, schedule, data, 4, budget, scorer)
    result = {
        "floor": floors[next(iter(floors))],
        "floors": floors,
        "budget": {
            **budget,
            "mode": "quick" if args.quick else "full",
            "pretrain_seconds": pretrain_seconds,
            "note": "T=1000 linear DDPM, MLP 3x128; W2 exact on eval_samples points",
        },
        "rows": rows,
        "adam_trace": traces,
    }
    out.write_text(json.dumps(result, indent=1))
    figure(rows, floors, out.with_suffix(".png"))
    trace_figure(traces, floors, out.with_name(out.stem + "_adam.png"))
    print_table(rows, floors, nfes)
    return 0


def print_table(rows: list[dict], floors: dict, nfes: list[int]) -> None:
    for name, floor in floors.items():
        print(f"\n{name}: W2 (noise floor W2 {floor['w2']:.4f}, sliced W2 {floor['sw2']:.4f})")
        print("| method | " + " | ".join(f"NFE {k}" for k in nfes) + " | seconds (max) |")
        print("|---|" + "---|" * (len(nfes) + 1))
        for r in rows:
            if r["data"] == name and r["method"].startswith("reference"):
                print(f"({r['method']}: {r['steps']} steps, W2 {r['w2']:.4f})")
        for m in dict.fromkeys(
            r["method"] for r in rows if r["data"] == name and not r["method"].startswith("reference")
        ):
            sel = {r["steps"]: r for r in rows if r["data"] == name and r["method"] == m}
            cells = " | ".join(f"{sel[k]['w2']:.4f}" if k in sel else "-" for k in nfes)
            print(f"| {m} | {cells} | {max(r['seconds'] for r in sel.values()):.1f} |")


if __name__ == "__main__":
    sys.exit(main())
