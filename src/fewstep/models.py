"""Networks from config sections, the generator's EMA, and loading a pretrained model (one way for all).

A *pretrained model* is a fewstep checkpoint (``.safetensors``) or a diffusers pipeline folder;
:func:`load_pretrained` opens either and returns the epsilon-model with its config, data shape,
recorded step table (if any) and noise schedule.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .checkpoint import check_matches, load_checkpoint, load_module, module_tensors, save_checkpoint
from .config import Config, FinetuneConfig, ModelConfig, to_dict
from .fields import from_dict_keeping
from .errors import FewstepError
from .nets import MLP, TimeMLP
from .schedules import make_schedule
from .pretrained import Pretrained
from .steps import table_from_dict


def set_threads(threads: int, shape: tuple[int, ...]) -> None:
    """Apply ``config.threads`` (0 = auto: one thread for vector data, torch's default otherwise)."""
    if threads > 0:
        torch.set_num_threads(min(threads, 1024))
    elif len(shape) == 1:
        torch.set_num_threads(1)


def adam(params, lr: float, device: torch.device | str = "cpu") -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one (about 30% faster per step on small CPU nets)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


class Autocast(nn.Module):
    """``net`` run under bf16 autocast, its output returned in the input's dtype.

    Only the network is autocast: the step arithmetic, the noise and the log-densities around it
    stay float32. The wrapped module's parameters are the network's own (optimisers, EMA and
    checkpoints keep using the unwrapped network).
    """

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.net, self.device_type, self.compute_dtype = net, device_type, dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.compute_dtype):
            out = self.net(x, t)
        return out.to(x.dtype)

    def __getattr__(self, name: str):
        """Attributes the wrapped module has and a module wrapper lacks (a policy's ``table``, ``dtype``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)


def network(model: nn.Module, autocast: str = "off", device: torch.device | str = "cpu") -> nn.Module:
    """The epsilon-model as sampling and fine-tuning call it: ``model`` itself, or under bf16 autocast."""
    if autocast == "off" or isinstance(model, Autocast):
        return model
    if autocast != "bf16":
        raise FewstepError(f"unknown autocast setting {autocast!r}; choose off or bf16")
    return Autocast(model, torch.device(device).type)


def build_eps_model(cfg: ModelConfig, shape: tuple[int, ...]) -> torch.nn.Module:
    """The epsilon-model for data of ``shape`` (the App. F.1 MLP for vectors, a U-Net for images)."""
    if cfg.kind == "diffusers":
        raise FewstepError(
            "model.kind=diffusers is a model loaded from a diffusers pipeline folder; it cannot be "
            "trained from scratch (use model.kind=unet)"
        )
    if cfg.kind == "unet":
        from .images.unet import UNet

        if len(shape) != 3:
            raise FewstepError(
                f"the U-Net epsilon-model (model.kind=unet) takes images [C, H, W]; the data has shape {shape}"
            )
        return UNet(
            shape[0],
            shape[1],
            cfg.channels,
            cfg.channel_mult,
            cfg.num_res_blocks,
            cfg.attention_resolutions,
            cfg.dropout,
            cfg.norm_groups,
        )
    if len(shape) != 1:
        hint = "; set model.kind=unet for images" if len(shape) == 3 else ""
        raise FewstepError(f"the MLP epsilon-model takes vectors; the data has shape {shape}{hint}")
    return TimeMLP(shape[0], hidden=cfg.hidden, activation=cfg.activation, time_dim=cfg.time_dim)


def build_critic(cfg: FinetuneConfig, shape: tuple[int, ...]) -> torch.nn.Module:
    """The critic f_alpha (App. F.1: MLP on vectors; App. F.2: conv critic on images [C, H, W])."""
    if len(shape) == 3:
        from .images.critic import ConvCritic

        return ConvCritic(shape[0], cfg.critic_channels, resolution=shape[1])
    if len(shape) != 1:
        raise FewstepError(f"the MLP critic takes vectors; the data has shape {shape}")
    return MLP(shape[0], hidden=cfg.critic_hidden, out_dim=1, activation="relu")


def build_baseline(cfg: FinetuneConfig, shape: tuple[int, ...], time_dim: int = 32) -> torch.nn.Module:
    """The time-conditioned baseline V_omega(x_{t+1}, t) (App. F.1: MLP with time features)."""
    dim = 1
    for s in shape:
        dim *= s
    return TimeMLP(dim, hidden=cfg.baseline_hidden, out_dim=1, activation="relu", time_dim=time_dim)


class EMA:
    """Exponential moving average of a module's parameters: p_ema <- decay p_ema + (1 - decay) p."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def save_model(
    path: str | Path,
    model: torch.nn.Module,
    config: Config,
    shape,
    stage: str,
    extra_tensors: dict | None = None,
    extra_meta: dict | None = None,
) -> None:
    """A checkpoint whose ``model.*`` tensors are the weights to sample with."""
    tensors = module_tensors("model", model)
    tensors.update(extra_tensors or {})
    meta = {"stage": stage, "shape": list(shape), "config": to_dict(config), **(extra_meta or {})}
    save_checkpoint(path, tensors, meta)


def is_diffusers_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "model_index.json").is_file()


def load_pretrained(path: str | Path, config: Config | None = None) -> Pretrained:
    """The model of a fewstep checkpoint or of a diffusers pipeline folder.

    With ``config`` given, the checkpoint's model and schedule sections must match it. The model
    is returned in eval mode on the CPU.
    """
    if is_diffusers_folder(path):
        from .images.diffusers_io import load_diffusers_pretrained

        return load_diffusers_pretrained(path, config)
    tensors, meta = load_checkpoint(path)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("shape"), list):
        raise FewstepError(
            f"checkpoint {path} holds no model record (config and data shape); it is damaged or not a model checkpoint"
        )
    try:  # what defines the model must read exactly; other recorded settings may be another version's
        saved, dropped = from_dict_keeping(Config, meta["config"], strict=("data", "schedule", "model"))
    except FewstepError as exc:
        raise FewstepError(f"checkpoint {path} records a config fewstep cannot read: {exc}") from None
    if dropped:
        meta = {**meta, "ignored_settings": dropped}
    if config is not None:
        check_matches(meta, {"model": to_dict(config.model), "schedule": to_dict(config.schedule)}, str(path))
    shape = tuple(int(s) for s in meta["shape"])
    if saved.model.kind == "diffusers":  # a diffusers model fine-tuned by fewstep: its record rebuilds it
        from .images.diffusers_io import rebuild

        model, schedule = rebuild(meta.get("diffusers") or {})
    else:
        model, schedule = build_eps_model(saved.model, shape), make_schedule(saved.schedule.kind, saved.schedule.T)
    load_module(model, "model", tensors, str(path))
    bad = [k for k, t in tensors.items() if k.startswith("model.") and t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise FewstepError(
            f"checkpoint {path} holds non-finite weights ({bad[0]}): the run that wrote it diverged; "
            "use an earlier checkpoint or train again with a smaller learning rate"
        )
    table = table_from_dict(meta["table"], str(path)) if meta.get("table") else None
    kind = "diffusers" if saved.model.kind == "diffusers" else "fewstep"
    return Pretrained(model.eval(), config or saved, shape, schedule, table, str(path), meta, kind)
