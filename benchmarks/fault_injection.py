"""Fault injection: SIGKILL pretraining and fine-tuning runs at random points, resume, compare.

For each stage, one run goes through uninterrupted (the reference); another is started as a
child process and killed with SIGKILL after a random delay, again and again (each attempt resumes
with ``--resume``, or starts afresh when the kill came before the run recorded its config), until
``--kills`` kills have landed; then it is let finish. Its final checkpoints must equal the
reference's tensor for tensor (``torch.equal``: bit-identical weights, EMA, optimiser state and
random generator state), its metrics must equal the reference's (timings aside) and be valid JSON
lines, and no temporary file may be left.

Children are forked from this process (torch already imported), so an attempt costs its work, not
an interpreter start; each is a separate process killed by the kernel, not an exception.

    nice -n 10 python benchmarks/fault_injection.py --kills 10 --out benchmarks/results/fault_injection.json

tests/test_fault_injection.py runs the same driver with 5 kills per stage.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

PRETRAIN = [
    "pretrain.steps=1500",
    "pretrain.batch_size=64",
    "pretrain.checkpoint_every=20",
    "pretrain.log_every=20",
    "model.hidden=[32,32]",
    "schedule.T=10",
    "seed=3",
    "evaluate.n_samples=64",
]
FINETUNE = [
    "finetune.iterations=120",
    "finetune.batch_size=16",
    "finetune.checkpoint_every=4",
    "finetune.log_every=4",
    "finetune.eval_every=20",
    "evaluate.train_samples=32",
    "evaluate.n_samples=64",
]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _child(args: list[str]) -> None:
    """A forked child: run the CLI, silently (its exit status tells the parent how it ended)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    torch.set_num_threads(1)
    from fewstep.cli import main

    main([str(a) for a in args])


def _preload() -> None:
    """Import what a command imports lazily, so that forked children start working at once."""
    import matplotlib.pyplot  # noqa: F401
    import ot  # noqa: F401
    import sklearn.datasets  # noqa: F401

    import fewstep.api  # noqa: F401
    import fewstep.cli  # noqa: F401
    import fewstep.plots  # noqa: F401
    from fewstep.models import adam

    adam([torch.zeros(1, requires_grad=True)], 1e-3)  # the optimiser imports torch._dynamo on first use


def _spawn(args: list[str]) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=_child, args=(args,))
    process.start()
    return process


def _step(run_dir: Path, stage: str) -> int | None:
    """The step of the stage's checkpoint, or None (no checkpoint yet)."""
    path = run_dir / "checkpoints" / f"{stage}.safetensors"
    if not path.is_file():
        return None
    from fewstep.checkpoint import load_checkpoint

    return int(load_checkpoint(path)[1]["step"])


def command(stage: str, run_dir: Path, base: Path | None, resume: bool) -> list[str]:
    if stage == "pretrain":
        return [
            "pretrain",
            "--run-dir",
            run_dir,
            "--quiet",
            *([] if resume else _sets(PRETRAIN)),
            *(["--resume"] if resume else []),
        ]
    if resume:
        return ["finetune", "--run-dir", run_dir, "--quiet", "--resume"]
    return ["finetune", "--checkpoint", base, "--run-dir", run_dir, "--quiet", *_sets(FINETUNE)]


def run_to_end(stage: str, run_dir: Path, base: Path | None, resume: bool = False) -> tuple[float, float, float]:
    """Run to the end; return its seconds, and when (seconds after the start) training began and ended:
    the run directory's record was written, and the stage's checkpoint last written."""
    started = time.time()
    process = _spawn(command(stage, run_dir, base, resume))
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{stage} run in {run_dir} ended with exit code {process.exitcode}")
    begin = (run_dir / "config.yaml").stat().st_mtime - started
    end = (run_dir / "checkpoints" / f"{stage}.safetensors").stat().st_mtime - started
    return time.time() - started, begin, end


