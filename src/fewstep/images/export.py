"""``fewstep export``: a model and its sampler as a diffusers pipeline folder.

The folder is what ``DDPMPipeline.save_pretrained`` writes (``model_index.json``, ``unet/``,
``scheduler/``) with two additions: the scheduler is :class:`~fewstep.images.table_scheduler.FewstepScheduler`,
which steps through the model's step table (the fine-tuned few-step sampler, or whatever
``fewstep sample`` would use), shipped as ``scheduler/fewstep_scheduler.py`` so diffusers loads it
without fewstep (``trust_remote_code=True``); and ``fewstep_sampler.json`` records the table for
fewstep.

Networks:

* a diffusers model (loaded from a pipeline folder, possibly fine-tuned by fewstep) is written back
  as the ``UNet2DModel`` it is;
* fewstep's own U-Net (``model.kind=unet``) is converted to a ``UNet2DModel`` with the same weights.
  The two architectures are the same (Ho et al.'s), block for block, when three conditions hold,
  and export refuses with a one-line reason otherwise: every GroupNorm has the same number of groups
  (``model.norm_groups``, or the default rule happening to give one count, as for Ho et al.'s
  CIFAR-10 widths), ``channel_mult[0] == 1`` (diffusers' input convolution has the first level's
  width), and the image size is divisible by ``2 ** (levels - 1)`` (diffusers upsamples by exactly
  2). The converted network is checked against the original on random inputs before it is written;
* MLP models (vectors) are not images, so there is no diffusers pipeline for them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from ..errors import FewstepError
from ..steps import StepTable, table_to_dict

SCHEDULER_MODULE = "fewstep_scheduler"
SCHEDULER_CLASS = "FewstepScheduler"


def _diffusers():
    from .diffusers_io import _diffusers as get

    return get()


def conversion_problem(net: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Why fewstep's U-Net ``net`` cannot be written as a UNet2DModel (None: it can)."""
    from .unet import UNet

    if not isinstance(net, UNet):
        return f"a {type(net).__name__} is not a U-Net"
    s = net.settings
    groups = sorted({m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)})
    if len(groups) > 1:
        return (
            f"its GroupNorm layers use {groups} groups (the default rule, about 4 channels per group), but a "
            "UNet2DModel has one group count; pretrain with model.norm_groups set (a divisor of model.channels)"
        )
    if s["channel_mult"][0] != 1:
        return f"model.channel_mult starts with {s['channel_mult'][0]}; a UNet2DModel needs it to start with 1"
    levels = len(s["channel_mult"])
    height, width = shape[1], shape[2]
    if height != width or height % 2 ** (levels - 1):
        return (
            f"the image size {height}x{width} is not divisible by {2 ** (levels - 1)} ({levels} levels); "
            "a UNet2DModel upsamples by exactly 2"
        )
    return None


def _level_resolutions(resolution: int, levels: int) -> list[int]:
    return [resolution // 2**i for i in range(levels)]


def to_unet2d(net: nn.Module, shape: tuple[int, ...]):
    """fewstep's U-Net as a diffusers ``UNet2DModel`` with the same weights (checked on random inputs)."""
    problem = conversion_problem(net, shape)
    if problem:
        raise FewstepError(f"cannot export this U-Net as a diffusers UNet2DModel: {problem}")
    s = net.settings
    ch, mult, blocks = s["channels"], list(s["channel_mult"]), s["num_res_blocks"]
    levels = len(mult)
    res = _level_resolutions(shape[1], levels)
    attn = [r in s["attention_resolutions"] for r in res]
    groups = next(m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm))
    unet = _diffusers().UNet2DModel(
        sample_size=shape[1],
        in_channels=shape[0],
        out_channels=shape[0],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(ch * m for m in mult),
        layers_per_block=blocks,
        norm_num_groups=groups,
        attention_head_dim=None,  # one head of the full width, as fewstep's attention
        dropout=s["dropout"],
        time_embedding_dim=4 * ch,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
        norm_eps=1e-5,
        downsample_padding=1,
        mid_block_scale_factor=1,
    )
    state = _state_dict(net, levels, blocks, attn)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FewstepError(
            f"U-Net conversion is incomplete (missing {missing[:3]}, unexpected {unexpected[:3]}); please report this"
        )
    _check_same(net, unet.eval(), shape)
    return unet


