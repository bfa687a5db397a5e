"""The bad-input catalogue, command line: every case exits 2 with one line "error: ..." naming the
problem, no traceback, and leaves every file of the workspace as it was (no run directory created,
no run file rewritten, no output written).

The cases cover issue 12's list: NaN and infinite numbers, values that cannot fit in memory
(refused with the estimate), a device this torch build lacks, models meeting data of another
shape, damaged checkpoints and run records, resumes that would change what a run is, output paths
that cannot be written or would overwrite an input, and click's own usage errors.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from _bad_input import build_workspace, refused, sets

CORES = os.cpu_count() or 1
NEW = ["--run-dir", "{new}", "--quiet"]
PRE = ["pretrain", *NEW]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("bad-input-cli"))


def expand(ws, args):
    return [str(a).format(**{k: str(v) for k, v in ws.items()}) for a in args]


# (id, arguments, words the one error line must contain)
CONFIG = [
    ("unknown-key", [*PRE, "--set", "pretrain.stepz=3"], ["unknown config key pretrain.stepz"]),
    ("unknown-section", [*PRE, "--set", "foo.bar=1"], ["unknown config key foo"]),
    ("not-an-integer", [*PRE, "--set", "pretrain.steps=abc"], ["pretrain.steps", "integer", "'abc'"]),
    ("fractional-integer", [*PRE, "--set", "pretrain.steps=2.5"], ["pretrain.steps", "integer"]),
    ("not-a-number", [*PRE, "--set", "pretrain.lr=fast"], ["pretrain.lr", "number"]),
    ("not-a-list", [*PRE, "--set", "model.hidden=128"], ["model.hidden", "list"]),
    (
        "not-a-bool",
        [*PRE, "--set", "sampler.noise_at_last_step=maybe"],
        ["sampler.noise_at_last_step", "true or false"],
    ),
    ("not-a-string", [*PRE, "--set", "data.name=[1]"], ["data.name", "string"]),
    ("negative-lr", [*PRE, "--set", "pretrain.lr=-1"], ["pretrain.lr", "> 0"]),
    ("zero-lr", [*PRE, "--set", "pretrain.lr=0"], ["pretrain.lr", "> 0"]),
    ("zero-T", [*PRE, "--set", "schedule.T=0"], ["schedule.T", ">= 1"]),
    ("ema-above-1", [*PRE, "--set", "pretrain.ema_decay=1.5"], ["pretrain.ema_decay", "<= 0.99"]),
    ("nan-lr", [*PRE, "--set", "pretrain.lr=.nan"], ["pretrain.lr", "finite"]),
    ("inf-lr", [*PRE, "--set", "pretrain.lr=.inf"], ["pretrain.lr", "finite"]),
    ("nan-ema", [*PRE, "--set", "pretrain.ema_decay=.nan"], ["pretrain.ema_decay", "finite"]),
    ("nan-critic-bound", [*PRE, "--set", "finetune.critic_bound=.nan"], ["finetune.critic_bound", "finite"]),
    ("nan-timestep", [*PRE, "--set", "sampler.timesteps=[1,.nan]"], ["sampler.timesteps[1]", "finite"]),
    ("bad-choice", [*PRE, "--set", "schedule.kind=quadratic"], ["schedule.kind", "'quadratic'", "sigmoid"]),
    ("bad-choice-other-section", [*PRE, "--set", "schedule_opt.method=magic"], ["schedule_opt.method"]),
    ("decreasing-timesteps", [*PRE, "--set", "sampler.timesteps=[5,3]"], ["sampler.timesteps", "increase"]),
    ("no-equals", [*PRE, "--set", "pretrain.steps"], ["section.key=value"]),
    ("bad-yaml-value", [*PRE, "--set", "model.hidden=[1,"], ["model.hidden", "not valid YAML"]),
    ("zero-width", [*PRE, "--set", "model.hidden=[0]"], ["model.hidden", ">= 1"]),
    ("batch-1e12", [*PRE, "--set", "pretrain.batch_size=1e12"], ["pretrain.batch_size", "1e+12", "<= 1000000"]),
    ("steps-1e30", [*PRE, "--set", "pretrain.steps=1e30"], ["pretrain.steps", "<= 1000000000"]),
    ("eval-samples-1e12", [*PRE, "--set", "evaluate.n_samples=1e12"], ["evaluate.n_samples", "<= 10000000"]),
    ("heldout-too-big", [*PRE, "--set", "data.heldout_fraction=0.95"], ["data.heldout_fraction", "<= 0.9"]),
    ("steps-over-T", [*PRE, "--set", "sampler.steps=20"], ["sampler.steps=20", "T=10"]),
    ("ddim-without-steps", [*PRE, "--set", "sampler.kind=ddim"], ["sampler kind ddim needs sampler.steps"]),
    ("fastdpm-over-T", [*PRE, *sets(["sampler.kind=fastdpm", "sampler.steps=11"])], ["sampler.steps=11", "T=10"]),
    ("device-banana", [*PRE, "--set", "device=banana"], ["device", "'banana'", "cpu, cuda"]),
    ("device-cuda-x", [*PRE, "--set", "device=cuda:x"], ["device", "'cuda:x'"]),
    ("threads-range", [*PRE, "--set", "threads=100000"], ["threads", "<= 1024"]),
    ("threads-over-cores", [*PRE, "--set", f"threads={CORES + 1}"], ["threads", f"{CORES} CPU cores"]),
    ("unet-on-points", [*PRE, "--set", "model.kind=unet"], ["model.kind=unet", "images", "(2,)"]),
    ("diffusers-from-scratch", [*PRE, "--set", "model.kind=diffusers"], ["model.kind=diffusers"]),
    ("long-value", [*PRE, "--set", "data.name=" + "x" * 100_000], ["data.name", "choose one of"]),
]

RESOURCES = [
    ("huge-model", [*PRE, "--set", "model.hidden=[200000,200000]"], ["pretraining needs about", "GiB", "model.hidden"]),
    (
        "huge-batch",
        [*PRE, *sets(["pretrain.batch_size=1000000", "model.hidden=[4096,4096]"])],
        ["pretraining needs about", "pretrain.batch_size"],
    ),
    ("huge-evaluation", [*PRE, "--set", "evaluate.n_samples=5e6"], ["needs about", "evaluate.n_samples"]),
    (
        "huge-exact-w2",
        [*PRE, *sets(["evaluate.n_samples=50000", "evaluate.exact_w2_max=50000"])],
        ["needs about", "evaluate.exact_w2_max"],
    ),
    (
        "huge-critic",
        ["finetune", "--checkpoint", "{ck}", *NEW, "--set", "finetune.critic_hidden=[100000,100000]"],
        ["fine-tuning needs about", "finetune.critic_hidden"],
    ),
    (
        "quickstart-huge-critic",
        ["quickstart", *NEW, *sets(["pretrain.steps=3", "finetune.baseline_hidden=[100000,100000]"])],
        ["fine-tuning (after pretraining) needs about", "finetune.baseline_hidden"],
    ),
]

FILES = [
    ("config-missing", [*PRE, "--config", "{root}/none.yaml"], ["config file", "does not exist"]),
    ("config-is-a-directory", [*PRE, "--config", "{root}"], ["--config", "directory"]),
    ("config-syntax", [*PRE, "--config", "{yaml_syntax}"], ["not valid YAML", "line 4", "column"]),
    ("config-not-a-mapping", [*PRE, "--config", "{yaml_list}"], ["mapping of sections"]),
    ("config-unknown-key", [*PRE, "--config", "{yaml_unknown}"], ["pretrain.stepz"]),
    ("data-path-missing", [*PRE, "--set", "data.name=file"], ["data.path is required"]),
    ("data-path-is-a-directory", [*PRE, *sets(["data.name=file", "data.path={root}"])], ["is a directory"]),
    ("data-file-missing", [*PRE, *sets(["data.name=file", "data.path={root}/none.npy"])], ["does not exist"]),
    ("data-file-suffix", [*PRE, *sets(["data.name=file", "data.path={afile}"])], ["suffix '.txt'"]),
    ("data-pickle", [*PRE, *sets(["data.name=file", "data.path={sobj}"])], ["cannot read data file"]),
    ("image-folder-missing", [*PRE, *sets(["data.name=folder", "data.path={root}/none"])], ["does not exist"]),
    ("run-dir-is-a-file", ["pretrain", "--run-dir", "{afile}", "--quiet"], ["is a file"]),
    ("run-dir-below-a-file", ["pretrain", "--run-dir", "{afile}/run", "--quiet"], ["cannot be created", "is a file"]),
    ("run-dir-holds-a-run", ["pretrain", "--run-dir", "{run}", "--quiet"], ["already holds a run", "--resume"]),
    (
        "run-dir-holds-other-files",
        ["pretrain", "--run-dir", "{plain_dir}/..", "--quiet"],
        ["not empty", "no fewstep run"],
    ),
    ("unknown-option", ["pretrain", "--bogus"], ["No such option", "--bogus"]),
    ("unknown-command", ["pretrian"], ["No such command"]),
]
if sys.platform.startswith("linux"):
    FILES.append(("run-dir-not-creatable", ["pretrain", "--run-dir", "/proc/fewstep-test/run"], ["cannot be created"]))

CHECKPOINTS = [
    ("finetune-without-checkpoint", ["finetune", *NEW], ["--checkpoint"]),
    ("checkpoint-missing", ["finetune", "--checkpoint", "{root}/none.safetensors", *NEW], ["does not exist"]),
    ("checkpoint-is-a-folder", ["sample", "--checkpoint", "{notckpt}"], ["is a directory"]),
    ("flipped-tensor-bytes", ["sample", "--checkpoint", "{flipped}", "--out", "{root}/s.npy"], ["damaged", "checksum"]),
    ("flipped-metadata", ["sample", "--checkpoint", "{metaflip}", "--out", "{root}/s.npy"], ["damaged", "metadata"]),
    ("nan-weights", ["sample", "--checkpoint", "{nan_ck}", "--out", "{root}/s.npy"], ["non-finite weights"]),
    (
        "checkpoint-unknown-key",
        ["sample", "--checkpoint", "{bogus_ck}", "--out", "{root}/s.npy"],
        ["{bogus_ck}", "model.bogus"],
    ),
    (
        "checkpoint-malformed-table",
        ["sample", "--checkpoint", "{table_ck}", "--out", "{root}/s.npy"],
        ["{table_ck}", "step table", "malformed"],
    ),
    ("finetune-flipped", ["finetune", "--checkpoint", "{flipped}", *NEW], ["damaged"]),
    (
        "finetune-3d-model-2d-data",
        ["finetune", "--checkpoint", "{ck3}", *NEW, "--set", "data.name=swiss_roll"],
        ["shape (3,)", "shape (2,)"],
    ),
    (
        "evaluate-3d-model-2d-data",
        ["evaluate", "--checkpoint", "{ck3}", "--set", "data.name=swiss_roll"],
        ["shape (3,)", "shape (2,)"],
    ),
    (
        "schedule-3d-model-2d-data",
        ["schedule", "optimise", "--checkpoint", "{ck3}", *NEW, "--set", "data.name=moons"],
        ["shape (3,)"],
    ),
    (
        "finetune-changes-model",
        ["finetune", "--checkpoint", "{ck}", *NEW, "--set", "model.hidden=[8]"],
        ["model.hidden", "[16, 16]", "[8]"],
    ),
    ("evaluate-changes-T", ["evaluate", "--checkpoint", "{ck}", "--set", "schedule.T=100"], ["schedule.T", "100"]),
    (
        "evaluate-changes-schedule",
        ["evaluate", "--checkpoint", "{ck}", "--set", "schedule.kind=linear"],
        ["schedule.kind"],
    ),
    (
        "finetune-zero-lr",
        ["finetune", "--checkpoint", "{ck}", *NEW, "--set", "finetune.lr_generator=0"],
        ["finetune.lr_generator"],
    ),
    ("finetune-bad-preset", ["finetune", "--checkpoint", "{ck}", *NEW, "--preset", "huge"], ["--preset"]),
    (
        "finetune-data-missing",
        ["finetune", "--checkpoint", "{ck}", *NEW, *sets(["data.name=file", "data.path={root}/none.npy"])],
        ["does not exist"],
    ),
    (
        "finetune-sampler-over-T",
        ["finetune", "--checkpoint", "{ck}", *NEW, "--set", "sampler.steps=11"],
        ["sampler.steps=11"],
    ),
    (
        "schedule-steps-over-T",
        ["schedule", "optimise", "--checkpoint", "{ck}", *NEW, "--set", "schedule_opt.steps=50"],
        ["schedule_opt.steps", "T=10"],
    ),
    (
        "schedule-grid-too-small",
        [
            "schedule",
            "optimise",
            "--checkpoint",
            "{ck}",
            *NEW,
            *sets(["schedule_opt.method=dp", "schedule_opt.steps=9", "schedule_opt.grid_size=3"]),
        ],
        ["schedule_opt.grid_size"],
    ),
    (
        "schedule-keep-without-schedule",
        ["schedule", "finetune", "--checkpoint", "{ck}", *NEW, "--keep-schedule"],
        ["--keep-schedule"],
    ),
    (
        "schedule-run-dir-holds-a-run",
        ["schedule", "optimise", "--checkpoint", "{ck}", "--run-dir", "{run}"],
        ["already holds a run"],
    ),
]

OUTPUTS = [
    ("sample-n-zero", ["sample", "--checkpoint", "{ck}", "-n", "0"], ["--num-samples"]),
    ("sample-n-1e12", ["sample", "--checkpoint", "{ck}", "-n", "1e12"], ["--num-samples", "1e12"]),
    ("sample-batch-zero", ["sample", "--checkpoint", "{ck}", "--batch-size", "0"], ["--batch-size"]),
    ("sample-seed-negative", ["sample", "--checkpoint", "{ck}", "--seed", "-1"], ["--seed"]),
    (
        "sample-out-folder-missing",
        ["sample", "--checkpoint", "{ck}", "--out", "{root}/nodir/x.npy"],
        ["folder of --out", "does not exist"],
    ),
    ("sample-out-is-a-directory", ["sample", "--checkpoint", "{ck}", "--out", "{run}/checkpoints"], ["--out"]),
    (
        "sample-figure-folder-missing",
        ["sample", "--checkpoint", "{ck}", "--out", "{root}/s.npy", "--figure", "{root}/nodir/sub/f.png"],
        ["folder of --figure"],
    ),
    (
        "sample-figure-format",
        ["sample", "--checkpoint", "{ck}", "--out", "{root}/s.npy", "--figure", "{root}/f.txt"],
        ["--figure", ".png"],
    ),
    (
        "sample-figure-3d",
        ["sample", "--checkpoint", "{ck3}", "--out", "{root}/s.npy", "--figure", "{root}/f.png"],
        ["--figure", "(3,)"],
    ),
    (
        "sample-steps-over-T",
        ["sample", "--checkpoint", "{ck}", "--out", "{root}/s.npy", "--set", "sampler.steps=11"],
        ["sampler.steps=11", "T=10"],
    ),
    (
        "sample-gamma-length",
        [
            "sample",
            "--checkpoint",
            "{ck}",
            "--out",
            "{root}/s.npy",
            *sets(["sampler.kind=analytic_dpm", "sampler.steps=4", "sampler.analytic_dpm.gamma=[1.0]"]),
        ],
        ["sampler.analytic_dpm.gamma", "4 steps"],
    ),
    (
        "sample-changes-model",
        ["sample", "--checkpoint", "{ck}", "--out", "{root}/s.npy", "--set", "model.hidden=[8]"],
        ["model.hidden"],
    ),
    (
        "sample-cuda",
        ["sample", "--checkpoint", "{ck}", "--out", "{root}/s.npy", "--set", "device=cuda:7"],
        ["device", "cuda:7"],
    ),
    ("evaluate-both", ["evaluate", "--checkpoint", "{ck}", "--samples", "{s2}"], ["exactly one"]),
    ("evaluate-neither", ["evaluate"], ["exactly one"]),
    (
        "evaluate-out-folder-missing",
        ["evaluate", "--checkpoint", "{ck}", "--out", "{root}/nodir/e.json"],
        ["folder of --out"],
    ),
    (
        "evaluate-out-is-the-checkpoint",
        ["evaluate", "--checkpoint", "{ck}", "--out", "{ck}"],
        ["input of this command"],
    ),
    ("evaluate-out-is-the-samples", ["evaluate", "--samples", "{s2}", "--out", "{s2}"], ["input of this command"]),
    ("evaluate-samples-dimension", ["evaluate", "--samples", "{s3}"], ["shape (3,)", "(2,)"]),
    ("evaluate-samples-nan", ["evaluate", "--samples", "{snan}"], ["NaN"]),
    ("evaluate-samples-missing", ["evaluate", "--samples", "{root}/none.npy"], ["does not exist"]),
    ("evaluate-samples-pickle", ["evaluate", "--samples", "{sobj}"], ["cannot read samples file"]),
    (
        "evaluate-huge",
        ["evaluate", "--checkpoint", "{ck}", "--set", "evaluate.n_samples=5e6"],
        ["evaluation needs about"],
    ),
]
if sys.platform.startswith("linux"):
    OUTPUTS.append(
        ("sample-out-not-writable", ["sample", "--checkpoint", "{ck}", "--out", "/proc/x.npy"], ["cannot be written"])
    )

RESUME = [
    ("resume-no-run-dir", ["pretrain", "--resume"], ["--resume needs --run-dir"]),
    ("resume-missing-dir", ["pretrain", "--resume", "--run-dir", "{root}/none"], ["--resume needs --run-dir"]),
    ("resume-not-a-run", ["pretrain", "--resume", "--run-dir", "{plain_dir}"], ["not a fewstep run directory"]),
    ("resume-other-kind", ["finetune", "--resume", "--run-dir", "{run}"], ["holds a pretrain run", "fewstep finetune"]),
    ("resume-quickstart-kind", ["quickstart", "--resume", "--run-dir", "{run}"], ["holds a pretrain run"]),
    (
        "resume-changes-data",
        ["pretrain", "--resume", "--run-dir", "{run}", "--set", "data.name=moons"],
        ["data.name", "'swiss_roll'", "'moons'", "cannot change"],
    ),
    (
        "resume-changes-model",
        ["pretrain", "--resume", "--run-dir", "{run}", "--set", "model.hidden=[8]"],
        ["model.hidden", "[16, 16]", "[8]"],
    ),
    ("resume-changes-T", ["pretrain", "--resume", "--run-dir", "{run}", "--set", "schedule.T=20"], ["schedule.T"]),
    ("resume-changes-seed", ["pretrain", "--resume", "--run-dir", "{run}", "--set", "seed=5"], ["seed"]),
    (
        "resume-changes-ema",
        ["pretrain", "--resume", "--run-dir", "{run}", "--set", "pretrain.ema_decay=0"],
        ["pretrain.ema_decay"],
    ),
    ("resume-bad-value", ["pretrain", "--resume", "--run-dir", "{run}", "--set", "pretrain.lr=.nan"], ["pretrain.lr"]),
    ("resume-empty-config", ["pretrain", "--resume", "--run-dir", "{run_empty}"], ["config.yaml", "damaged"]),
    (
        "resume-truncated-config",
        ["pretrain", "--resume", "--run-dir", "{run_trunc}"],
        ["config.yaml", "damaged", "missing"],
    ),
    ("resume-broken-yaml", ["pretrain", "--resume", "--run-dir", "{run_yaml}"], ["damaged", "not valid YAML", "line"]),
    ("resume-no-kind", ["pretrain", "--resume", "--run-dir", "{run_nokind}"], ["run.yaml"]),
    (
        "resume-damaged-checkpoint",
        ["pretrain", "--resume", "--run-dir", "{run_badckpt}", "--set", "pretrain.steps=6"],
        ["damaged", "checksum"],
    ),
]

CASES = [*CONFIG, *RESOURCES, *FILES, *CHECKPOINTS, *OUTPUTS, *RESUME]


def test_catalogue_is_large_enough():
    assert len(CASES) >= 60
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("args, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_up_front(ws, args, words):
    if any("cuda" in str(a) for a in args) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = refused(ws["root"], expand(ws, args), *[w.format(**{k: str(v) for k, v in ws.items()}) for w in words])
    assert len(line) < 700


def test_device_cuda_on_a_cpu_build(ws):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(ws["root"], expand(ws, [*PRE, "--set", "device=cuda"]), "device", "'cuda'", "device=cpu")
