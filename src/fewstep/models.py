"""Building epsilon-models from the config and saving / loading them as checkpoints."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .checkpoint import check_matches, load_checkpoint, load_module, module_tensors, save_checkpoint
from .config import Config, from_dict, to_dict
from .errors import FewstepError
from .nets import TimeMLP


def set_threads(config: Config, shape: tuple[int, ...]) -> None:
    """Apply ``config.threads`` (0 = auto: one thread for vector data, torch's default otherwise)."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    elif len(shape) == 1:
        torch.set_num_threads(1)


def adam(params, lr: float, device: torch.device | str = "cpu") -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one (about 30% faster per step on small CPU nets)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def build_eps_model(config: Config, shape: tuple[int, ...]) -> torch.nn.Module:
    """The epsilon-model for data of ``shape`` (the App. F.1 MLP for vectors, a U-Net for images)."""
    if config.model.kind == "unet":
        from .images.unet import UNet

        if len(shape) != 3:
            raise FewstepError(f"the U-Net epsilon-model takes images [C, H, W]; the data has shape {shape}")
        m = config.model
        return UNet(shape[0], shape[1], m.channels, m.channel_mult, m.num_res_blocks, m.attention_resolutions, m.dropout)
    if len(shape) != 1:
        hint = "; set model.kind=unet for images" if len(shape) == 3 else ""
        raise FewstepError(f"the MLP epsilon-model takes vectors; the data has shape {shape}{hint}")
    m = config.model
    return TimeMLP(shape[0], hidden=m.hidden, activation=m.activation, time_dim=m.time_dim)


class EMA:
    """Exponential moving average of a module's parameters (decay 0 copies the weights)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - self.decay)


def save_model(path: str | Path, model: torch.nn.Module, config: Config, shape, stage: str, extra_tensors=None, extra_meta=None) -> None:
    """A checkpoint whose ``model.*`` tensors are the weights to sample with."""
    tensors = module_tensors("model", model)
    tensors.update(extra_tensors or {})
    meta = {"stage": stage, "shape": list(shape), "config": to_dict(config), **(extra_meta or {})}
    save_checkpoint(path, tensors, meta)


def load_model(path: str | Path, config: Config | None = None) -> tuple[torch.nn.Module, Config, dict]:
    """The sampling model of a checkpoint, its config, and its metadata.

    With ``config`` given, the checkpoint's model and schedule sections must match it. Applies the
    config's thread setting (``set_threads``), since the model is loaded to be run.
    """
    tensors, meta = load_checkpoint(path)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("shape"), list):
        raise FewstepError(f"checkpoint {path} holds no model record (config and data shape); it is damaged or not a model checkpoint")
    saved = from_dict(Config, meta.get("config"))
    if config is not None:
        check_matches(meta, {"model": to_dict(config.model), "schedule": to_dict(config.schedule)}, str(path))
    model = build_eps_model(saved, tuple(meta["shape"]))
    load_module(model, "model", tensors, str(path))
    set_threads(config or saved, tuple(meta["shape"]))
    return model.eval(), (config or saved), meta


def table_for_checkpoint(config: Config, meta: dict):
    """The step table a checkpoint samples with: the one recorded in it, else the config's."""
    from .schedules import make_schedule
    from .steps import table_from_config, table_from_dict

    if meta.get("table"):
        return table_from_dict(meta["table"])
    return table_from_config(config, make_schedule(config.schedule.kind, config.schedule.T))


def build_critic(config: Config, shape: tuple[int, ...]) -> torch.nn.Module:
    """The critic f_alpha (App. F.1: MLP on vectors; App. F.2: conv critic on images [C, H, W])."""
    from .nets import MLP

    if len(shape) == 3:
        from .images.critic import ConvCritic

        return ConvCritic(shape[0], config.finetune.critic_channels, resolution=shape[1])
    if len(shape) != 1:
        raise FewstepError(f"the MLP critic takes vectors; the data has shape {shape}")
    return MLP(shape[0], hidden=config.finetune.critic_hidden, out_dim=1, activation="relu")


def build_baseline(config: Config, shape: tuple[int, ...]) -> torch.nn.Module:
    """The time-conditioned baseline V_omega(x_{t+1}, t) (App. F.1: MLP with time features)."""
    dim = 1
    for s in shape:
        dim *= s
    return TimeMLP(dim, hidden=config.finetune.baseline_hidden, out_dim=1, activation="relu", time_dim=config.model.time_dim)
