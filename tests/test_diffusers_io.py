"""diffusers interoperability on a tiny randomly-initialised UNet2DModel created here."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDPMPipeline, DDPMScheduler  # noqa: E402

from fewstep.errors import FewstepError  # noqa: E402
from fewstep.images.diffusers_io import SAMPLER_FILE, load_diffusers, load_sampler  # noqa: E402
from fewstep.images.export import save_pipeline  # noqa: E402
from _diffusers import tiny_unet  # noqa: E402
from fewstep.samplers import ddpm_table  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def pipeline_dir(tmp_path):
    scheduler = DDPMScheduler(
        num_train_timesteps=50, beta_schedule="squaredcos_cap_v2", variance_type="fixed_small", clip_sample=False
    )
    DDPMPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    return tmp_path / "pipe"


def test_load_gives_same_outputs_and_schedule(pipeline_dir):
    loaded = load_diffusers(pipeline_dir)
    reference = tiny_unet()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 17.0, 49.0])
    with torch.no_grad():
        assert torch.equal(loaded.model(x, t), reference(x, t).sample)
    scheduler = DDPMScheduler.from_pretrained(pipeline_dir / "scheduler")
    assert loaded.schedule.T == 50 and loaded.variance == "beta_tilde"
    assert torch.allclose(loaded.schedule.alpha_bar, scheduler.alphas_cumprod.double(), atol=1e-6)
    # The two sub-folders given apart load the same thing.
    apart = load_diffusers(unet=pipeline_dir / "unet", scheduler=pipeline_dir / "scheduler")
    with torch.no_grad():
        assert torch.equal(apart.model(x, t), reference(x, t).sample)


def test_few_step_table_matches_diffusers_ddpm_steps(pipeline_dir):
    """With fixed_small variance and no clipping, fewstep's respaced DDPM table takes the same steps
    as DDPMScheduler.step on custom time-steps (same model output, same noise)."""
    loaded = load_diffusers(pipeline_dir)
    timesteps = [0, 9, 21, 34, 49]
    table = ddpm_table(loaded.schedule, timesteps, variance="beta_tilde")
    scheduler = loaded.scheduler
    scheduler.set_timesteps(timesteps=timesteps[::-1])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for k, t in enumerate(scheduler.timesteps):
        assert float(table.t[k]) == float(t)
        eps = torch.randn(2, 1, 8, 8)  # any model output
        out = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(k)).prev_sample
        z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(k))
        ours = table.a[k] * x.double() + table.b[k] * eps.double() + table.s[k] * z.double()
        assert torch.allclose(out.double(), ours, atol=1e-5), k
        x = out


def test_write_back_as_pipeline_round_trip(pipeline_dir, tmp_path):
    loaded = load_diffusers(pipeline_dir)
    with torch.no_grad():  # a "fine-tuned" model: change the weights
        for p in loaded.model.parameters():
            p.add_(0.01)
    table = ddpm_table(loaded.schedule, [0, 12, 25, 37, 49], variance="beta", noise_at_last_step=True)
    out = save_pipeline(tmp_path / "tuned", loaded.model, loaded.scheduler, table)
    # the pipeline's scheduler steps through the table: shipped as a file, so diffusers needs trust_remote_code
    pipe = DDPMPipeline.from_pretrained(out, trust_remote_code=True)
    assert type(pipe.scheduler).__name__ == "FewstepScheduler"
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 30.0])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, t).sample, loaded.model(x, t))
    record = json.loads((out / SAMPLER_FILE).read_text())
    assert record["timesteps"] == [49, 37, 25, 12, 0] and record["num_inference_steps"] == 5
    back = load_sampler(out)
    assert torch.equal(back.a, table.a) and torch.equal(back.s, table.s)
    (out / SAMPLER_FILE).unlink()  # the scheduler's own config holds the table too
    assert torch.equal(load_sampler(out).a, table.a)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=1, output_type="np").images  # diffusers samples the 5-step table
    assert images.shape == (1, 8, 8, 1) and len(pipe.scheduler.timesteps) == 5
    # the base DDPMScheduler config is kept: fewstep reads the folder back as the same diffusers model
    again = load_diffusers(out)
    assert again.variance == "beta_tilde" and torch.equal(again.table.a, table.a)
    assert torch.allclose(again.schedule.alpha_bar, loaded.schedule.alpha_bar)
    # without a table, save_pipeline writes the scheduler it is given (a plain DDPMPipeline)
    plain = save_pipeline(tmp_path / "plain", loaded.model, loaded.scheduler)
    assert type(DDPMPipeline.from_pretrained(plain).scheduler).__name__ == "DDPMScheduler"


@pytest.mark.parametrize(
    "change,match",
    [
        ({"prediction_type": "v_prediction"}, "prediction_type"),
        ({"variance_type": "learned_range"}, "learned variance"),
        ({"thresholding": True}, "thresholding"),
    ],
)
def test_unsupported_scheduler_configs(pipeline_dir, change, match):
    file = pipeline_dir / "scheduler" / "scheduler_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **change}))
    with pytest.raises(FewstepError, match=match):
        load_diffusers(pipeline_dir)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FewstepError, match="does not exist"):
        load_diffusers(tmp_path / "nope")
    (tmp_path / "x" / "unet").mkdir(parents=True)
    with pytest.raises(FewstepError, match="save_pretrained"):
        load_diffusers(tmp_path / "x")


def test_finetune_a_diffusers_model_with_sftpg_and_write_it_back(pipeline_dir, tmp_path):
    from fewstep.api import finetune_config, load
    from fewstep.models import load_pretrained
    from fewstep.runs import Run
    from fewstep.training.finetune import finetune

    pretrained = load(pipeline_dir)
    loaded = load_diffusers(pipeline_dir)
    table = ddpm_table(loaded.schedule, [0, 24, 49], variance="beta", noise_at_last_step=True)
    config = finetune_config(
        pretrained,
        overrides=[
            "data.name=digits",
            "finetune.iterations=2",
            "finetune.batch_size=8",
            "finetune.n_critic=1",
            "finetune.critic_channels=[4, 8, 16]",
            "finetune.baseline_hidden=[16]",
            "finetune.eval_every=2",
            "evaluate.train_samples=16",
            "finetune.checkpoint_every=2",
            "finetune.lr_generator=1e-5",
            "evaluate.n_samples=16",
        ],
    )
    before = [p.detach().clone() for p in pretrained.model.parameters()]
    run = Run(tmp_path / "run", config, "finetune").start()
    result = finetune(config, run, pretrained, table=table, progress=False)
    tuned, used = result.model, result.table
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.parameters()))
    # the fine-tuned diffusers network comes back from fewstep's own checkpoint, with its table
    again = load_pretrained(run.checkpoint("finetune"))
    assert again.kind == "diffusers" and torch.equal(again.table.s, used.s)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.0, 24.0])
    with torch.no_grad():
        assert torch.allclose(again.model(x, t), tuned(x, t))
    out = save_pipeline(tmp_path / "tuned", tuned, loaded.scheduler, used)
    pipe = DDPMPipeline.from_pretrained(out, trust_remote_code=True)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.0, 24.0])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, t).sample, tuned(x, t))
    assert json.loads((out / SAMPLER_FILE).read_text())["timesteps"] == [49, 24, 0]
