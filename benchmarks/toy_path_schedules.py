"""Few-step schedules scored by their discretisation error and by W2 at 10K samples (schedule-optimisation study).

T = 1000 linear-schedule MLP DDPMs (3x128, pretrained 10k steps, cached in benchmarks/.cache) on
the swiss roll and the two moons, NFE 2, 4, 6, 8, 10. Every method is run from the same
evaluation starts x_T: five batches of 2,000 (seeds 1..5), independent of the 512 starts (seed 0)
that the data-free schedule methods optimise on.

* discretisation error (fewstep.schedule_opt.reference): RMS per dimension of the K-step output
  minus the fine 1000-step DDIM output from the same start; mean and std over the five batches;
* W2 (exact, POT) of the 10K outputs against one 10K data draw; the floor is W2 between two 10K
  data draws (three pairs). ``--w2-seeds`` repeats W2 with fresh 10K starts and data draws for
  the new path-bound schedule and the best other training-free method of each cell (spread).

Methods: DDIM with uniform / quadratic / log-SNR / Karras spacings, DPM-Solver(2M) and ++(2M) on
log-SNR steps, Align Your Steps, Watson's ELBO DP (DDIM on its steps for the error; W2 also for
its own DDPM sampler), the forward-process bound of Phase 1 (DP), the path bound (DP, flow
propagation) and the GITS-style DP (local error, no propagation). Every DDIM row evaluates the
model at its K times and lands on clean data. Stage 1 (schedules, outputs, errors) is fast; stage 2
(W2, about 30 s each on one core) is resumable: results are cached per row in ``--work``.

    nice -n 10 python benchmarks/toy_path_schedules.py --out benchmarks/results/toy_path_schedules.json
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

from fewstep.config import load_config  # noqa: E402
from fewstep.data import DataSource  # noqa: E402
from fewstep.evaluation.points import w2  # noqa: E402
from fewstep.rollout import rollout, sample  # noqa: E402
from fewstep.samplers import dpm_solver_2m_table, dpm_solver_pp_2m_table, spacing  # noqa: E402
from fewstep.schedule_opt.reference import table_output  # noqa: E402
from fewstep.schedule_opt import align_your_steps, optimise_dp, watson_dp  # noqa: E402
from fewstep.schedule_opt.path_bound import path_costs, schedule_cost  # noqa: E402
from fewstep.schedule_opt.dp import min_cost_path  # noqa: E402
from fewstep.schedule_opt.reference import ddim_output, error_over_batches, fine_reference, output_error  # noqa: E402
from fewstep.schedule_opt.refine import coordinate_refine, refine_ddim  # noqa: E402
from fewstep.schedules import make_schedule  # noqa: E402
from fewstep.samplers import ddpm_table  # noqa: E402

NFES = (2, 4, 6, 8, 10)
DATASETS = ("swiss_roll", "moons")
CLEAN = -1.0
NEW = ("path-bound-dp", "path-bound-dp+refine", "dpm_solver++_2m/refined")
"""This study's methods; every other row is a baseline."""
DDIM_ROWS_WITH_BOUND = (
    "ays",
    "watson-elbo-dp (DDIM)",
    "phase1-forward-bound-dp",
    "path-bound-dp",
    "gits-style-dp",
    "path-bound-dp+refine",
)


def toy_config(data: str, steps: int = 10_000, hidden: str | None = None):
    extra = [f"model.hidden={hidden}"] if hidden else []
    return load_config(
        None,
        [
            f"data.name={data}",
            "schedule.kind=linear",
            "schedule.T=1000",
            f"pretrain.steps={steps}",
            "pretrain.batch_size=256",
            f"pretrain.log_every={steps // 10}",
            f"pretrain.checkpoint_every={steps}",
            *extra,
        ],
    )


def to_clean(times: torch.Tensor) -> torch.Tensor:
    """Decreasing K+1 times ending at 0 -> the same K evaluations, landing on clean data."""
    times = torch.as_tensor(times, dtype=torch.float64).clone()
    times[-1] = CLEAN
    return times