def kill_and_resume(
    stage: str, run_dir: Path, base: Path | None, kills: int, delays: tuple[float, float], rng: random.Random
) -> dict:
    """Kill runs in ``run_dir`` (each after a delay drawn uniformly from ``delays``) until ``kills``
    SIGKILLs landed, then let one finish."""
    landed, attempts, finished = [], 0, False
    started = time.perf_counter()
    while len(landed) < kills and not finished:
        resume = (run_dir / "config.yaml").is_file()
        attempts += 1
        process = _spawn(command(stage, run_dir, base, resume))
        delay = rng.uniform(*delays)
        process.join(delay)
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            process.join()
            temporaries = sorted(p.name for p in run_dir.rglob("*") if p.is_file() and ".tmp" in p.name)
            metrics = run_dir / "metrics.jsonl"
            partial = metrics.is_file() and metrics.stat().st_size > 0 and not metrics.read_bytes().endswith(b"\n")
            landed.append(
                {
                    "after_s": round(delay, 3),
                    "checkpoint_step": _step(run_dir, stage),
                    "temporaries_left": temporaries,
                    "half_written_metrics_line": partial,
                }
            )
        elif process.exitcode != 0:
            raise RuntimeError(f"attempt {attempts} of {stage} ended with exit code {process.exitcode}")
        else:
            finished = True  # it finished before the kill: nothing left to interrupt
    if not finished:
        run_to_end(stage, run_dir, base, resume=(run_dir / "config.yaml").is_file())
        attempts += 1
    seconds = time.perf_counter() - started
    return {"kills": landed, "attempts": attempts, "seconds": round(seconds, 1)}


def _without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def compare(reference: Path, resumed: Path, stage: str) -> dict:
    """Tensor-by-tensor comparison of every checkpoint of ``stage``, the metrics, and leftovers."""
    checked, different = 0, []
    names = sorted(p.name for p in (reference / "checkpoints").glob(f"{stage}*.safetensors"))
    for name in names:
        a, b = load_file(str(reference / "checkpoints" / name)), load_file(str(resumed / "checkpoints" / name))
        if set(a) != set(b):
            different.append(f"{name}: tensor names differ")
            continue
        for key in a:
            checked += 1
            if not torch.equal(a[key], b[key]):
                different.append(f"{name}:{key}")
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line must be valid JSON
    reference_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    leftovers = sorted(str(p.relative_to(resumed)) for p in resumed.rglob("*") if ".tmp" in p.name)
    return {
        "checkpoints": names,
        "tensors_compared": checked,
        "tensors_different": different,
        "metrics_equal": _without_time(records) == _without_time(reference_records),
        "temporaries_left_at_end": leftovers,
        "summary_written": (resumed / "summary.md").is_file(),
    }


def inject(kills: int = 5, seed: int = 0, workdir: Path | None = None) -> dict:
    """Both stages: reference runs, killed-and-resumed runs, comparisons."""
    torch.set_num_threads(1)
    _preload()
    rng = random.Random(seed)
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fewstep-faults-")) if own else Path(workdir)
    results = {"kills_per_stage": kills, "seed": seed, "stages": {}}
    try:
        base = None
        for stage in ("pretrain", "finetune"):
            reference, resumed = workdir / f"{stage}-reference", workdir / f"{stage}-killed"
            seconds, begin, end = run_to_end(stage, reference, base)
            # from before training starts (a kill while the run starts) to well into it: each attempt
            # advances about 3/4 of the run divided by the number of kills
            delays = (0.5 * begin, begin + 1.5 * (end - begin) / kills)
            outcome = kill_and_resume(stage, resumed, base, kills, delays, rng)
            outcome.update(compare(reference, resumed, stage))
            outcome["reference_seconds"] = round(seconds, 1)
            outcome["training_window_s"] = [round(begin, 2), round(end, 2)]
            results["stages"][stage] = outcome
            base = reference / "checkpoints" / "pretrain.safetensors"
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def table(results: dict) -> str:
    rows = [
        "| stage | kills | attempts | checkpoint steps at the kills | tensors compared | different "
        "| metrics equal | temporaries left | seconds (reference / killed runs) |",
        "|---|---:|---:|---|---:|---:|---|---|---|",
    ]
    for stage, r in results["stages"].items():
        steps = ", ".join(str(k["checkpoint_step"]) for k in r["kills"])
        rows.append(
            f"| {stage} | {len(r['kills'])} | {r['attempts']} | {steps} | {r['tensors_compared']} "
            f"| {len(r['tensors_different'])} | {r['metrics_equal']} | {len(r['temporaries_left_at_end'])} "
            f"| {r['reference_seconds']} / {r['seconds']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per stage")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--out", default="benchmarks/results/fault_injection.json")
    args = parser.parse_args()
    started = time.perf_counter()
    results = inject(args.kills, args.seed)
    results["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    ok = all(
        not r["tensors_different"] and r["metrics_equal"] and not r["temporaries_left_at_end"] and r["summary_written"]
        for r in results["stages"].values()
    )
    print(f"{'bit-identical' if ok else 'DIFFERENT'}; {results['seconds']} s in all; written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
