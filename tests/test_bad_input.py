"""(e) Bad input through the CLI: one line starting "error:" that names the problem, exit 2, no traceback.

Also: checkpoints are written atomically (a crash while saving keeps the previous one) and loading
never unpickles.
"""

import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import fewstep.checkpoint as checkpoint_module
import fewstep.files as files_module
from fewstep.checkpoint import load_checkpoint, save_checkpoint
from fewstep.cli import main

TINY = ["--set", "pretrain.steps=3", "--set", "model.hidden=[16,16]", "--set", "evaluate.n_samples=50", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A real (tiny) pretraining run and its checkpoint."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    result = invoke("pretrain", "--run-dir", run_dir, *TINY)
    assert result.exit_code == 0, result.output
    return run_dir / "checkpoints" / "pretrain.safetensors"


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["pretrain.stepz=3"], ["unknown config key pretrain.stepz"]),
        (["foo.bar=1"], ["unknown config key foo"]),
        (["pretrain.steps=abc"], ["pretrain.steps", "integer", "'abc'"]),
        (["pretrain.lr=fast"], ["pretrain.lr", "number"]),
        (["model.hidden=128"], ["model.hidden", "list"]),
        (["sampler.noise_at_last_step=maybe"], ["sampler.noise_at_last_step", "true or false"]),
        (["pretrain.lr=-1"], ["pretrain.lr", "> 0"]),
        (["schedule.T=0"], ["schedule.T", ">= 1"]),
        (["pretrain.ema_decay=1.5"], ["pretrain.ema_decay", "<= 0.99"]),
        (["schedule.kind=quadratic"], ["schedule.kind", "'quadratic'", "sigmoid"]),
        (["sampler.timesteps=[5,3]"], ["sampler.timesteps", "increase"]),
        (["pretrain.steps"], ["section.key=value"]),
    ],
)
def test_bad_config_values(tmp_path, overrides, words):
    args = [x for o in overrides for x in ("--set", o)]
    result = invoke("pretrain", "--run-dir", tmp_path / "run", *args)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing half-started


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  stepz: 3\n")
    assert_one_line_error(invoke("pretrain", "--run-dir", tmp_path / "r", "--config", bad), "pretrain.stepz")
    bad.write_text("pretrain: [1, 2\n")
    assert_one_line_error(invoke("pretrain", "--run-dir", tmp_path / "r", "--config", bad), "not valid YAML")
    assert_one_line_error(
        invoke("pretrain", "--run-dir", tmp_path / "r", "--config", tmp_path / "none.yaml"), "does not exist"
    )


