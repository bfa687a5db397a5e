"""Shared plumbing of the 28x28 MNIST benchmarks (the shapes of the paper's Tables 2 and 3).

Every number comes from the ``fewstep`` command line, run here as a subprocess exactly as a user
would type it (the commands are printed and stored in the JSON): ``fewstep pretrain``, ``fewstep
finetune``, ``fewstep evaluate``, ``fewstep export``. Each command's output goes to a log in the
work directory, and its CPU time (user + system, of the command and its children) is measured, so
the JSON reports the CPU minutes each row cost. A command whose output already exists is not run
again: its recorded CPU time is reused (delete the work directory to start over).

Settings: ``benchmarks/configs/mnist28.yaml`` (data split, U-Net, evaluation sizes); the FID
feature classifier is trained once on the training split and cached in ``<work>/cache``.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CONFIG = ROOT / "configs" / "mnist28.yaml"


class Commands:
    """Runs ``fewstep`` commands in a work directory, logs them, measures their CPU time, caches them."""

    def __init__(self, work: Path, extra: list[str] = ()):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.extra = list(extra)  # --set overrides added to every command that takes a config
        self.env = {**os.environ, "FEWSTEP_CACHE": str(self.work / "cache")}
        self.ledger_file = self.work / "cpu_seconds.json"
        self.ledger = json.loads(self.ledger_file.read_text()) if self.ledger_file.is_file() else {}
        self.history: list[dict] = []

    def run(self, name: str, args: list[str], done: Path | None = None, resume: Path | None = None) -> dict:
        """Run ``fewstep ARGS`` unless ``done`` exists; returns {command, cpu_s, wall_s, log}.

        ``resume``: a checkpoint; when it exists but ``done`` does not, the command was interrupted
        and goes on with ``--resume`` (its CPU time adds to the interrupted part's).
        """
        args = [*args, *(f"--set={s}" for s in self.extra)]
        command = "fewstep " + " ".join(shlex.quote(a) for a in args)
        resuming = resume is not None and Path(resume).is_file() and not (done is not None and Path(done).exists())
        argv = [sys.executable, "-m", "fewstep.cli", *args, *(["--resume"] if resuming else [])]
        return self._execute(name, argv, command, done, resuming)

    def run_python(self, name: str, code: str, args: list[str], done: Path | None = None) -> dict:
        """Run a Python program (``python -c CODE ARGS``) the same way, with its CPU time measured."""
        command = f"python -c <{name}> " + " ".join(shlex.quote(a) for a in args)
        return self._execute(name, [sys.executable, "-c", code, *args], command, done, False)

    def _execute(self, name: str, argv: list[str], command: str, done: Path | None, resuming: bool) -> dict:
        log = self.work / "logs" / f"{name}.log"
        previous = self.ledger.get(name, {})
        if done is not None and Path(done).exists() and name in self.ledger and not previous.get("partial"):
            record = previous
            print(f"[cached] {command}  ({record['cpu_s'] / 60:.1f} CPU min)", flush=True)
        else:
            print(f"$ {command}" + ("  (resumed)" if resuming else ""), flush=True)
            log.parent.mkdir(parents=True, exist_ok=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            tick = time.time()
            with open(log, "a" if resuming else "w") as out:
                code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if code != 0:
                sys.exit(f"command failed ({code}): {command}\n{log.read_text()[-3000:]}")
            earlier = previous if resuming else {}
            record = {
                "command": command,
                "cpu_s": round(cpu + earlier.get("cpu_s", 0.0), 1),
                "wall_s": round(time.time() - tick + earlier.get("wall_s", 0.0), 1),
            }
            self.ledger[name] = record
            self.ledger_file.write_text(json.dumps(self.ledger, indent=1))
            print(f"  {record['cpu_s'] / 60:.1f} CPU min, {record['wall_s'] / 60:.1f} min wall", flush=True)
        self.history.append({"name": name, **record, "log": str(log)})
        return {**record, "log": log}

    def cpu_minutes(self) -> float:
        return round(sum(r["cpu_s"] for r in self.history) / 60, 1)


def budget_record(args, T: int, schedule: str, finetune_sets: list[str], paper: str, **extra) -> dict:
    """The budget a table ran at (written into its JSON and printed first)."""
    record = {
        "image_size": 28,
        "config": str(CONFIG.relative_to(CONFIG.parents[2])),
        "T": T,
        "schedule": schedule,
        "pretrain_steps": args.pretrain_steps,
        "pretrain_batch": 64,
        "finetune": finetune_sets,
        **extra,
        "extra": args.overrides,
        "paper": paper,
        "quick": args.quick,
    }
    print("budget:", record, flush=True)
    return record


def pretrain_once(c: "Commands", name: str, steps: int, sets: list[str]) -> tuple[Path, Path, dict]:
    """``fewstep pretrain`` with the benchmark config (cached; an interrupted run resumes): the run
    directory, its checkpoint and the row of its final evaluation."""
    pre = c.work / name
    ckpt = pre / "checkpoints" / "pretrain.safetensors"
    argv = ["pretrain", "--config", str(CONFIG), "--set", f"pretrain.steps={steps}"]
    argv += [arg for s in sets for arg in ("--set", s)]
    c.run(name, [*argv, "--run-dir", str(pre), "--quiet"], done=pre / "summary.md", resume=ckpt)
    return pre, ckpt, run_evaluations(records(pre))[-1]


def evaluation(path: Path) -> dict:
    """The JSON written by ``fewstep evaluate --out``."""
    return json.loads(Path(path).read_text())


def records(run_dir: Path) -> list[dict]:
    """Everything a run logged (``metrics.jsonl``), read once for the helpers below."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def run_evaluations(logged: list[dict]) -> list[dict]:
    """The final evaluations among a run's :func:`records` (``stage: evaluate``), in order."""
    return [r for r in logged if r.get("stage") == "evaluate"]


def curve(logged: list[dict], stage: str = "finetune") -> list[dict]:
    """Held-out FID during training among a run's :func:`records`: [{iteration, fid, floor_fid}]."""
    return [
        {"iteration": r["step"], "fid": round(r["fid"], 3), "floor_fid": round(r["floor_fid"], 3)}
        for r in logged
        if r.get("stage") == stage and "fid" in r
    ]


def row(method: str, steps: int, result: dict, **extra) -> dict:
    """A JSON row: the scores of an evaluation with their floor."""
    return {
        "method": method,
        "steps": steps,
        **{k: round(result["model"][k], 4) for k in ("fid", "kid", "precision", "recall")},
        "floor_fid": round(result["floor"]["fid"], 4),
        "floor_kid": round(result["floor"]["kid"], 4),
        "n": result["n"],
        **extra,
    }


def table_markdown(rows: list[dict], extra_columns: tuple[str, ...] = ()) -> str:
    """Markdown: every figure beside its noise floor."""
    head = "| method | steps | FID (floor) | KID (floor) | precision | recall |" + "".join(
        f" {c} |" for c in extra_columns
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|" + "---:|" * len(extra_columns)]
    for r in rows:
        cells = "".join(f" {r.get(c, '')} |" for c in extra_columns)
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['fid']:.2f} ({r['floor_fid']:.2f}) | {r['kid']:.3f} "
            f"({r['floor_kid']:.3f}) | {r['precision']:.2f} | {r['recall']:.2f} |{cells}"
        )
    return "\n".join(lines)


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2))
    return out
