"""The image workflow from the command line: a diffusers pipeline folder (or a fewstep U-Net) in,
FID in every run, a pipeline folder out that diffusers samples alone.

Tiny networks on scikit-learn's 8x8 digits; the numbers are meaningless, the plumbing is checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("diffusers")
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline  # noqa: E402

from _diffusers import tiny_unet  # noqa: E402
from fewstep.cli import main  # noqa: E402
from fewstep.models import load_pretrained  # noqa: E402

DATA = ["data.name=digits"]
EVAL = ["evaluate.n_samples=40", "evaluate.train_samples=24", "evaluate.batch_size=64"]
FINETUNE = [
    "finetune.iterations=2",
    "finetune.batch_size=8",
    "finetune.n_critic=1",
    "finetune.n_generator=2",
    "finetune.critic_channels=[4, 8, 16]",
    "finetune.baseline_hidden=[16]",
    "finetune.eval_every=1",
    "finetune.checkpoint_every=2",
    "finetune.lr_generator=1e-5",
]
FASTDPM = [
    "sampler.kind=fastdpm",
    "sampler.steps=4",
    "sampler.fastdpm.approach=VAR",
    "sampler.fastdpm.schedule=quadratic",
    "sampler.fastdpm.kappa=1",
    "sampler.fastdpm.reverse=ddpm",
    "sampler.noise_at_last_step=true",
]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A DDPMPipeline folder as diffusers writes it; clip_sample=True (the DDPMScheduler default)."""
    unet = tiny_unet()
    folder = tmp_path_factory.mktemp("pipe") / "ddpm"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    return folder


def test_sample_and_evaluate_a_pipeline_folder(pipeline, tmp_path):
    out = tmp_path / "x.npy"
    result = invoke("sample", "--checkpoint", pipeline, "-n", 6, "--out", out, *sets(FASTDPM))
    assert "wrote 6 samples (4-step fastdpm sampler)" in result.output
    assert np.load(out).shape == (6, 1, 8, 8)
    scores = tmp_path / "scores.json"
    result = invoke("evaluate", "--checkpoint", pipeline, *sets(DATA + EVAL + FASTDPM), "--out", scores)
    # the data set and the sample counts it used are printed, every figure beside its floor
    assert "data: digits; 40 samples against 40 held-out examples" in result.output
    assert "fid" in result.output and "(floor" in result.output and "kid" in result.output
    record = json.loads(scores.read_text())
    assert record["data"] == "digits" and record["n"] == 40 and record["model"]["fid"] > record["floor"]["fid"]


def test_a_pipeline_records_clip_sample_as_the_samplers_clip_x0(pipeline):
    model = load_pretrained(pipeline)
    assert model.kind == "diffusers" and model.config.sampler.clip_x0 == 1.0
    assert model.config.sampler.ddpm.variance == "beta_tilde"  # fixed_small, the DDPMScheduler default


@pytest.fixture(scope="module")
def finetuned(pipeline, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ft") / "run"
    result = invoke(
        "finetune",
        "--checkpoint",
        pipeline,
        "--preset",
        "images",
        "--run-dir",
        run_dir,
        "--quiet",
        *sets(DATA + EVAL + FINETUNE + FASTDPM),
    )
    return run_dir, result


def test_finetune_a_pipeline_folder_reports_fid(finetuned):
    run_dir, result = finetuned
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    during = [r for r in records if r["stage"] == "finetune" and "fid" in r]
    assert [r["step"] for r in during] == [0, 1, 2] and all(r["floor_fid"] > 0 for r in during)
    final = [r for r in records if r["stage"] == "evaluate"]
    assert len(final) == 2 and all({"fid", "kid", "precision", "recall"} <= set(r["model"]) for r in final)
    assert all(r["floor"]["fid"] > 0 and r["n"] == 40 for r in final)
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"samples.png", "finetune_fid.png"} <= figures
    summary = (run_dir / "summary.md").read_text()
    assert "| FID | KID | precision | recall |" in summary and "noise floor" in summary
    assert "before (fastdpm), 4 steps" in summary and summary.strip() in result.output
    tuned = load_pretrained(run_dir / "checkpoints" / "finetune.safetensors")
    assert tuned.kind == "diffusers" and tuned.table.K == 4 and tuned.table.clip_x0 == 1.0