def test_yaml_exponent_floats_are_numbers(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string; the config accepts it as the number it is."""
    from fewstep.config import load_config

    assert load_config(None, ["pretrain.lr=1e-3"]).pretrain.lr == 1e-3
    (tmp_path / "c.yaml").write_text("pretrain:\n  lr: 5e-5\n")
    assert load_config(tmp_path / "c.yaml").pretrain.lr == 5e-5


def _write(path, kind):
    if kind == "1d":
        np.save(path, np.zeros(10))
    elif kind == "3d":
        np.save(path, np.zeros((10, 2, 2)))
    elif kind == "nan":
        np.save(path, np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    elif kind == "text":
        path.write_text("a,b\n1,2\n")
    elif kind == "two-arrays":
        np.savez(path, x=np.zeros((5, 2)), y=np.zeros((5, 2)))
    elif kind == "suffix":
        path.write_text("1 2\n3 4\n")
    elif kind == "object":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    "kind, name, words",
    [
        ("1d", "x.npy", ["shape (10,)", "[N, D]"]),
        ("3d", "x.npy", ["shape (10, 2, 2)", "[N, D]"]),
        ("nan", "x.npy", ["NaN"]),
        ("text", "x.csv", ["cannot read data file"]),
        ("two-arrays", "x.npz", ["holds 2 arrays"]),
        ("suffix", "x.txt", ["suffix '.txt'"]),
        ("object", "x.npy", ["cannot read data file"]),
        ("missing", "x.npy", ["does not exist"]),
    ],
)
def test_bad_data_file(tmp_path, kind, name, words):
    path = tmp_path / name
    if kind != "missing":
        _write(path, kind)
    result = invoke(
        "pretrain", "--run-dir", tmp_path / "run", "--set", "data.name=file", "--set", f"data.path={path}", *TINY
    )
    assert_one_line_error(result, "data file", *words)


def test_data_file_required_and_samples_of_wrong_dimension(tmp_path):
    assert_one_line_error(invoke("pretrain", "--run-dir", tmp_path / "r", "--set", "data.name=file"), "data.path")
    np.save(tmp_path / "s.npy", np.random.randn(60, 3))
    assert_one_line_error(
        invoke("evaluate", "--samples", tmp_path / "s.npy", "--set", "evaluate.n_samples=50"), "shape (3,)", "(2,)"
    )


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(invoke("sample", "--checkpoint", tmp_path / "none.safetensors"), "does not exist")
    assert_one_line_error(invoke("evaluate", "--checkpoint", tmp_path / "none.safetensors"), "does not exist")
    assert_one_line_error(invoke("pretrain", "--run-dir", tmp_path / "nodir", "--resume"), "--resume")


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "header-only", "pickle"])
def test_corrupted_checkpoint(tmp_path, ckpt, damage):
    raw = ckpt.read_bytes()
    bad = tmp_path / "bad.safetensors"
    marker = tmp_path / "unpickled"
    if damage == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "header-only":
        bad.write_bytes(raw[:20])
    else:  # a pickle whose loading would run code (create a file): it must never be unpickled

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        bad.write_bytes(pickle.dumps({"model.w": Evil()}))
    for command in (["sample", "-n", 5, "--out", tmp_path / "s.npy"], ["evaluate"]):
        assert_one_line_error(invoke(command[0], "--checkpoint", bad, *command[1:]), str(bad), "corrupted")
    assert not marker.exists()


def test_foreign_safetensors_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    assert_one_line_error(invoke("sample", "--checkpoint", plain), "not a fewstep checkpoint")
    no_record = tmp_path / "norecord.safetensors"
    checksum = checkpoint_module.tensor_checksum({"w": torch.zeros(3)})
    save_file(
        {"w": torch.zeros(3)},
        str(no_record),
        metadata={"format": checkpoint_module.FORMAT, "meta": "{}", "checksum": checksum},
    )
    assert_one_line_error(invoke("sample", "--checkpoint", no_record), "no model record")
    bad_meta = tmp_path / "badmeta.safetensors"
    save_file(
        {"w": torch.zeros(3)},
        str(bad_meta),
        metadata={"format": checkpoint_module.FORMAT, "meta": "{oops", "checksum": checksum},
    )
    assert_one_line_error(invoke("sample", "--checkpoint", bad_meta), "unreadable metadata")


def test_checkpoint_does_not_match_config(tmp_path, ckpt):
    assert_one_line_error(
        invoke("evaluate", "--checkpoint", ckpt, "--set", "schedule.T=100"), "schedule.T", "10", "100"
    )
    assert_one_line_error(invoke("evaluate", "--checkpoint", ckpt, "--set", "schedule.kind=linear"), "schedule.kind")
    assert_one_line_error(
        invoke("evaluate", "--checkpoint", ckpt, "--set", "model.hidden=[8]"), "model.hidden", "[16, 16]"
    )
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  hidden: [32]\n")
    assert_one_line_error(invoke("evaluate", "--checkpoint", ckpt, "--config", other), "model.hidden", "[32]")


def test_resume_cannot_change_the_model_and_loses_nothing(ckpt):
    run_dir = ckpt.parent.parent
    config_before, weights_before = (run_dir / "config.yaml").read_text(), ckpt.read_bytes()
    result = invoke("pretrain", "--run-dir", run_dir, "--resume", "--set", "model.hidden=[8]", "--quiet")
    assert_one_line_error(result, "model.hidden", "[16, 16]", "[8]")
    result = invoke("pretrain", "--run-dir", run_dir, "--resume", "--set", "schedule.T=20", "--quiet")
    assert_one_line_error(result, "schedule.T")
    assert (run_dir / "config.yaml").read_text() == config_before
    assert ckpt.read_bytes() == weights_before


def test_existing_run_directory_is_not_overwritten(ckpt):
    result = invoke("pretrain", "--run-dir", ckpt.parent.parent, *TINY)
    assert_one_line_error(result, "already holds a run", "--resume")


def _crashing_save_file(tensors, filename, metadata=None):
    """Write the first bytes of the file, then fail as a full disk would."""
    with open(filename, "wb") as f:
        f.write(b"\x08\x00\x00\x00partial")
    raise OSError("No space left on device")


@pytest.mark.parametrize("where", ["while-writing", "before-rename"])
def test_atomic_checkpoint_write(tmp_path, monkeypatch, where):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.arange(4.0)}, {"step": 1})
    before = path.read_bytes()
    if where == "while-writing":
        monkeypatch.setattr(checkpoint_module, "save_file", _crashing_save_file)
    else:
        monkeypatch.setattr(files_module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.zeros(4)}, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    tensors, meta = load_checkpoint(path)
    assert meta == {"step": 1} and torch.equal(tensors["w"], torch.arange(4.0))
    assert sorted(os.listdir(tmp_path)) == ["ck.safetensors"]  # no temporary file left behind
    # and a normal save still replaces it
    save_checkpoint(path, {"w": torch.zeros(4)}, {"step": 2})
    assert load_checkpoint(path)[1] == {"step": 2}