def _state_dict(net: nn.Module, levels: int, blocks: int, attn: list[bool]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: nn.Module) -> None:
        for name, value in module.state_dict().items():
            out[f"{prefix}.{name}"] = value.detach().clone()

    def resblock(prefix: str, block: nn.Module) -> None:
        put(f"{prefix}.norm1", block.norm1)
        put(f"{prefix}.conv1", block.conv1)
        put(f"{prefix}.time_emb_proj", block.time_proj)
        put(f"{prefix}.norm2", block.norm2)
        put(f"{prefix}.conv2", block.conv2)
        if isinstance(block.skip, nn.Conv2d):
            put(f"{prefix}.conv_shortcut", block.skip)

    def attention(prefix: str, block: nn.Module) -> None:
        put(f"{prefix}.group_norm", block.norm)
        w, b = block.qkv.weight.detach()[:, :, 0, 0], block.qkv.bias.detach()
        for i, name in enumerate(("to_q", "to_k", "to_v")):
            c = w.shape[1]
            out[f"{prefix}.{name}.weight"] = w[i * c : (i + 1) * c].clone()
            out[f"{prefix}.{name}.bias"] = b[i * c : (i + 1) * c].clone()
        out[f"{prefix}.to_out.0.weight"] = block.out.weight.detach()[:, :, 0, 0].clone()
        out[f"{prefix}.to_out.0.bias"] = block.out.bias.detach().clone()

    put("conv_in", net.conv_in)
    put("time_embedding.linear_1", net.time_mlp[0])
    put("time_embedding.linear_2", net.time_mlp[2])
    down = iter(net.down)
    for level in range(levels):
        for j in range(blocks):
            block = next(down)
            resblock(f"down_blocks.{level}.resnets.{j}", block[0])
            if attn[level]:
                attention(f"down_blocks.{level}.attentions.{j}", block[1])
        if level < levels - 1:
            put(f"down_blocks.{level}.downsamplers.0.conv", next(down)[0])
    resblock("mid_block.resnets.0", net.mid[0])
    attention("mid_block.attentions.0", net.mid[1])
    resblock("mid_block.resnets.1", net.mid[2])
    up = iter(net.up)
    for i, level in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            block = next(up)
            resblock(f"up_blocks.{i}.resnets.{j}", block[0])
            if attn[level]:
                attention(f"up_blocks.{i}.attentions.{j}", block[1])
        if level > 0:
            put(f"up_blocks.{i}.upsamplers.0.conv", next(up)[0])
    put("conv_norm_out", net.norm_out)
    put("conv_out", net.conv_out)
    return out


@torch.no_grad()
def _check_same(net: nn.Module, unet, shape: tuple[int, ...]) -> None:
    was_training = net.training
    net.eval()
    g = torch.Generator().manual_seed(0)
    device = next(net.parameters()).device
    x = torch.randn((3, *shape), generator=g).to(device)
    t = torch.tensor([0.0, 17.0, 123.5], device=device)
    unet.to(device)
    diff = float((net(x, t) - unet(x, t).sample).abs().max())
    net.train(was_training)
    if not diff < 1e-4:
        raise FewstepError(
            f"the converted UNet2DModel differs from the fewstep U-Net by {diff:.3g}; please report this"
        )