def starts(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Outputs:
    """name -> callable x_T -> output (data units), for the fixed and optimised methods of one NFE."""

    def __init__(self, model, schedule, K, data, ref_opt, log):
        self.model, self.schedule, self.K = model, schedule, K
        self.rows, self.times, self.seconds = {}, {}, {}
        for name in ("uniform", "quadratic", "logsnr", "karras"):
            self.ddim(f"ddim/{name}", to_clean(spacing(name, schedule, K + 1).flip(0)), 0.0)
        logsnr = spacing("logsnr", schedule, K + 1)[1:]
        table = dpm_solver_2m_table(schedule, logsnr)
        self.rows["dpm_solver_2m/logsnr"] = lambda x: self.run_table(table, x)
        pp_table = dpm_solver_pp_2m_table(schedule, logsnr)
        self.rows["dpm_solver++_2m/logsnr"] = lambda x: table_output(model, pp_table, x).double()
        timed = [
            ("ays", lambda: align_your_steps(model, schedule, K, data, grid_size=120, n_mc=1024).times),
            (
                "watson-elbo-dp (DDIM)",
                lambda: torch.cat(
                    [watson_dp(model, schedule, K, data, n_mc=1024).times, torch.tensor([0.0], dtype=torch.float64)]
                ),
            ),
            ("phase1-forward-bound-dp", lambda: optimise_dp(model, schedule, K, data, grid_size=200, n_mc=2048).times),
        ]
        for name, make in timed:
            started = time.time()
            self.ddim(name, to_clean(make()), time.time() - started)
        watson_steps = self.times["watson-elbo-dp (DDIM)"][:-1].flip(0).long()
        ddpm = ddpm_table(schedule, watson_steps, "beta_tilde", False)
        self.rows["watson-elbo-dp (DDPM, own sampler)"] = ("stochastic", ddpm)
        for name, propagate in (("path-bound-dp", "flow"), ("gits-style-dp", "none")):
            started = time.time()
            path, value = min_cost_path(ref_opt.costs[propagate], K)
            self.ddim(name, ref_opt.grid[path], ref_opt.seconds[propagate] + time.time() - started)
        started = time.time()
        refined = refine_ddim(model, schedule, self.times["path-bound-dp"], ref_opt.reference)
        self.ddim("path-bound-dp+refine", refined.times, self.seconds["path-bound-dp"] + time.time() - started)
        self.dpm_pp_refined(ref_opt.reference)
        for name, t in self.times.items():
            log(f"  K={K} {name}: {[round(float(v)) for v in t]}")

    def dpm_pp_refined(self, reference):
        """DPM-Solver++(2M) on times polished on its own error, from the better of log-SNR and path-dp+refine."""

        def run(t, x):
            return table_output(self.model, dpm_solver_pp_2m_table(self.schedule, t[:-1].flip(0)), x).double()

        started = time.time()
        error = lambda t: output_error(run(t, reference.x_T), reference)  # noqa: E731
        inits = [
            to_clean(spacing("logsnr", self.schedule, self.K + 1, integer=True).flip(0)),
            self.times["path-bound-dp+refine"],
        ]
        best = coordinate_refine(error, min(inits, key=error))
        name = "dpm_solver++_2m/refined"
        self.times[name] = best.times
        self.seconds[name] = self.seconds["path-bound-dp+refine"] + time.time() - started
        self.rows[name] = lambda x: run(best.times, x)

    def ddim(self, name, times, seconds):
        self.times[name], self.seconds[name] = times, seconds
        self.rows[name] = lambda x: ddim_output(self.model, self.schedule, times, x)

    def run_table(self, table, x):
        noise = torch.zeros(table.K + 1, *x.shape)
        noise[0] = x.float()
        return rollout(self.model, table, noise).x0.double()

    def output(self, name, x, seed):
        row = self.rows[name]
        if isinstance(row, tuple):  # stochastic sampler: W2 only, seeded samples of the right count
            return sample(self.model, row[1], len(x), (2,), seed=seed).double()
        with torch.no_grad():
            return row(x)


class OptimisationReference:
    """The path-bound and GITS-style cost matrices on every integer time, from 512 starts (seed 0)."""

    def __init__(self, model, schedule, cache):
        self.costs, self.seconds = {}, {}
        started = time.time()
        self.reference = reference = fine_reference(model, schedule, starts(512, 0), cache_dir=cache)
        ref_seconds = time.time() - started
        for propagate in ("flow", "none"):
            started = time.time()
            self.grid, self.costs[propagate] = path_costs(model, schedule, reference, None, propagate)
            self.seconds[propagate] = ref_seconds + time.time() - started


def cached_w2(work: Path, key: str, x: torch.Tensor, y: torch.Tensor) -> float:
    path = work / "w2" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())["w2"]
    value = w2(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"w2": value}))
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tables", action="store_true", help="print the tables of an existing --out and exit")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sched/work"), help="cache of references and W2 values")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--nfe", default=",".join(map(str, NFES)))
    parser.add_argument("--batches", type=int, default=5, help="evaluation batches of 2,000 starts")
    parser.add_argument("--no-w2", action="store_true", help="stage 1 only")
    parser.add_argument(
        "--w2-seeds",
        type=int,
        default=3,
        help="W2 repeats (fresh 10K starts and data) for the spread rows at NFE 4 and 10",
    )
    parser.add_argument("--confirm", type=int, default=3, help="baselines per cell confirmed by W2 at 10K")
    args = parser.parse_args(argv)
    if args.tables:
        result = json.loads(args.out.read_text())
        print(markdown(result))
        figure(result, args.out.with_suffix(".png"))
        return 0
    torch.set_num_threads(1)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    schedule = make_schedule("linear", 1000)
    nfes = [int(k) for k in args.nfe.split(",")]
    rows, floors, spread_rows = [], {}, []
    for name in args.datasets.split(","):
        config = toy_config(name)
        model = pretrained(config)[0].model
        model.requires_grad_(False)
        data_source = DataSource(config.data)
        data = data_source.train()
        ref_opt = OptimisationReference(model, schedule, args.work)
        eval_starts = [starts(2000, seed) for seed in range(1, args.batches + 1)]
        refs = [fine_reference(model, schedule, x, cache_dir=args.work) for x in eval_starts]
        all_starts, all_ref = torch.cat(eval_starts), torch.cat([r.output for r in refs])
        target = data_source.floor_pair(len(all_starts), 7)[0]
        if not args.no_w2:
            pairs = [
                cached_w2(
                    args.work,
                    f"{name}-floor-{s}",
                    data_source.floor_pair(len(all_starts), 100 + 2 * s)[0],
                    data_source.floor_pair(len(all_starts), 101 + 2 * s)[0],
                )
                for s in range(3)
            ]
            floors[name] = error_over_batches(pairs)
            ref_w2 = cached_w2(args.work, f"{name}-reference", all_ref, target)
            rows.append({"data": name, "method": "reference: DDIM, 1000 steps", "nfe": 1000, "w2": ref_w2})
            log(f"{name}: floor {floors[name]}, reference W2 {ref_w2:.4f}")
        for K in nfes:
            methods = Outputs(model, schedule, K, data, ref_opt, log)
            outputs = {}
            for method in methods.rows:
                out = methods.output(method, all_starts, seed=11)
                row = {
                    "data": name,
                    "method": method,
                    "nfe": K,
                    "seconds": round(methods.seconds.get(method, 0.0), 2),
                    "times": [float(t) for t in methods.times.get(method, [])],
                }
                times = methods.times.get(method)
                if times is not None and method in DDIM_ROWS_WITH_BOUND and bool((times == times.round()).all()):
                    row["bound"] = schedule_cost(ref_opt.costs["flow"], ref_opt.grid, times)
                if not isinstance(methods.rows[method], tuple):
                    errs = [output_error(o, r) ** 0.5 for o, r in zip(out.split(2000), refs)]
                    row["error"] = error_over_batches(errs)
                if not args.no_w2:
                    row["w2_2k"] = w2(out[:2000], target[:2000])
                outputs[method] = out
                rows.append(row)
                log(
                    f"{name} K={K} {method}: error {row.get('error', {}).get('mean', float('nan')):.4f}"
                    f" W2(2K) {row.get('w2_2k', float('nan')):.4f}"
                )
            if args.no_w2:
                continue
            cell = [r for r in rows if r["data"] == name and r["nfe"] == K]
            for row in cell:
                if row["method"] in confirmed(cell, args.confirm):
                    key = f"{name}-{K}-{row['method']}".replace("/", "_").replace(" ", "_")
                    row["w2"] = cached_w2(args.work, key, outputs[row["method"]], target)
                    log(f"{name} K={K} {row['method']}: W2(10K) {row['w2']:.4f}")
            if args.w2_seeds > 1 and K in (4, 10):
                spread_rows += w2_spread(args, name, K, methods, rows, data_source, log)
    result = {
        "floors": floors,
        "rows": rows,
        "w2_spread": spread_rows,
        "note": "error: RMS per dim vs 1000-step DDIM from the same x_T, 5 x 2000 starts; W2 exact at 10K",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    figure(result, args.out.with_suffix(".png"))
    return 0


def figure(result: dict, path: Path) -> None:
    """Discretisation error (mean, +-1 sd band over batches) against NFE, one figure per data set."""
    from fewstep.plots import curves

    rows = [r for r in result["rows"] if "error" in r]
    for name in dict.fromkeys(r["data"] for r in rows):
        series, spread = {}, {}
        for method in dict.fromkeys(r["method"] for r in rows if r["data"] == name):
            mine = sorted((r for r in rows if r["data"] == name and r["method"] == method), key=lambda r: r["nfe"])
            series[method] = ([r["nfe"] for r in mine], [r["error"]["mean"] for r in mine])
            spread[method] = [r["error"]["std"] for r in mine]
        out = path.with_name(f"{path.stem}_{name}.png")
        curves(series, out, "NFE", "RMS distance to the 1000-step DDIM output", logy=True, title=name, spread=spread)
        print(f"wrote {out}")


def markdown(result: dict) -> str:
    """Tables: discretisation error (mean +- std over batches), W2 at 10K (or the 2K screen), W2 spread."""
    lines = []
    rows = result["rows"]
    for name in dict.fromkeys(r["data"] for r in rows):
        mine = [r for r in rows if r["data"] == name and r["nfe"] < 1000]
        nfes = sorted({r["nfe"] for r in mine})
        methods = list(dict.fromkeys(r["method"] for r in mine))
        cell = {(r["method"], r["nfe"]): r for r in mine}
        best_err = {k: min(r["error"]["mean"] for r in mine if r["nfe"] == k and "error" in r) for k in nfes}
        best_w2 = {k: min((r["w2"] for r in mine if r["nfe"] == k and "w2" in r), default=None) for k in nfes}
        head = "| method | " + " | ".join(f"NFE {k}" for k in nfes) + " |\n|---|" + "---:|" * len(nfes)
        lines += [
            f"\n**{name}**: discretisation error (RMS per dim against 1000-step DDIM from the same x_T; "
            "mean +- std over 5 batches of 2,000)\n",
            head,
        ]
        for m in methods:
            cells = []
            for k in nfes:
                r = cell.get((m, k), {})
                if "error" not in r:
                    cells.append("-")
                    continue
                text = f"{r['error']['mean']:.4f} +- {r['error']['std']:.4f}"
                cells.append(f"**{text}**" if r["error"]["mean"] == best_err[k] else text)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        floor = result["floors"].get(name)
        if floor:
            ref = next((r["w2"] for r in rows if r["data"] == name and r["nfe"] == 1000), float("nan"))
            lines += [
                f"\n**{name}**: W2 at 10K (exact; in brackets: the 2K screen only). Floor (two 10K data draws, "
                f"3 pairs): {floor['mean']:.4f} +- {floor['std']:.4f}; 1000-step DDIM: {ref:.4f}\n",
                head,
            ]
            for m in methods:
                cells = []
                for k in nfes:
                    r = cell.get((m, k), {})
                    if "w2" in r:
                        cells.append(f"**{r['w2']:.4f}**" if r["w2"] == best_w2[k] else f"{r['w2']:.4f}")
                    else:
                        cells.append(f"({r['w2_2k']:.3f})" if "w2_2k" in r else "-")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if result.get("w2_spread"):
        lines += [
            "\nW2 at 10K over 3 independent draws of 10K starts and 10K data (mean +- std)\n",
            "| data | NFE | method | W2 |",
            "|---|---:|---|---:|",
        ]
        for r in result["w2_spread"]:
            spread = f"{r['w2']['mean']:.4f} +- {r['w2']['std']:.4f}"
            lines.append(f"| {r['data']} | {r['nfe']} | {r['method']} | {spread} |")
    return "\n".join(lines)


def confirmed(cell: list[dict], n_baselines: int) -> list[str]:
    """Rows scored by W2 at 10K: this study's methods, the ``n_baselines`` best baselines by W2 at 2K
    (a cheap, noisy screen) and the best baseline by discretisation error."""
    baselines = [r for r in cell if r["method"] not in NEW and "w2_2k" in r]
    chosen = [r["method"] for r in sorted(baselines, key=lambda r: r["w2_2k"])[:n_baselines]]
    by_error = min((r for r in baselines if "error" in r), key=lambda r: r["error"]["mean"])["method"]
    return [*NEW, *chosen, *([by_error] if by_error not in chosen else [])]


def w2_spread(args, name, K, methods, rows, data_source, log) -> list[dict]:
    """W2 of the best new row and the best baseline row of a cell (by the first draw), over fresh 10K draws."""
    cell = [r for r in rows if r["data"] == name and r["nfe"] == K and "w2" in r]
    new = min((r for r in cell if r["method"] in NEW), key=lambda r: r["w2"])["method"]
    best = min((r for r in cell if r["method"] not in NEW), key=lambda r: r["w2"])["method"]
    out = []
    for method in (new, best):
        values = [next(r["w2"] for r in cell if r["method"] == method)]
        for s in range(1, args.w2_seeds):
            x = starts(10_000, 1000 + s)
            key = f"{name}-{K}-{method}-seed{s}".replace("/", "_").replace(" ", "_")
            values.append(
                cached_w2(
                    args.work,
                    key,
                    methods.output(method, x, seed=11 + s),
                    data_source.floor_pair(10_000, 7 + 100 * s)[0],
                )
            )
        out.append({"data": name, "nfe": K, "method": method, "w2": error_over_batches(values)})
        log(f"{name} K={K} W2 spread {method}: {out[-1]['w2']}")
    return out


if __name__ == "__main__":
    sys.exit(main())