def test_export_a_finetuned_pipeline_and_sample_it_with_diffusers(finetuned, tmp_path):
    run_dir, _ = finetuned
    ckpt = run_dir / "checkpoints" / "finetune.safetensors"
    out = tmp_path / "tuned"
    result = invoke("export", "--checkpoint", ckpt, "--out", out)
    assert "FewstepScheduler (4-step fastdpm sampler)" in result.output and "trust_remote_code=True" in result.output
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (3, 8, 8, 1) and len(pipe.scheduler.timesteps) == 4
    # fewstep reads the exported folder back with its table and weights
    back, tuned = load_pretrained(out), load_pretrained(ckpt)
    assert torch.equal(back.table.a, tuned.table.a) and back.table.clip_x0 == 1.0
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 40.0])
    with torch.no_grad():
        torch.testing.assert_close(back.model(x, t), tuned.model(x, t))
    result = invoke("sample", "--checkpoint", out, "-n", 4, "--out", tmp_path / "y.npy")
    assert "(4-step fastdpm sampler)" in result.output
    # an existing folder is not overwritten
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_schedule_optimise_a_pipeline_folder(pipeline, tmp_path):
    result = invoke(
        "schedule",
        "optimise",
        "--checkpoint",
        pipeline,
        "--run-dir",
        tmp_path / "opt",
        "--quiet",
        *sets(DATA + EVAL + ["schedule_opt.steps=3", "schedule_opt.grid_size=10", "schedule_opt.n_mc=64"]),
    )
    assert "fid" in result.output and "floor" in result.output
    assert (tmp_path / "opt" / "figures" / "samples.png").is_file()
    ckpt = tmp_path / "opt" / "checkpoints" / "schedule.safetensors"
    again = load_pretrained(ckpt)  # the diffusers record travels with the checkpoint
    assert again.kind == "diffusers" and again.table.K == 3


def test_pretrain_a_fewstep_unet_then_export_it(tmp_path):
    """fewstep's own U-Net (one GroupNorm group count) converts to a UNet2DModel; without it, a clear refusal."""
    common = [*DATA, "model.kind=unet", "model.channels=8", "schedule.kind=linear", "schedule.T=20"]
    common += ["pretrain.steps=3", "pretrain.batch_size=8", "evaluate.n_samples=16"]
    with_fid = ["model.norm_groups=4", "pretrain.eval_every=3", "evaluate.train_samples=16"]
    invoke("pretrain", "--run-dir", tmp_path / "pre", "--quiet", *sets([*common, *with_fid]))
    records = [json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["stage"] == "pretrain" and "fid" in r] == [3]  # FID during pretraining
    assert {"pretrain_fid.png", "samples.png"} <= {p.name for p in (tmp_path / "pre" / "figures").iterdir()}
    assert "| FID | KID | precision | recall |" in (tmp_path / "pre" / "summary.md").read_text()
    ckpt = tmp_path / "pre" / "checkpoints" / "pretrain.safetensors"
    result = invoke("export", "--checkpoint", ckpt, "--out", tmp_path / "pipe", "--set", "sampler.steps=5")
    assert "(5-step ddpm sampler)" in result.output
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=2, output_type="np").images.shape == (2, 8, 8, 1)
    # --scheduler ddpm: a plain DDPMPipeline folder (stock scheduler, no remote code), read back by fewstep
    result = invoke("export", "--checkpoint", ckpt, "--out", tmp_path / "plain", "--scheduler", "ddpm")
    assert "DDPMScheduler (20-step DDPM)" in result.output
    plain = DDPMPipeline.from_pretrained(tmp_path / "plain")
    assert type(plain.scheduler).__name__ == "DDPMScheduler" and plain.scheduler.config.clip_sample is False
    back, original = load_pretrained(tmp_path / "plain"), load_pretrained(ckpt)
    assert back.kind == "diffusers" and back.config.sampler.clip_x0 is None
    assert back.config.sampler.ddpm.variance == "beta"  # fewstep's default DDPM variance is fixed_large
    torch.testing.assert_close(back.schedule.alpha_bar, original.schedule.alpha_bar, rtol=1e-6, atol=1e-7)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 17.0])
    with torch.no_grad():
        torch.testing.assert_close(back.model(x, t), original.model(x, t), rtol=1e-5, atol=1e-5)

    invoke("pretrain", "--run-dir", tmp_path / "pre2", "--quiet", *sets(common))
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--checkpoint",
            str(tmp_path / "pre2" / "checkpoints" / "pretrain.safetensors"),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 2 and "model.norm_groups" in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_export_refuses_vector_models(tmp_path):
    invoke("pretrain", "--run-dir", tmp_path / "pre", "--quiet", *sets(["pretrain.steps=2", "evaluate.n_samples=50"]))
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--checkpoint",
            str(tmp_path / "pre" / "checkpoints" / "pretrain.safetensors"),
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert result.exit_code == 2 and "only image models" in result.output and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    "folder,change,match",
    [
        ("scheduler", {"prediction_type": "v_prediction"}, "prediction_type 'v_prediction' is not supported"),
        ("scheduler", {"variance_type": "learned_range"}, "learned variance"),
        ("scheduler", {"thresholding": True}, "thresholding"),
        ("unet", {"num_class_embeds": 10}, "class-conditional"),
        ("unet", {"_class_name": "UNet2DConditionModel"}, "unconditional UNet2DModel"),
    ],
)
def test_unsupported_pipelines_are_one_line_errors(pipeline, tmp_path, folder, change, match):
    import shutil

    copy = tmp_path / "pipe"
    shutil.copytree(pipeline, copy)
    name = "scheduler_config.json" if folder == "scheduler" else "config.json"
    file = copy / folder / name
    file.write_text(json.dumps({**json.loads(file.read_text()), **change}))
    for command in (
        ["sample", "--out", str(tmp_path / "x.npy")],
        ["finetune"],
        ["export", "--out", str(tmp_path / "o")],
    ):
        result = CliRunner().invoke(main, [command[0], "--checkpoint", str(copy), *command[1:]])
        assert result.exit_code == 2 and match in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
