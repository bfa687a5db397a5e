"""CLI smoke test: quickstart writes a complete run directory; sample, evaluate and config work on it."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from fewstep.cli import main
from fewstep.config import describe

TINY = [
    "pretrain.steps=50",
    "pretrain.log_every=10",
    "evaluate.n_samples=300",
    "finetune.iterations=4",
    "finetune.eval_every=2",
    "evaluate.train_samples=200",
    "finetune.batch_size=32",
    "finetune.checkpoint_every=2",
]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("qs") / "run"
    result = invoke("quickstart", "--run-dir", run_dir, "--quiet", *[x for o in TINY for x in ("--set", o)])
    return run_dir, result


def test_quickstart_writes_run_directory(quickstart_run):
    run_dir, result = quickstart_run
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["pretrain"]["steps"] == 50 and config["schedule"] == {"kind": "sigmoid", "T": 10}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["stage"] == "pretrain"] == [10, 20, 30, 40, 50]
    evaluations = [r for r in records if r["stage"] == "evaluate"]
    assert evaluations and all(r["floor"]["w2"] > 0 and r["model"]["w2"] > 0 for r in evaluations)
    assert (run_dir / "checkpoints" / "pretrain.safetensors").is_file()
    figures = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert "samples.png" in figures and "sampling_path.png" in figures and "pretrain_loss.png" in figures
    assert all((run_dir / "figures" / f).stat().st_size > 1000 for f in figures)
    summary = (run_dir / "summary.md").read_text()
    assert "noise floor" in summary and summary in result.output


def test_quickstart_resume_keeps_the_runs_overrides(quickstart_run):
    run_dir, _ = quickstart_run
    invoke("quickstart", "--run-dir", run_dir, "--resume", "--quiet")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["pretrain"]["steps"] == 50


def test_sample_and_evaluate_checkpoint(quickstart_run, tmp_path):
    run_dir, _ = quickstart_run
    ckpt = run_dir / "checkpoints" / "pretrain.safetensors"
    out, figure = tmp_path / "x.npy", tmp_path / "x.png"
    result = invoke("sample", "--checkpoint", ckpt, "-n", 40, "--seed", 5, "--out", out, "--figure", figure)
    assert "wrote 40 samples (10-step ddpm sampler)" in result.output
    x = np.load(out)
    assert x.shape == (40, 2) and np.isfinite(x).all() and figure.stat().st_size > 1000
    invoke("sample", "--checkpoint", ckpt, "-n", 40, "--seed", 5, "--batch-size", 7, "--out", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), x, atol=1e-6)

    scores = tmp_path / "scores.json"
    result = invoke("evaluate", "--checkpoint", ckpt, "--set", "evaluate.n_samples=200", "--out", scores)
    assert "w2" in result.output and "floor" in result.output and "precision" in result.output
    record = json.loads(scores.read_text())
    assert record["model"]["w2"] > record["floor"]["w2"] > 0
    result = invoke("evaluate", "--samples", out, "--set", "evaluate.n_samples=40")
    assert "floor" in result.output


def test_config_lists_every_key():
    output = invoke("config").output
    assert output.strip().splitlines() == describe()
    for key in (
        "data.name",
        "schedule.T",
        "pretrain.steps",
        "sampler.ddpm.variance",
        "sampler.fastdpm.kappa",
        "evaluate.max_iter",
        "model.norm_groups",
        "autocast",
        "seed",
    ):
        assert f"\n{key} = " in "\n" + output


@pytest.mark.parametrize(
    "command",
    [
        "pretrain",
        "finetune",
        "sample",
        "evaluate",
        "export",
        "quickstart",
        "config",
        "schedule",
        "schedule optimise",
        "schedule finetune",
    ],
)
def test_help_explains_every_option(command):
    output = invoke(*command.split(), "--help").output
    assert "Usage:" in output
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") and "  " not in stripped and not line.startswith("      "):
            pytest.fail(f"option without help in `fewstep {command} --help`: {stripped}")


def test_a_partial_config_file_applies_on_top_of_the_checkpoints_config(tmp_path):
    """`--config` holding one section changes that section only; the rest comes from the checkpoint."""
    run_dir = tmp_path / "moons"
    invoke(
        "pretrain",
        "--run-dir",
        run_dir,
        "--quiet",
        "--set",
        "data.name=moons",
        "--set",
        "schedule.T=4",
        "--set",
        "model.hidden=[16,16]",
        "--set",
        "pretrain.steps=20",
        "--set",
        "evaluate.n_samples=100",
    )
    partial = tmp_path / "eval.yaml"
    partial.write_text("evaluate:\n  n_samples: 120\n")
    scores = tmp_path / "scores.json"
    invoke(
        "evaluate",
        "--checkpoint",
        run_dir / "checkpoints" / "pretrain.safetensors",
        "--config",
        partial,
        "--out",
        scores,
    )
    assert json.loads(scores.read_text())["model"]["w2"] > 0
    from fewstep.config import load_config

    config = load_config(partial, ["evaluate.seed=3"], base={"data": {"name": "moons"}, "schedule": {"T": 4}})
    assert (config.data.name, config.schedule.T, config.evaluate.n_samples, config.evaluate.seed) == (
        "moons",
        4,
        120,
        3,
    )
    partial.write_text("- not a mapping\n")
    bad = CliRunner().invoke(main, ["evaluate", "--samples", str(tmp_path / "x.npy"), "--config", str(partial)])
    assert bad.exit_code == 2 and "mapping of sections" in bad.output
