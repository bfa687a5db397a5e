"""Checkpoints as safetensors files: atomic writes, a checksum, no pickles, checked against the config.

A checkpoint holds named tensors (``model.*``: the weights to sample with; ``train.<part>.*``,
``optim.<part>.*``, ``rng.<name>``: the state a run resumes from) and JSON metadata: the format,
the stage, the step, the config, the data shape, the step table, and a SHA-256 checksum of every
tensor (name, dtype, shape and bytes), verified on load so that flipped bytes are caught.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import FewstepError
from .files import write_atomic

FORMAT = "fewstep-checkpoint-v2"


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` to ``path`` atomically (temporary file, fsync, rename)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta, allow_nan=False), "checksum": tensor_checksum(tensors)}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``; any problem is a one-line ``FewstepError``."""
    path = Path(path)
    if path.is_dir():
        raise FewstepError(
            f"checkpoint {path} is a directory, not a .safetensors file "
            "(a diffusers pipeline folder needs model_index.json, unet/ and scheduler/)"
        )
    if not path.is_file():
        raise FewstepError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FewstepError(
            f"checkpoint {path} is corrupted or not a safetensors file ({str(exc).splitlines()[0][:120]})"
        ) from None
    if header.get("format") == "fewstep-checkpoint-v1":
        raise FewstepError(f"checkpoint {path} was written by an older fewstep (format v1); train it again")
    if header.get("format") != FORMAT:
        raise FewstepError(f"checkpoint {path} is not a fewstep checkpoint (format {header.get('format')!r})")
    if header.get("checksum") != tensor_checksum(tensors):
        raise FewstepError(f"checkpoint {path} is damaged: its tensors do not match the checksum written with them")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise FewstepError(f"checkpoint {path} has unreadable metadata") from None
    if not isinstance(meta, dict):
        raise FewstepError(f"checkpoint {path} has unreadable metadata")
    return tensors, meta


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(module: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``prefix.*`` tensors into ``module``; a missing or mis-shaped tensor is a FewstepError."""
    state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise FewstepError(
            f"checkpoint {source} does not match the configured {prefix} network "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in expected.items():
        if v.shape != state[k].shape:
            raise FewstepError(
                f"checkpoint {source} does not match the configured {prefix} network: "
                f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    module.load_state_dict(state)


def optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state into tensors and a JSON-able remainder (hyper-parameters)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], extra: dict
) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in extra["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": extra["param_groups"]})


def check_matches(meta: dict, expected: dict[str, Any], source: str, kind: str = "checkpoint") -> None:
    """Every config section in ``expected`` must equal the one recorded in ``meta["config"]`` (of a
    checkpoint, or of a run directory with ``kind="run"``); the error names the first differing key."""
    for section, value in expected.items():
        recorded = meta.get("config", {}).get(section)
        # a key missing from an older record equals its default, None (settings added later default to None)
        diffs = [k for k in set(value) | set(recorded or {}) if (recorded or {}).get(k) != value.get(k)]
        if recorded is None or diffs:
            key = sorted(diffs)[0] if diffs else "?"
            raise FewstepError(
                f"{kind} {source} was made with {section}.{key} = {(recorded or {}).get(key)!r}, "
                f"but the config has {value.get(key)!r}"
            )
