"""A run directory: the resolved config, metrics as JSON lines, checkpoints, figures, a summary.

    run_dir/
      config.yaml          resolved config of the run
      metrics.jsonl        one JSON object per logged step: {"stage": ..., "step": ..., ...}
      checkpoints/         safetensors checkpoints (latest of each stage, written atomically)
      figures/             PNG figures
      summary.md           short human-readable summary
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from .config import Config, from_dict, load_config, to_dict
from .checkpoint import check_matches
from .distributed import is_main_process
from .errors import FewstepError


class Run:
    def __init__(self, path: str | Path, config: Config):
        self.path = Path(path)
        self.config = config
        if is_main_process():  # under torchrun only rank 0 writes
            for sub in ("checkpoints", "figures"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            (self.path / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

    @staticmethod
    def saved_config(path: str | Path) -> dict:
        """The config dict recorded in an existing run directory (for --resume)."""
        file = Path(path) / "config.yaml"
        if not file.is_file():
            raise FewstepError(f"{path} is not a fewstep run directory (no config.yaml)")
        return yaml.safe_load(file.read_text()) or {}

    @classmethod
    def create(cls, run_dir: str | Path | None, config: Config, default_name: str) -> "Run":
        """A new run in ``run_dir`` (default ``runs/<default_name>-<time>``), never over an existing run."""
        path = Path(run_dir) if run_dir else Path("runs") / f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (path / "config.yaml").exists() and is_main_process():  # torchrun ranks > 0 share rank 0's run
            raise FewstepError(f"run directory {path} already holds a run; pass --resume to continue it or choose another --run-dir")
        return cls(path, config)

    @classmethod
    def resume(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "Run":
        """The run in ``path`` with its recorded config, ``section.key=value`` overrides applied."""
        config = load_config(None, overrides, base=cls.saved_config(path))
        recorded = to_dict(from_dict(Config, cls.saved_config(path)))
        # --resume cannot change the model or schedule; checked before config.yaml is rewritten
        check_matches({"config": recorded}, {s: to_dict(getattr(config, s)) for s in ("model", "schedule")}, str(path), kind="run")
        return cls(path, config)

    def checkpoint(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.safetensors"

    def figure(self, name: str) -> Path:
        return self.path / "figures" / f"{name}.png"

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self, stage: str | None = None) -> list[dict]:
        file = self.path / "metrics.jsonl"
        if not file.is_file():
            return []
        records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        return [r for r in records if stage is None or r.get("stage") == stage]

    def truncate_metrics(self, stage: str, after_step: int) -> None:
        """Drop ``stage`` records past ``after_step`` (they are redone after a resume)."""
        keep = [r for r in self.metrics() if not (r.get("stage") == stage and r.get("step", 0) > after_step)]
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write_summary(self, text: str) -> None:
        (self.path / "summary.md").write_text(text)
