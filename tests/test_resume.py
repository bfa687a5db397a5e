"""(f) An interrupted and resumed pretraining run ends with exactly the weights of an uninterrupted one."""

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import fewstep.api as api_module
from fewstep.cli import main
from fewstep.config import load_config
from fewstep.runs import Run
from fewstep.training.pretrain import pretrain

OVERRIDES = [
    "pretrain.steps=24",
    "pretrain.checkpoint_every=8",
    "pretrain.log_every=4",
    "pretrain.batch_size=64",
    "model.hidden=[32,32]",
    "schedule.T=10",
    "seed=3",
    "evaluate.n_samples=50",
]  # the CLI scores the result


def interrupt_at(step):
    def callback(done, loss):
        if done == step:
            raise KeyboardInterrupt

    return callback


def checkpoint_tensors(run_dir):
    return load_file(str(run_dir / "checkpoints" / "pretrain.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run = Run(run_dir, load_config(None, OVERRIDES), "pretrain").start()
    pretrain(run.config, run, progress=False)
    return run_dir, checkpoint_tensors(run_dir), run.metrics("pretrain")


def assert_same_state(tensors, reference):
    assert set(tensors) == set(reference)
    assert any(k.startswith("model.") for k in tensors) and any(k.startswith("train.model.") for k in tensors)
    assert any(k.startswith("optim.") for k in tensors)
    for key in reference:
        assert torch.equal(tensors[key], reference[key]), key


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, uninterrupted):
    _, reference, reference_metrics = uninterrupted
    run = Run(tmp_path / "run", load_config(None, OVERRIDES), "pretrain").start()
    with pytest.raises(KeyboardInterrupt):
        pretrain(run.config, run, progress=False, callback=interrupt_at(13))  # last checkpoint at step 8
    assert len(run.metrics("pretrain")) == 3  # steps 4, 8, 12 were logged before the interruption
    resumed = Run.resume(tmp_path / "run", "pretrain")
    model = pretrain(resumed.config, resumed, resume=True, progress=False).model
    tensors = checkpoint_tensors(tmp_path / "run")
    assert_same_state(tensors, reference)
    # the returned model is the EMA model (decay 0.999: not the raw weights)
    for name, p in model.state_dict().items():
        assert torch.equal(p, reference["model." + name])
    assert not torch.equal(reference["model.out.weight"], reference["train.model.out.weight"])

    # the metrics past the checkpoint are redone, not duplicated
    def without_time(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert without_time(resumed.metrics("pretrain")) == without_time(reference_metrics)


def test_resume_from_a_different_seed_differs(tmp_path, uninterrupted):
    """The comparison above can fail: a run with another seed ends elsewhere."""
    _, reference, _ = uninterrupted
    run = Run(tmp_path / "run", load_config(None, [*OVERRIDES, "seed=4"]), "pretrain").start()
    pretrain(run.config, run, progress=False)
    assert not torch.equal(checkpoint_tensors(tmp_path / "run")["model.out.weight"], reference["model.out.weight"])


def test_cli_resume(tmp_path, monkeypatch, uninterrupted):
    _, reference, _ = uninterrupted
    args = [x for o in OVERRIDES for x in ("--set", o)]
    run_dir = tmp_path / "run"
    original = api_module.pretrain_stage

    def interrupted(*a, **kw):
        return original(*a, **kw, callback=interrupt_at(19))  # last checkpoint at step 16

    monkeypatch.setattr(api_module, "pretrain_stage", interrupted)
    result = CliRunner().invoke(main, ["pretrain", "--run-dir", str(run_dir), "--quiet", *args])
    assert result.exit_code == 130 and "interrupted" in result.stderr and "--resume" in result.stderr
    monkeypatch.undo()
    assert load_file(str(run_dir / "checkpoints" / "pretrain.safetensors"))["optim.model.0.step"].item() == 16

    result = CliRunner().invoke(main, ["pretrain", "--run-dir", str(run_dir), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert_same_state(checkpoint_tensors(run_dir), reference)
