"""Bad input and damaged files, beyond the catalogue (test_bad_input_cli.py, test_bad_input_api.py).

Data files and checkpoints of every kind of damage are one line, exit 2, and change nothing;
loading never unpickles; checkpoints are written atomically (a crash while saving keeps the
previous one); a failed start leaves a directory the corrected command reuses; interrupted writes
(temporary files, a half-written metrics line) are cleaned up at the next start; a finished run
resumed does nothing; pretraining stops when it diverges, keeping its last good checkpoint.
"""

import json
import os
import pickle

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

import fewstep.checkpoint as checkpoint_module
import fewstep.files as files_module
from fewstep.checkpoint import load_checkpoint, save_checkpoint

from _bad_input import TINY, assert_one_line_error, assert_unchanged, invoke, sets, snapshot


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A real (tiny) pretraining run and its checkpoint."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    result = invoke("pretrain", "--run-dir", run_dir, "--quiet", *sets(TINY))
    assert result.exit_code == 0, result.output
    return run_dir / "checkpoints" / "pretrain.safetensors"


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
    before = snapshot(tmp_path)
    result = invoke(
        "pretrain", "--run-dir", tmp_path / "run", "--quiet", *sets([*TINY, "data.name=file", f"data.path={path}"])
    )
    assert_one_line_error(result, "data file", *words)
    assert_unchanged(before, tmp_path)


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
    before = snapshot(tmp_path)
    for command in (["sample", "-n", 5, "--out", tmp_path / "s.npy"], ["evaluate"]):
        assert_one_line_error(invoke(command[0], "--checkpoint", bad, *command[1:]), str(bad), "corrupted")
    assert not marker.exists()
    assert_unchanged(before, tmp_path)


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


def test_a_failed_start_leaves_a_directory_the_corrected_command_reuses(tmp_path):
    """A start that failed after the run directory was written (here: written by hand, as a crash
    would leave it) holds no work yet, so the corrected command takes it over."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "figures").mkdir()
    (run_dir / "run.yaml").write_text("kind: pretrain\nsource: null\n")
    (run_dir / "config.yaml").write_text("data:\n  name: moons\n")
    result = invoke("pretrain", "--run-dir", run_dir, "--quiet", *sets(TINY))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["name"] == "swiss_roll"


def test_refused_start_writes_nothing_and_the_corrected_command_runs(tmp_path):
    run_dir = tmp_path / "run"
    bad = invoke("pretrain", "--run-dir", run_dir, "--quiet", *sets([*TINY, "data.name=file", "data.path=none.npy"]))
    assert_one_line_error(bad, "does not exist")
    assert not run_dir.exists()
    good = invoke("pretrain", "--run-dir", run_dir, "--quiet", *sets(TINY))
    assert good.exit_code == 0, good.output


def test_interrupted_writes_are_cleaned_at_the_next_start(tmp_path):
    """Temporary files of interrupted checkpoint writes (fewstep's and safetensors' own) and a
    half-written metrics line are gone after a resume; the metrics file is valid JSON lines again."""
    run_dir = tmp_path / "run"
    assert invoke("pretrain", "--run-dir", run_dir, "--quiet", *sets(TINY)).exit_code == 0
    stale = [
        run_dir / "checkpoints" / "pretrain.safetensors.k2j3h4.tmp",
        run_dir / "checkpoints" / ".tmpAb12Cd",
        run_dir / "config.yaml.x8y7.tmp",
    ]
    for path in stale:
        path.write_bytes(b"partial")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"stage": "pretrain", "step": 9')  # killed in the middle of a write
    result = invoke("pretrain", "--run-dir", run_dir, "--resume", "--quiet", "--set", "pretrain.steps=5")
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["stage"] == "pretrain"] == [3, 5]  # logged at the end of each part


def test_resuming_a_finished_run_does_nothing(ckpt):
    run_dir = ckpt.parent.parent
    before = snapshot(run_dir)
    result = invoke("pretrain", "--run-dir", run_dir, "--resume", "--quiet")
    assert result.exit_code == 0 and "already complete" in result.output
    assert_unchanged(before, run_dir)


def test_pretraining_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["pretrain.lr=10", "pretrain.steps=100", "pretrain.checkpoint_every=50", "model.hidden=[16,16]"]
    result = invoke("pretrain", "--run-dir", run_dir, "--quiet", *sets(overrides))
    assert_one_line_error(result, "pretrain diverged at step 50", "pretrain.lr", "last good checkpoint", "step 0")
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "pretrain.safetensors")
    assert meta["step"] == 0 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert not (run_dir / "summary.md").exists()


def test_sample_names_the_file_it_wrote(ckpt, tmp_path):
    result = invoke("sample", "--checkpoint", ckpt, "-n", 1, "--out", tmp_path / "m13_out", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"wrote 1 sample (10-step ddpm sampler) to {tmp_path / 'm13_out.npy'}" in result.output
    assert np.load(tmp_path / "m13_out.npy").shape == (1, 2)
    assert oct((tmp_path / "m13_out.npy").stat().st_mode & 0o777) == oct(ckpt.stat().st_mode & 0o777)


@pytest.fixture(scope="module")
def finetune_run(ckpt, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ft") / "run"
    overrides = [
        "finetune.iterations=2",
        "finetune.batch_size=16",
        "evaluate.train_samples=50",
        "evaluate.n_samples=50",
    ]
    result = invoke("finetune", "--checkpoint", ckpt, "--run-dir", run_dir, "--quiet", *sets(overrides))
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.parametrize(
    "override, key",
    [
        ("sampler.steps=5", "sampler.steps"),
        ("finetune.critic_hidden=[8]", "finetune.critic_hidden"),
        ("finetune.estimator=pg", "finetune.estimator"),
        ("finetune.ema_decay=0.9", "finetune.ema_decay"),
        ("data.name=moons", "data.name"),
    ],
)
def test_finetune_resume_cannot_change_what_the_run_is(finetune_run, override, key):
    before = snapshot(finetune_run)
    result = invoke("finetune", "--resume", "--run-dir", finetune_run, "--quiet", "--set", override)
    assert_one_line_error(result, key, "cannot change")
    assert_unchanged(before, finetune_run)


def test_finetune_resume_with_another_checkpoint(finetune_run, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"")
    before = snapshot(finetune_run)
    result = invoke("finetune", "--resume", "--run-dir", finetune_run, "--checkpoint", other)
    assert_one_line_error(result, "not the model this run started from")
    assert_unchanged(before, finetune_run)
