"""`fewstep schedule optimise/finetune` end to end on a tiny model: the schedule is recorded and used by `sample`."""

import json

import numpy as np
from click.testing import CliRunner

from fewstep.cli import main
from fewstep.models import load_pretrained

TINY = [
    "schedule.kind=linear",
    "schedule.T=100",
    "pretrain.steps=30",
    "pretrain.batch_size=64",
    "data.n_train=500",
    "model.hidden=[16, 16]",
    "evaluate.n_samples=200",
]
FAST = [
    "schedule_opt.steps=3",
    "schedule_opt.grid_size=15",
    "schedule_opt.n_mc=128",
    "schedule_opt.finetune_steps=5",
    "schedule_opt.n_starts=64",
]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_optimise_then_sample_and_finetune(tmp_path):
    runner = CliRunner()
    pre = runner.invoke(main, ["pretrain", "--run-dir", str(tmp_path / "pre"), "--quiet", *_sets(TINY)])
    assert pre.exit_code == 0, pre.output
    ckpt = tmp_path / "pre" / "checkpoints" / "pretrain.safetensors"
    out = runner.invoke(
        main,
        [
            "schedule",
            "optimise",
            "--checkpoint",
            str(ckpt),
            "--run-dir",
            str(tmp_path / "opt"),
            "--quiet",
            *_sets(FAST),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "floor" in out.output
    sched_ckpt = tmp_path / "opt" / "checkpoints" / "schedule.safetensors"
    record = json.loads((tmp_path / "opt" / "schedule.json").read_text())
    # the default method, the path bound, lands on clean data (time -1) from the first time T-1
    assert len(record["schedule_times"]) == 4 and record["schedule_times"][0] == 99
    assert record["schedule_times"][-1] == -1 and "discretisation RMS" in out.output
    assert record["sampler_timesteps"] == sorted(round(t) for t in record["schedule_times"][:-1])
    table = load_pretrained(sched_ckpt).table
    assert table.K == 3 and table.t.tolist() == record["schedule_times"][:-1]
    res = runner.invoke(main, ["sample", "--checkpoint", str(sched_ckpt), "-n", "10", "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0 and "(3-step schedule_opt sampler)" in res.output, res.output
    assert np.load(tmp_path / "s.npy").shape == (10, 2)

    fin = runner.invoke(
        main,
        [
            "schedule",
            "finetune",
            "--checkpoint",
            str(sched_ckpt),
            "--run-dir",
            str(tmp_path / "fin"),
            "--keep-schedule",
            "--quiet",
        ],
    )
    assert fin.exit_code == 0, fin.output
    meta = load_pretrained(tmp_path / "fin" / "checkpoints" / "schedule_finetune.safetensors").meta
    assert meta["schedule_times"] == record["schedule_times"]

    both = runner.invoke(
        main,
        [
            "schedule",
            "finetune",
            "--checkpoint",
            str(ckpt),
            "--run-dir",
            str(tmp_path / "both"),
            "--quiet",
            *_sets([*FAST, "schedule_opt.rounds=2"]),
        ],
    )
    assert both.exit_code == 0, both.output
    meta = load_pretrained(tmp_path / "both" / "checkpoints" / "schedule_finetune.safetensors").meta
    assert meta["rounds"] == 2 and len(meta["schedule_times"]) == 4 and meta["table"]["name"] == "schedule_opt"
    assert meta["schedule_times"][-1] == -1  # distilled at the path schedule

    # the forward bound (dp) with eps-loss Phase 2, and a second-order solver for the path schedule
    for name, sets in (
        ("dp", ["schedule_opt.method=dp", "schedule_opt.phase2=eps", "schedule_opt.weighting=w"]),
        ("dpm", ["schedule_opt.solver=dpm_solver_pp_2m"]),
    ):
        res = runner.invoke(
            main,
            [
                "schedule",
                "finetune",
                "--checkpoint",
                str(ckpt),
                "--run-dir",
                str(tmp_path / name),
                "--quiet",
                *_sets([*FAST, *sets]),
            ],
        )
        assert res.exit_code == 0, res.output
    meta = load_pretrained(tmp_path / "dp" / "checkpoints" / "schedule_finetune.safetensors").meta
    assert meta["schedule_times"][-1] == 0
    meta = load_pretrained(tmp_path / "dpm" / "checkpoints" / "schedule_finetune.safetensors").meta
    assert meta["table"]["name"] == "dpm_solver_pp_2m" and any(d != 0 for d in meta["table"]["d"])


def test_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    pre = runner.invoke(main, ["pretrain", "--run-dir", str(tmp_path / "pre"), "--quiet", *_sets(TINY)])
    assert pre.exit_code == 0, pre.output
    ckpt = str(tmp_path / "pre" / "checkpoints" / "pretrain.safetensors")
    bad = runner.invoke(main, ["schedule", "optimise", "--checkpoint", ckpt, "--set", "schedule_opt.method=magic"])
    assert bad.exit_code == 2 and "schedule_opt.method" in bad.output
    keep = runner.invoke(
        main, ["schedule", "finetune", "--checkpoint", ckpt, "--run-dir", str(tmp_path / "f"), "--keep-schedule"]
    )
    assert keep.exit_code == 2 and "--keep-schedule" in keep.output
    bad = runner.invoke(main, ["schedule", "finetune", "--checkpoint", ckpt, "--set", "schedule_opt.method=dp"])
    assert bad.exit_code == 2 and "schedule_opt.phase2=distill" in bad.output  # distillation needs a path schedule
