"""Shared by the bad-input catalogue (tests/test_bad_input*.py): a tiny workspace of real and damaged
inputs, and the assertion every refusal must pass.

A refusal is: exit code 2 (or a FewstepError through the Python API), exactly one line on stderr
starting "error: " that names the problem, no traceback, and not one byte of the workspace changed
(no file written, changed or removed, no directory created).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from fewstep.checkpoint import save_checkpoint
from fewstep.cli import main
from fewstep.config import load_config, to_dict
from fewstep.models import build_eps_model, module_tensors

TINY = ["pretrain.steps=3", "model.hidden=[16,16]", "evaluate.n_samples=50", "pretrain.checkpoint_every=2"]


def sets(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, str | None]:
    """Every file (its SHA-256) and directory (None) under ``root``."""
    state = {}
    for path in sorted(Path(root).rglob("*")):
        key = str(path.relative_to(root))
        state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return state


def assert_unchanged(before: dict, root: Path) -> None:
    after = snapshot(root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k, "-") != after.get(k, "-"))
    assert not changed, f"files changed, appeared or disappeared: {changed[:8]}"


def assert_one_line_error(result, *words) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


def refused(root: Path, args, *words) -> str:
    """Run the CLI with ``args``; it must refuse with one line naming ``words`` and change nothing under ``root``."""
    before = snapshot(root)
    line = assert_one_line_error(invoke(*args), *words)
    assert_unchanged(before, root)
    return line


def flip_bytes(raw: bytes, start: int, count: int) -> bytes:
    data = bytearray(raw)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    return bytes(data)


def tensor_region(raw: bytes) -> int:
    """Offset of the first tensor byte of a safetensors file (after the 8-byte length and the header)."""
    return 8 + int.from_bytes(raw[:8], "little")


def crafted_checkpoint(
    path: Path, shape: tuple[int, ...], overrides=(), poison: bool = False, extra_meta=None, extra_config=None
) -> Path:
    """A model checkpoint for data of ``shape`` made without training (optionally with NaN weights,
    extra metadata or extra config keys), written with valid checksums."""
    config = load_config(None, ["model.hidden=[16,16]", *overrides])
    model = build_eps_model(config.model, shape)
    if poison:
        with torch.no_grad():
            next(model.parameters())[0] = float("nan")
    recorded = to_dict(config)
    for section, values in (extra_config or {}).items():
        recorded[section].update(values)
    meta = {"stage": "pretrain", "shape": list(shape), "config": recorded, **(extra_meta or {})}
    save_checkpoint(path, module_tensors("model", model), meta)
    return path


def build_workspace(root: Path) -> dict[str, Path]:
    """A tiny pretraining run and every damaged input the catalogue needs, all under ``root``."""
    run = root / "run"
    result = invoke("pretrain", "--run-dir", run, "--quiet", *sets(TINY))
    assert result.exit_code == 0, result.output
    ck = run / "checkpoints" / "pretrain.safetensors"
    raw = ck.read_bytes()
    ws = {"root": root, "run": run, "ck": ck, "new": root / "new-run"}

    ws["flipped"] = root / "flipped.safetensors"  # 400 bytes inside the tensors (issue item 1)
    ws["flipped"].write_bytes(flip_bytes(raw, tensor_region(raw) + 16, 400))
    header = raw[: tensor_region(raw)]
    assert b'\\"seed\\": 0' in header
    ws["metaflip"] = root / "metaflip.safetensors"  # the metadata changed, same length
    ws["metaflip"].write_bytes(raw.replace(b'\\"seed\\": 0', b'\\"seed\\": 7', 1))
    ws["ck3"] = crafted_checkpoint(root / "points3d.safetensors", (3,), ["data.name=file", "data.path=x3.npy"])
    ws["nan_ck"] = crafted_checkpoint(root / "nan.safetensors", (2,), poison=True)
    ws["bogus_ck"] = crafted_checkpoint(root / "bogus-key.safetensors", (2,), extra_config={"model": {"bogus": 1}})
    ws["table_ck"] = crafted_checkpoint(
        root / "bad-table.safetensors", (2,), extra_meta={"table": {"name": "x", "t": "a"}}
    )
    ws["notckpt"] = root / "folder.safetensors"
    ws["notckpt"].mkdir()

    rng = np.random.default_rng(0)
    np.save(root / "x3.npy", rng.normal(size=(200, 3)).astype(np.float32))
    ws["x3"] = root / "x3.npy"
    np.save(root / "s3.npy", rng.normal(size=(60, 3)))
    ws["s3"] = root / "s3.npy"
    nan = rng.normal(size=(60, 2))
    nan[5, 1] = np.nan
    np.save(root / "snan.npy", nan)
    ws["snan"] = root / "snan.npy"
    np.save(root / "sobj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    ws["sobj"] = root / "sobj.npy"
    np.save(root / "s2.npy", rng.normal(size=(60, 2)))
    ws["s2"] = root / "s2.npy"

    ws["yaml_syntax"] = root / "syntax.yaml"
    ws["yaml_syntax"].write_text("pretrain:\n  steps: 3\n  lr: [1, 2\n")
    ws["yaml_list"] = root / "list.yaml"
    ws["yaml_list"].write_text("- pretrain\n- steps\n")
    ws["yaml_unknown"] = root / "unknown.yaml"
    ws["yaml_unknown"].write_text("pretrain:\n  stepz: 3\n")

    def damaged_run(name: str, damage) -> Path:
        copy = root / name
        shutil.copytree(run, copy)
        damage(copy)
        return copy

    text = (run / "config.yaml").read_text()
    half = "".join(text.splitlines(keepends=True)[: len(text.splitlines()) // 2])  # whole lines: still YAML
    ws["run_empty"] = damaged_run("run-empty-config", lambda d: (d / "config.yaml").write_text(""))
    ws["run_trunc"] = damaged_run("run-truncated-config", lambda d: (d / "config.yaml").write_text(half))
    ws["run_yaml"] = damaged_run("run-broken-yaml", lambda d: (d / "config.yaml").write_text(text + "\nmodel: [1,\n"))
    ws["run_nokind"] = damaged_run("run-no-kind", lambda d: (d / "run.yaml").unlink())
    ws["run_badckpt"] = damaged_run(
        "run-damaged-checkpoint",
        lambda d: (d / "checkpoints" / "pretrain.safetensors").write_bytes(ws["flipped"].read_bytes()),
    )
    ws["plain_dir"] = root / "not-a-run"
    ws["plain_dir"].mkdir()
    ws["afile"] = root / "a-file.txt"
    ws["afile"].write_text("not a directory\n")
    return ws
