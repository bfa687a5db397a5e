"""A run directory: the resolved config, metrics as JSON lines, checkpoints, figures, a summary.

run_dir/
  config.yaml          resolved config of the run (a valid --config file; written atomically)
  run.yaml             the command that made the run and the model it started from
  metrics.jsonl        one JSON object per logged step: {"stage": ..., "step": ..., ...}
  checkpoints/         safetensors checkpoints (latest and best of each stage, written atomically)
  figures/             PNG figures
  summary.md           short human-readable summary
  tensorboard/         TensorBoard event files (when the tensorboard package is installed)
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import lookup, check_matches
from .config import Config, from_dict, load_config, to_dict
from .fields import missing_keys
from .distributed import is_main_process
from .errors import FewstepError
from .files import is_temporary, remove_stale_temporaries, write_text_atomic

RECORD = "config.yaml"
KIND = "run.yaml"

_IDENTITY = ("seed", "data", "schedule", "model")
_FINETUNE = (
    "sampler",
    "finetune.estimator",
    "finetune.critic_reg",
    "finetune.critic_hidden",
    "finetune.baseline_hidden",
    "finetune.critic_channels",
    "finetune.ema_decay",
)
FIXED_ON_RESUME = {
    "pretrain": (*_IDENTITY, "pretrain.ema_decay"),
    "finetune": (*_IDENTITY, *_FINETUNE),
    "quickstart": (*_IDENTITY, "pretrain.ema_decay", *_FINETUNE),
}
"""What ``--set`` cannot change when a run is resumed: what the run is (its seed, data, schedule and
model) and what its checkpoints' shapes and meaning depend on (EMA, critic, baseline, sampler)."""


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null (strings would break numeric readers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Run:
    """A run directory of one command (``kind``: pretrain, finetune, schedule, quickstart, ...)."""

    def __init__(self, path: str | Path, config: Config, kind: str, source: str | None = None):
        self.path = Path(path)
        self.config = config
        self.kind = kind
        self.source = source  # the pretrained model a fine-tuning or schedule run started from
        self._writer = None

    @classmethod
    def create(cls, run_dir: str | Path | None, config: Config, kind: str, source: str | None = None) -> "Run":
        """A new run in ``run_dir`` (default ``runs/<kind>-<time>``), never over an existing run.

        A directory whose run never got past its start (no checkpoint, metrics or summary: the
        start failed) is not a run yet, and is reused."""
        path = Path(run_dir) if run_dir else Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        if path.exists() and not path.is_dir():
            raise FewstepError(f"run directory {path} is a file")
        if is_main_process():  # torchrun ranks > 0 share rank 0's run
            if cls.has_work(path):
                raise FewstepError(
                    f"run directory {path} already holds a run; pass --resume to continue it "
                    "or choose another --run-dir"
                )
            other = cls.foreign_file(path)
            if other is not None:
                raise FewstepError(
                    f"run directory {path} is not empty and holds no fewstep run (it holds {other}); "
                    "choose a new or empty directory"
                )
        return cls(path, config, kind, source)

    @staticmethod
    def foreign_file(path: str | Path) -> Path | None:
        """A file in ``path`` that a run's start did not write (None if there is none): a new run
        never writes over a directory that holds one. Stops at the first it finds."""
        path = Path(path)
        if not path.is_dir():
            return None
        own = {path / KIND, path / RECORD}
        for folder, _, names in os.walk(path):
            for name in names:
                file = Path(folder) / name
                if file not in own and not is_temporary(file):
                    return file.relative_to(path)
        return None

    @staticmethod
    def has_work(path: str | Path) -> bool:
        """True when ``path`` holds the results of a run: a checkpoint, metrics or a summary."""
        path = Path(path)
        if not path.is_dir():
            return False
        if any((path / name).exists() for name in ("metrics.jsonl", "summary.md")):
            return True
        return any((path / "checkpoints").glob("*.safetensors")) or any(path.glob("*.json"))

    @classmethod
    def resume(cls, path: str | Path, kind: str, overrides: list[str] | tuple[str, ...] = ()) -> "Run":
        """The run in ``path`` with its recorded config; ``overrides`` may change only what resuming allows."""
        path = Path(path)
        record = cls.read_record(path)
        if record.get("kind") != kind:
            raise FewstepError(
                f"{path} holds a {record.get('kind') or 'unknown'} run; it cannot be resumed with `fewstep {kind}`"
            )
        missing = missing_keys(Config, record["config"])
        if missing:
            raise FewstepError(
                f"{path / RECORD} is damaged (no {missing[0]}, {len(missing)} keys missing); the run cannot be resumed"
            )
        try:
            recorded = to_dict(from_dict(Config, record["config"]))
        except FewstepError as exc:
            raise FewstepError(f"{path / RECORD} is damaged: {exc}") from None
        config = load_config(None, overrides, base=record["config"])
        fixed = FIXED_ON_RESUME.get(kind, FIXED_ON_RESUME["pretrain"])
        check_matches({"config": recorded}, {key: lookup(to_dict(config), key) for key in fixed}, str(path), "run")
        return cls(path, config, kind, record.get("source"))

    @staticmethod
    def read_record(path: str | Path) -> dict:
        """The recorded kind, source and config of an existing run directory, refusing a damaged record."""
        record = {}
        for name, what in ((KIND, "kind and source"), (RECORD, "config")):
            file = Path(path) / name
            if not file.is_file():
                raise FewstepError(f"{path} is not a fewstep run directory (no {name})")
            try:
                data = yaml.safe_load(file.read_text())
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise FewstepError(f"{file} is damaged (not valid YAML{where}); the run cannot be resumed") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise FewstepError(f"{file} cannot be read ({exc}); the run cannot be resumed") from None
            if not isinstance(data, dict) or not data:
                raise FewstepError(f"{file} is damaged (no {what}); the run cannot be resumed")
            record.update(data if name == KIND else {"config": data})
        if "kind" not in record:
            raise FewstepError(f"{Path(path) / KIND} is damaged (no kind); the run cannot be resumed")
        return record

    def start(self) -> "Run":
        """Create the directory (rank 0 only), write the record atomically, clear interrupted writes."""
        if is_main_process():
            for sub in ("checkpoints", "figures"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path / KIND, yaml.safe_dump({"kind": self.kind, "source": self.source}))
            write_text_atomic(self.path / RECORD, yaml.safe_dump(to_dict(self.config), sort_keys=False))
            for folder in (self.path, self.path / "checkpoints", self.path / "figures"):
                remove_stale_temporaries(folder)
            self._repair_metrics()
        return self

    def _repair_metrics(self) -> None:
        """Drop a half-written last line of metrics.jsonl (an interrupted write), so that the next
        record starts on a line of its own."""
        file = self.path / "metrics.jsonl"
        if file.is_file() and file.stat().st_size and not file.read_bytes().endswith(b"\n"):
            write_text_atomic(file, "".join(json.dumps(r) + "\n" for r in self.metrics()))

    def finished(self, stage: str, steps: int) -> bool:
        """True when the stage's checkpoint records all ``steps`` done and the summary, written last,
        exists: a resumed run has nothing left to do. (A run killed after its last checkpoint but
        before its summary is not finished: resuming it writes the report.)"""
        from .checkpoint import load_checkpoint

        path = self.checkpoint(stage)
        if not path.is_file() or not (self.path / "summary.md").is_file():
            return False
        return int(load_checkpoint(path)[1].get("step", -1)) >= steps

    def checkpoint(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.safetensors"

    def figure(self, name: str) -> Path:
        return self.path / "figures" / f"{name}.png"

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (and its numbers to TensorBoard when available)."""
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(_finite(record)) + "\n")
        self._tensorboard(record)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._writer = False
                return
            self._writer = SummaryWriter(str(self.path / "tensorboard"))
        if self._writer is False or "step" not in record:
            return
        prefix = record.get("stage", "run") + ("/" + record["model"] if "model" in record else "")
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self._writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            elif isinstance(value, dict):
                for sub, v in value.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        self._writer.add_scalar(f"{prefix}/{key}/{sub}", v, record["step"])
        self._writer.flush()

    def metrics(self, stage: str | None = None) -> list[dict]:
        """The logged records (of ``stage``); a half-written last line (an interrupted write) is skipped."""
        file = self.path / "metrics.jsonl"
        if not file.is_file():
            return []
        records = []
        for line in file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return [r for r in records if isinstance(r, dict) and (stage is None or r.get("stage") == stage)]

    def truncate_metrics(self, stage: str, after_step: int) -> None:
        """Drop ``stage`` records past ``after_step`` (they are redone after a resume), atomically."""
        keep = [r for r in self.metrics() if not (r.get("stage") == stage and (r.get("step") or 0) > after_step)]
        write_text_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep))

    def drop_metrics(self, stage: str) -> None:
        """Drop every ``stage`` record (a report that an interruption cut short is written again), atomically."""
        if any(r.get("stage") == stage for r in self.metrics()):
            keep = [r for r in self.metrics() if r.get("stage") != stage]
            write_text_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep))

    def write_summary(self, text: str) -> None:
        write_text_atomic(self.path / "summary.md", text)
