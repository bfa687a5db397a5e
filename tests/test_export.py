"""`fewstep export`: fewstep U-Nets become diffusers UNet2DModels, samplers become a FewstepScheduler,
and the exported pipeline samples in diffusers alone exactly what fewstep samples."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDPMPipeline, DiffusionPipeline  # noqa: E402

from fewstep.errors import FewstepError  # noqa: E402
from fewstep.images.export import conversion_problem, to_unet2d, write_pipeline  # noqa: E402
from fewstep.images.table_scheduler import FewstepScheduler  # noqa: E402
from fewstep.images.unet import UNet  # noqa: E402
from fewstep.rollout import rollout  # noqa: E402
from fewstep.samplers import (  # noqa: E402
    ddpm_table,
    dpm_solver_2m_table,
    fastdpm_table,
    for_policy_gradient,
)
from fewstep.schedules import make_schedule  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def perturbed_unet(size=8, channels=8, mult=(1, 2), blocks=1, attn=(4,), groups=4, dropout=0.0) -> UNet:
    """A U-Net with non-trivial weights (the zero-initialised parts of a fresh one would hide mistakes)."""
    torch.manual_seed(0)
    net = UNet(1, size, channels, mult, blocks, attn, dropout, groups)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize(
    "size,channels,mult,blocks,attn,groups",
    [
        (8, 8, (1, 2), 1, (4,), 4),
        (8, 8, (1, 2), 2, (8, 4), 2),
        (12, 8, (1, 2, 2), 1, (), 8),
        (28, 4, (1, 2, 2), 1, (7,), 4),
    ],
)
def test_unet_converts_to_the_same_unet2dmodel(size, channels, mult, blocks, attn, groups):
    net = perturbed_unet(size, channels, mult, blocks, attn, groups)
    unet = to_unet2d(net, (1, size, size))
    x, t = torch.randn(3, 1, size, size), torch.tensor([0.0, 41.0, 977.5])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, net(x, t), rtol=1e-5, atol=1e-5)
    # the block types follow the attention resolutions, one head of the full width
    n_attn_down = sum("Attn" in b for b in unet.config.down_block_types)
    assert n_attn_down == sum(size // 2**i in attn for i in range(len(mult)))


def test_ho_et_al_widths_convert_without_norm_groups():
    """The default group rule gives 32 groups at every CIFAR-10 width (128 x (1, 2, 2, 2)): exportable."""
    net = UNet(3, 32, 128, (1, 2, 2, 2), 1, (16,))
    assert conversion_problem(net, (3, 32, 32)) is None


@pytest.mark.parametrize(
    "kwargs,shape,match",
    [
        (dict(channels=8, channel_mult=(1, 2)), (1, 8, 8), "GroupNorm layers use"),
        (dict(channels=8, channel_mult=(2, 2), norm_groups=4), (1, 8, 8), "channel_mult starts with 2"),
        (dict(channels=8, channel_mult=(1, 2, 2), norm_groups=4, resolution=9), (1, 9, 9), "not divisible by 4"),
    ],
)
def test_unconvertible_unets_are_refused_with_the_reason(kwargs, shape, match):
    net = UNet(shape[0], kwargs.pop("resolution", shape[1]), **kwargs)
    with pytest.raises(FewstepError, match=match):
        to_unet2d(net, shape)


def test_norm_groups_must_divide_every_width():
    with pytest.raises(FewstepError, match="does not divide"):
        UNet(1, 8, channels=6, channel_mult=(1, 2), norm_groups=4)


def replay(table, shape, n, seed):
    """The noise DDPMPipeline draws from torch.Generator(seed): x_T, then one draw per noisy step."""
    g = torch.Generator().manual_seed(seed)
    block = [torch.randn((n, *shape), generator=g)]
    for k in range(table.K):
        block.append(torch.randn((n, *shape), generator=g) if table.s[k] > 0 else torch.zeros(n, *shape))
    return torch.stack(block)


def tables(schedule):
    tuned = for_policy_gradient(fastdpm_table(schedule, 5, "VAR", "quadratic", 1.0, "ddpm"))
    with torch.no_grad():  # a "fine-tuned" table: coefficients no stock scheduler has
        tuned = dataclasses.replace(tuned, a=tuned.a * 1.01, s=tuned.s * 0.9)
    return {
        "fastdpm-var-kappa1": tuned,
        "ddpm-clipped": ddpm_table(schedule, [0, 20, 45, 70, 99], "beta", True, clip_x0=1.0),
        "dpm-solver-2m": dpm_solver_2m_table(schedule, [0, 10, 40, 99]),
    }


@pytest.mark.parametrize("name", ["fastdpm-var-kappa1", "ddpm-clipped", "dpm-solver-2m"])
def test_exported_pipeline_samples_what_fewstep_samples(tmp_path, name):
    """DiffusionPipeline.from_pretrained(..., trust_remote_code=True) runs the table: same noise, same images."""
    net, schedule = perturbed_unet(), make_schedule("linear", 100)
    table = tables(schedule)[name]
    out = write_pipeline(tmp_path / "pipe", to_unet2d(net, (1, 8, 8)), schedule.beta.tolist(), {}, table)
    assert json.loads((out / "model_index.json").read_text())["scheduler"] == ["fewstep_scheduler", "FewstepScheduler"]
    assert (out / "scheduler" / "fewstep_scheduler.py").is_file()
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    assert type(pipe).__name__ == "DDPMPipeline" and type(pipe.scheduler).__name__ == "FewstepScheduler"
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="np").images
    with torch.no_grad():
        x0 = rollout(net, table, replay(table, (1, 8, 8), 4, 3)).x0
    ours = (x0 / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert images.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(images, ours, atol=2e-6, rtol=0)
    # with fewstep installed, the pipeline can be assembled without trusting the folder's file
    from diffusers import UNet2DModel

    scheduler = FewstepScheduler.from_pretrained(out, subfolder="scheduler")
    again = DDPMPipeline(unet=UNet2DModel.from_pretrained(out, subfolder="unet"), scheduler=scheduler)
    again.set_progress_bar_config(disable=True)
    images2 = again(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="np").images
    np.testing.assert_array_equal(images, images2)


def test_scheduler_step_is_fewsteps_step_mean_exactly():
    """Same x, same model output, no noise: the scheduler's mean is step_mean's, bit for bit."""
    from fewstep.rollout import step_mean
    from fewstep.steps import table_to_dict

    schedule = make_schedule("linear", 100)
    table = ddpm_table(schedule, [0, 20, 45, 70, 99], "beta_tilde", False, clip_x0=1.0)
    scheduler = FewstepScheduler(100, schedule.beta.tolist(), table_to_dict(table))
    scheduler.set_timesteps(1000)  # ignored: the table fixes the steps
    assert torch.equal(scheduler.timesteps, table.t.float())
    x = 3 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    k = 4  # the last step: deterministic (fixed_small), so step() adds nothing
    mean, _ = step_mean(lambda x_, t_: eps, table, x, k)
    assert torch.equal(scheduler.step(eps, scheduler.timesteps[k], x).prev_sample, mean)
    with pytest.raises(ValueError, match="not one of the table's"):
        scheduler.step(eps, 50, x)
