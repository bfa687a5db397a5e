"""The bad-input catalogue, Python API: every case raises a FewstepError (never a bare ValueError,
RuntimeError or a silent result) with a one-line message naming the problem, and leaves every file
of the workspace as it was (a refused ``fewstep.pretrain`` creates no run directory).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import fewstep
from fewstep.config import ModelConfig, PretrainConfig, SamplerConfig, load_config
from fewstep.errors import FewstepError
from fewstep.schedules import make_schedule

from _bad_input import assert_unchanged, build_workspace, snapshot


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("bad-input-api"))


@pytest.fixture(scope="module")
def model(ws):
    return fewstep.load(ws["ck"])


def tiny(**changes):
    config = load_config(None, ["pretrain.steps=3", "model.hidden=[16,16]", "evaluate.n_samples=50"])
    return dataclasses.replace(config, **changes)


def table_beyond_T():
    return fewstep.build_table(SamplerConfig(kind="ddim", steps=4), make_schedule("sigmoid", 100))


# (id, a call taking the workspace and the loaded model, words the message must contain)
CASES = [
    ("load-missing", lambda ws, m: fewstep.load(ws["root"] / "none.safetensors"), ["does not exist"]),
    ("load-not-a-path", lambda ws, m: fewstep.load(123), ["path", "123"]),
    ("load-flipped", lambda ws, m: fewstep.load(ws["flipped"]), ["damaged", "checksum"]),
    ("load-flipped-metadata", lambda ws, m: fewstep.load(ws["metaflip"]), ["damaged", "metadata"]),
    ("load-nan-weights", lambda ws, m: fewstep.load(ws["nan_ck"]), ["non-finite weights"]),
    ("load-unknown-key", lambda ws, m: fewstep.load(ws["bogus_ck"]), ["bogus-key.safetensors", "model.bogus"]),
    (
        "load-with-other-config",
        lambda ws, m: fewstep.load(ws["ck"], tiny(model=ModelConfig(hidden=[8]))),
        ["model.hidden"],
    ),
    ("config-nan", lambda ws, m: load_config(None, ["pretrain.lr=.nan"]), ["pretrain.lr", "finite"]),
    ("config-missing-file", lambda ws, m: load_config(ws["root"] / "none.yaml"), ["does not exist"]),
    ("config-yaml-syntax", lambda ws, m: load_config(ws["yaml_syntax"]), ["line 4", "column"]),
    ("config-unknown-key", lambda ws, m: load_config(None, ["pretrain.stepz=1"]), ["pretrain.stepz"]),
    (
        "pretrain-python-nan",
        lambda ws, m: fewstep.pretrain(
            tiny(pretrain=PretrainConfig(lr=float("nan"))), run_dir=ws["new"], progress=False
        ),
        ["pretrain.lr", "finite"],
    ),
    (
        "pretrain-python-wrong-type",
        lambda ws, m: fewstep.pretrain(tiny(pretrain=PretrainConfig(steps="3")), run_dir=ws["new"], progress=False),
        ["pretrain.steps", "integer"],
    ),
    (
        "pretrain-not-a-config",
        lambda ws, m: fewstep.pretrain({"pretrain": {}}, run_dir=ws["new"], progress=False),
        ["Config"],
    ),
    ("pretrain-no-config", lambda ws, m: fewstep.pretrain(None, run_dir=ws["new"]), ["needs a config"]),
    (
        "pretrain-huge-model",
        lambda ws, m: fewstep.pretrain(
            tiny(model=ModelConfig(hidden=[200000, 200000])), run_dir=ws["new"], progress=False
        ),
        ["needs about", "GiB", "model.hidden"],
    ),
    ("pretrain-device", lambda ws, m: fewstep.pretrain(tiny(device="banana"), run_dir=ws["new"]), ["device"]),
    (
        "pretrain-bad-data",
        lambda ws, m: fewstep.pretrain(
            load_config(None, ["data.name=file", f"data.path={ws['root']}/none.npy"]), run_dir=ws["new"]
        ),
        ["does not exist"],
    ),
    ("pretrain-existing-run", lambda ws, m: fewstep.pretrain(tiny(), run_dir=ws["run"]), ["already holds a run"]),
    (
        "pretrain-resume-changes-data",
        lambda ws, m: fewstep.pretrain(None, run_dir=ws["run"], resume=True, overrides=["data.name=moons"]),
        ["data.name"],
    ),
    ("finetune-not-a-model", lambda ws, m: fewstep.finetune("model.safetensors", run_dir=ws["new"]), ["loaded model"]),
    (
        "finetune-changed-model",
        lambda ws, m: fewstep.finetune(m, tiny(model=ModelConfig(hidden=[8])), run_dir=ws["new"], progress=False),
        ["model.hidden"],
    ),
    (
        "finetune-3d-model-2d-data",
        lambda ws, m: fewstep.finetune(
            fewstep.load(ws["ck3"]), load_config(None, ["model.hidden=[16,16]"]), run_dir=ws["new"], progress=False
        ),
        ["shape (3,)", "(2,)"],
    ),
    (
        "finetune-table-beyond-T",
        lambda ws, m: fewstep.finetune(m, run_dir=ws["new"], table=table_beyond_T(), progress=False),
        ["T=10"],
    ),
    ("sample-n-zero", lambda ws, m: fewstep.sample(m, 0), ["n must be an integer >= 1"]),
    ("sample-n-float", lambda ws, m: fewstep.sample(m, 10.5), ["n must be an integer"]),
    ("sample-batch-zero", lambda ws, m: fewstep.sample(m, 10, batch_size=0), ["batch_size"]),
    ("sample-seed-negative", lambda ws, m: fewstep.sample(m, 10, seed=-1), ["seed"]),
    ("sample-device", lambda ws, m: fewstep.sample(m, 10, device="cuda:7"), ["device", "cuda:7"]),
    ("sample-table-beyond-T", lambda ws, m: fewstep.sample(m, 10, table=table_beyond_T()), ["T=10"]),
    ("sample-not-a-table", lambda ws, m: fewstep.sample(m, 10, table="ddim"), ["StepTable"]),
    ("sample-huge", lambda ws, m: fewstep.sample(m, 10**12), ["needs about", "-n"]),
    ("evaluate-both", lambda ws, m: fewstep.evaluate(m, samples=torch.zeros(10, 2)), ["exactly one"]),
    ("evaluate-neither", lambda ws, m: fewstep.evaluate(), ["exactly one"]),
    ("evaluate-samples-shape", lambda ws, m: fewstep.evaluate(samples=torch.zeros(10, 3)), ["(3,)", "(2,)"]),
    ("evaluate-samples-nan", lambda ws, m: fewstep.evaluate(samples=torch.full((10, 2), float("nan"))), ["NaN"]),
    ("evaluate-samples-not-a-tensor", lambda ws, m: fewstep.evaluate(samples=[[0.0, 1.0]] * 10), ["tensor"]),
    (
        "evaluate-3d-model",
        lambda ws, m: fewstep.evaluate(fewstep.load(ws["ck3"]), config=load_config(None, ["model.hidden=[16,16]"])),
        ["shape (3,)"],
    ),
    (
        "build-table-no-steps",
        lambda ws, m: fewstep.build_table(SamplerConfig(kind="ddim"), make_schedule("sigmoid", 10)),
        ["needs sampler.steps"],
    ),
    (
        "build-table-over-T",
        lambda ws, m: fewstep.build_table(SamplerConfig(steps=20), make_schedule("sigmoid", 10)),
        ["sampler.steps=20"],
    ),
    (
        "build-table-analytic-without-model",
        lambda ws, m: fewstep.build_table(SamplerConfig(kind="analytic_dpm", steps=4), make_schedule("sigmoid", 10)),
        ["sampler.analytic_dpm.gamma"],
    ),
]


def test_catalogue_is_large_enough():
    assert len(CASES) >= 15
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("call, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_a_fewstep_error(ws, model, call, words):
    if any("cuda" in w for w in words) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = snapshot(ws["root"])
    with pytest.raises(FewstepError) as caught:
        call(ws, model)
    message = str(caught.value)
    assert "\n" not in message.strip(), message
    for word in words:
        assert word in message, (word, message)
    assert_unchanged(before, ws["root"])


def test_a_diverged_model_samples_are_an_error_not_a_result(ws, model):
    """A model whose weights went bad in memory: sampling says so instead of returning NaN."""
    broken = dataclasses.replace(model, model=copy.deepcopy(model.model))
    with torch.no_grad():
        for p in broken.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FewstepError, match="NaN or infinite"):
        fewstep.sample(broken, 10)


def test_settings_of_another_version_outside_the_model_are_ignored_not_fatal(tmp_path):
    """A checkpoint whose recorded training or evaluation settings this version does not know still
    loads (those settings do not define the model); what was ignored is recorded."""
    from _bad_input import crafted_checkpoint

    path = crafted_checkpoint(
        tmp_path / "old.safetensors",
        (2,),
        extra_config={"pretrain": {"bogus": 1}, "finetune": {"learn_variance": False}},
    )
    model = fewstep.load(path)
    assert sorted(model.meta["ignored_settings"]) == ["finetune.learn_variance", "pretrain.bogus"]
    assert model.config.finetune.learn_variance == "last"  # the default took its place