def base_scheduler_config(model) -> dict:
    """The DDPMScheduler config the model was trained with (a diffusers model's own; else from the schedule)."""
    recorded = model.meta.get("diffusers", {}).get("scheduler")
    if recorded:
        return {k: v for k, v in recorded.items() if not k.startswith("_") or k == "_class_name"}
    sampler = model.config.sampler
    clip = sampler.clip_x0
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": model.schedule.T,
        "trained_betas": model.schedule.beta.tolist(),
        "beta_schedule": "linear",  # ignored by diffusers when trained_betas is given
        "variance_type": "fixed_large" if sampler.ddpm.variance == "beta" else "fixed_small",
        "clip_sample": clip is not None,
        "clip_sample_range": float(clip or 1.0),
        "prediction_type": "epsilon",
    }


SCHEDULERS = ("fewstep", "ddpm")


def export_pipeline(model, table: StepTable, out: str | Path, scheduler: str = "fewstep") -> Path:
    """Write ``model`` (a :class:`fewstep.Pretrained` of images) as a pipeline folder.

    ``scheduler="fewstep"``: a FewstepScheduler stepping through ``table``. ``scheduler="ddpm"``: a
    stock DDPMScheduler (the model's T-step DDPM, as any diffusers user would run it; ``table`` is
    not carried), i.e. a plain DDPMPipeline folder.
    """
    from .diffusers_io import DiffusersEps

    if scheduler not in SCHEDULERS:
        raise FewstepError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if len(model.shape) != 3:
        raise FewstepError(
            f"only image models can be exported as a diffusers pipeline; this model's data has shape {model.shape}"
        )
    net = model.model.cpu().eval()
    unet = net.unet if isinstance(net, DiffusersEps) else to_unet2d(net, tuple(model.shape))
    base = base_scheduler_config(model)
    if scheduler == "ddpm":
        ddpm = _diffusers().DDPMScheduler.from_config({k: v for k, v in base.items() if k != "_class_name"})
        _diffusers().DDPMPipeline(unet=unet, scheduler=ddpm).save_pretrained(str(out))
        return Path(out)
    return write_pipeline(out, unet, model.schedule.beta.tolist(), base, table)


def write_pipeline(out: str | Path, unet, betas: list[float], base: dict, table: StepTable) -> Path:
    """A DDPMPipeline folder of ``unet`` whose scheduler is a FewstepScheduler stepping through ``table``."""
    from .diffusers_io import SAMPLER_FILE
    from .table_scheduler import FewstepScheduler

    scheduler = FewstepScheduler(
        num_train_timesteps=len(betas), trained_betas=list(betas), table=table_to_dict(table), base_scheduler=base
    )
    out = Path(out)
    _diffusers().DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(out))
    shutil.copyfile(Path(__file__).with_name("table_scheduler.py"), out / "scheduler" / f"{SCHEDULER_MODULE}.py")
    index_file = out / "model_index.json"
    index = json.loads(index_file.read_text())
    index["scheduler"] = [SCHEDULER_MODULE, SCHEDULER_CLASS]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    timesteps = [int(t) if float(t).is_integer() else float(t) for t in table.t.tolist()]
    record = {"timesteps": timesteps, "num_inference_steps": table.K, "table": table_to_dict(table)}
    (out / SAMPLER_FILE).write_text(json.dumps(record, indent=1))
    return out


def save_pipeline(path: str | Path, model, scheduler, table: StepTable | None = None) -> Path:
    """Write ``model`` as a DDPMPipeline directory: with ``table``, its scheduler is a
    FewstepScheduler stepping through it (``scheduler`` kept as its base config) and the table is
    also recorded in ``fewstep_sampler.json``; without, ``scheduler`` itself."""
    from .diffusers_io import DiffusersEps

    if not isinstance(model, DiffusersEps):
        raise FewstepError("only diffusers-backed models (load_diffusers) can be written as a DDPMPipeline")
    if table is None:
        _diffusers().DDPMPipeline(unet=model.unet, scheduler=scheduler).save_pretrained(str(path))
        return Path(path)
    base = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    base["_class_name"] = type(scheduler).__name__
    return write_pipeline(path, model.unet, scheduler.betas.double().tolist(), base, table)
