"""One typed configuration for every fewstep command, loaded from YAML with strict checks.

Each section is a dataclass; each field carries its meaning (shown by ``fewstep config``) and its
valid range (:mod:`fewstep.fields`). Unknown keys, wrong types, NaN or infinite numbers and
out-of-range values raise a ``FewstepError`` that names the key. Functions take the section they
need (``config.finetune``, ``config.sampler``, ...), not the whole config.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import FewstepError
from .fields import describe as describe_fields
from .fields import check, from_dict, opt, shown, to_dict
from .finetune_config import FINETUNE_PRESETS, FinetuneConfig, preset_for
from .samplers.registry import SamplerConfig

DATASETS = ("swiss_roll", "moons", "gaussian", "file", "digits", "mnist", "cifar10", "folder")
NEEDS_PATH = ("file", "mnist", "cifar10", "folder")


@dataclass
class DataConfig:
    name: str = opt(
        "swiss_roll",
        "data set: swiss_roll, moons, gaussian, file (your .npy/.npz/.csv array [N, D]); "
        "images: digits (sklearn 8x8, embedded), mnist (IDX), cifar10 (python batches), folder "
        "(PNG/JPEG)",
        choices=DATASETS,
    )
    path: str | None = opt(None, "the array file when name is 'file'; the directory of mnist, cifar10 or folder images")
    image_size: int | None = opt(
        None, "resize images to this square size (null = keep; folder images of mixed sizes need it)", min=1, max=4096
    )
    n_train: int = opt(10_000, "training points drawn from a toy data set (App. F.1: 10K)", min=2, max=10_000_000)
    heldout_fraction: float = opt(
        0.2,
        "share of a finite data set (file, images) held out for evaluation and the "
        "noise floor; toy sets draw fresh points instead",
        min=0.0,
        max=0.9,
    )
    seed: int = opt(0, "seed of the training draw and of the held-out split (evaluation uses other seeds)", min=0)


@dataclass
class ScheduleConfig:
    kind: str = opt(
        "sigmoid",
        "noise schedule: linear (Ho et al.), cosine (Nichol-Dhariwal), sigmoid (paper toys); "
        "diffusers (the betas recorded with a diffusers model)",
        choices=("linear", "cosine", "sigmoid", "diffusers"),
    )
    T: int = opt(10, "number of diffusion steps the model is trained with", min=1, max=100_000)


@dataclass
class ModelConfig:
    kind: str = opt(
        "mlp",
        "epsilon-model: mlp (vectors, App. F.1), unet (images, Ho et al. U-Net) or diffusers (a "
        "UNet2DModel loaded with its pipeline folder)",
        choices=("mlp", "unet", "diffusers"),
    )
    hidden: list[int] = opt(
        [128, 128, 128], "hidden widths of the epsilon-MLP (App. F.1: 3 hidden layers of 128)", min=1, max=10_000_000
    )
    activation: str = opt("softplus", "activation of the epsilon-MLP", choices=("softplus", "relu", "silu"))
    time_dim: int = opt(32, "size of the sinusoidal time features", min=2, max=4096)
    channels: int = opt(32, "U-Net base width (Ho et al.: 128 on CIFAR-10)", min=1, max=4096)
    channel_mult: list[int] = opt(
        [1, 2], "U-Net width multipliers, one per resolution level (each halves the size)", min=1, max=64
    )
    num_res_blocks: int = opt(1, "U-Net residual blocks per level (Ho et al.: 2)", min=1, max=64)
    attention_resolutions: list[int] = opt(
        [], "U-Net activation heights that get self-attention (Ho et al.: [16]); the middle block always has it", min=1
    )
    norm_groups: int | None = opt(
        None,
        "U-Net GroupNorm groups in every layer; null = about 4 channels per group (varies with the "
        "width). A fixed number (dividing every width) lets `fewstep export` write the U-Net as a "
        "diffusers UNet2DModel",
        min=1,
        max=1024,
    )
    dropout: float = opt(
        0.0,
        "U-Net dropout in residual blocks (Ho et al.: 0.1 on CIFAR-10); sampling and "
        "fine-tuning run the network in eval mode",
        min=0.0,
        max=0.99,
    )


@dataclass
class PretrainConfig:
    steps: int = opt(20_000, "optimiser steps of DDPM pretraining", min=1, max=1_000_000_000)
    batch_size: int = opt(256, "examples per step (drawn with replacement)", min=1, max=1_000_000)
    lr: float = opt(1e-3, "Adam learning rate", above=0.0, max=10.0)
    lr_schedule: str = opt(
        "constant",
        "learning-rate schedule over the steps: constant, linear or cosine decay to 0",
        choices=("constant", "linear", "cosine"),
    )
    ema_decay: float = opt(0.999, "decay of the EMA weights used for sampling (0 disables)", min=0.0, max=0.999999)
    log_every: int = opt(100, "steps between metric lines", min=1)
    eval_every: int | None = opt(None, "steps between sample-quality evaluations (null: only at the end)", min=1)
    checkpoint_every: int = opt(2_000, "steps between checkpoints (for --resume)", min=1)


@dataclass
class EvalConfig:
    n_samples: int = opt(
        10_000,
        "generated points compared with as many data points (paper: 10K); finite data sets "
        "are limited to half their held-out split",
        min=2,
        max=10_000_000,
    )
    train_samples: int = opt(
        2_000,
        "samples of the evaluations during training (pretraining, fine-tuning, Phase 2); "
        "the final evaluation uses n_samples",
        min=2,
        max=1_000_000,
    )
    repeats: int = opt(
        1, "independent draws (sample seed and data draw) averaged, reported with their spread", min=1, max=100
    )
    floor_repeats: int = opt(
        0,
        "independent data pairs the noise floor averages, at least `repeats` (0: exactly `repeats`); the first "
        "`repeats` pairs hold the draws the samples are scored against. A floor's standard error falls as "
        "1/sqrt(pairs): at 10K points one swiss-roll pair ranges 0.012-0.034",
        min=0,
        max=1000,
    )
    exact_w2_max: int = opt(
        10_000,
        "exact W2 only up to this many points (its cost grows as n^2 memory, n^3 time); "
        "sliced W2 and precision/recall are always computed",
        min=0,
        max=50_000,
    )
    sliced_projections: int = opt(100, "random directions of sliced W2", min=1, max=100_000)
    max_iter: int = opt(
        10_000_000, "network-simplex iterations of exact W2 (POT's default stops early)", min=1000, max=1_000_000_000
    )
    neighbours: int = opt(5, "k of the k-nearest-neighbour precision, recall, density and coverage", min=1, max=100)
    features: str = opt(
        "classifier",
        "image features of FID/KID/precision: classifier (a small CNN trained on the data "
        "set's labels and cached) or the path of a local Inception weights file",
    )
    batch_size: int = opt(1024, "samples per batch when sampling for evaluation", min=1, max=1_000_000)
    seed: int = opt(12_345, "seed of evaluation draws (samples and data)", min=0)


@dataclass
class ScheduleOptConfig:
    """Few-step schedule optimisation: Phase 1 picks the K model times, Phase 2 tunes the model at them."""

    steps: int = opt(4, "number of model evaluations K of the optimised sampler (NFE)", min=1, max=10_000)
    method: str = opt(
        "path",
        "Phase 1: path (the discretisation bound along the sampler's own probability-flow path, exact DP over "
        "every integer time), gits (DP on the one-step local error, GITS-style), dp (the forward-process bound, "
        "exact DP on a grid) or adam (the forward-process bound by Adam, early-stopped on held-out sliced W2)",
        choices=("path", "gits", "dp", "adam"),
    )
    solver: str = opt(
        "ddim",
        "the sampler the schedule is for (path and gits): ddim or dpm_solver_pp_2m (second order)",
        choices=("ddim", "dpm_solver_pp_2m"),
    )
    refine: bool = opt(
        True, "path and gits: polish the DP schedule by coordinate search on the solver's measured error"
    )
    n_starts: int = opt(
        512,
        "starts x_T of the fine-step reference path that Phase 1 (and Phase 2 distill) optimise on",
        min=2,
        max=1_000_000,
    )
    grid_size: int = opt(
        200, "dp: candidate times per spacing (union of time- and log-SNR-uniform)", min=3, max=100_000
    )
    n_mc: int = opt(2048, "dp: training points of the Monte-Carlo estimate of the loss on the grid", min=1)
    init_spacing: str = opt("logsnr", "adam: initial schedule", choices=("uniform", "quadratic", "logsnr", "karras"))
    adam_steps: int = opt(300, "adam: iterations", min=0)
    adam_lr: float = opt(0.05, "adam: learning rate on the logits", above=0.0)
    adam_batch: int = opt(512, "adam: training points per iteration", min=1)
    eval_every: int = opt(25, "adam: iterations between held-out sliced-W2 evaluations (early stopping)", min=1)
    patience: int = opt(4, "adam: evaluations without improvement before it stops", min=1)
    eval_samples: int = opt(2000, "adam: samples and held-out data points of the early-stopping metric", min=2)
    phase2: str = opt(
        "distill",
        "Phase 2 objective: distill (the K-step output matches the model's own fine-step solution, the other "
        "times held in place; needs method path or gits) or eps (the epsilon-loss at the K steps)",
        choices=("distill", "eps"),
    )
    distill_target: str = opt(
        "output",
        "distill: output (the K-step output error) or path (the path bound's interval terms)",
        choices=("output", "path"),
    )
    anchor: float = opt(1.0, "distill: weight of the self-distillation that keeps the other times in place", min=0.0)
    finetune_steps: int = opt(1000, "Phase 2 optimiser steps per round", min=0)
    finetune_lr: float = opt(
        1e-4, "Phase 2 Adam learning rate (small: the model is only adjusted at K steps)", above=0.0
    )
    finetune_batch: int = opt(256, "Phase 2 training points (eps) or starts (distill) per step", min=1)
    weighting: str = opt(
        "uniform",
        "eps: weights of the K steps, uniform or w (Phase 1's weights moved onto the eps-error; method dp or adam)",
        choices=("uniform", "w"),
    )
    rounds: int = opt(1, "rounds R of (Phase 1, Phase 2) in `fewstep schedule finetune`", min=1, max=1000)


@dataclass
class Config:
    seed: int = opt(0, "seed of the run: model initialisation, minibatches, noise", min=0)
    device: str = opt("cpu", "torch device: cpu, cuda or cuda:N (training, sampling and FID all run there)")
    autocast: str = opt(
        "off",
        "run the network under bf16 autocast (convolutions and matmuls in bfloat16, the sampler's "
        "arithmetic and log-densities in float32): off or bf16; meant for cuda",
        choices=("off", "bf16"),
    )
    threads: int = opt(
        0,
        "torch CPU threads; 0 = auto: 1 for vector data (small MLP ops lose to threading "
        "overhead), all cores for images",
        min=0,
        max=1024,
    )
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    schedule_opt: ScheduleOptConfig = field(default_factory=ScheduleOptConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise FewstepError(f"override {shown(item)} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        node = data
        *parents, last = dotted.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise FewstepError(f"override {shown(item)}: {p} is not a section")
        try:
            node[last] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise FewstepError(f"override {shown(item)}: the value is not valid YAML") from None
    return data


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML mapping from ``path``; a missing, unreadable or malformed file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise FewstepError(f"{what} {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FewstepError(f"{what} {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FewstepError(f"cannot read {what} {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FewstepError(f"{what} {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: dict, update: dict) -> dict:
    """``base`` updated section by section (nested mappings merged, other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), base: dict | None = None
) -> Config:
    """The checked config: ``base`` (a config dict such as a checkpoint's or a run's; default: the
    defaults), updated by the YAML file at ``path``, then by ``overrides``."""
    data: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        data = merge(data, read_yaml(path))
    config = from_dict(Config, apply_overrides(data, list(overrides)))
    validate(config)
    return config


def validate(config: Config) -> None:
    """Every check a config can have without its data, model or machine: each field's type and range
    (also for a ``Config`` made in Python), then those that involve more than one field (each names its key)."""
    from .samplers import check_sampler
    from .schedules import make_schedule

    if not isinstance(config, Config):
        raise FewstepError(f"expected a fewstep Config, got {shown(config)}")
    check(config)
    if config.data.name in NEEDS_PATH and not config.data.path:
        raise FewstepError(f"config key data.path is required when data.name is {config.data.name!r}")
    if config.schedule.kind != "diffusers":  # a diffusers schedule is checked once its model is loaded
        check_sampler(config.sampler, make_schedule(config.schedule.kind, config.schedule.T))
    check_schedule_opt(config.schedule_opt, phase2=False)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", config.device):
        raise FewstepError(f"config key device is {shown(config.device)}; choose cpu, cuda or cuda:N")


def check_schedule_opt(so: ScheduleOptConfig, phase2: bool) -> None:
    """The schedule_opt settings that must agree (``phase2``: also those of `fewstep schedule finetune`)."""
    path_methods = ("path", "gits")
    if so.solver != "ddim" and so.method not in path_methods:
        raise FewstepError(f"schedule_opt.solver={so.solver} needs schedule_opt.method path or gits")
    if not phase2:
        return
    if so.phase2 == "distill" and so.method not in path_methods:
        raise FewstepError(
            "schedule_opt.phase2=distill compares with the model's fine-step path: it needs schedule_opt.method "
            f"path or gits, not {so.method} (or set schedule_opt.phase2=eps)"
        )
    if so.weighting == "w" and so.method in path_methods:
        raise FewstepError(
            "schedule_opt.weighting=w moves the forward bound's weights onto the eps-loss: it needs "
            "schedule_opt.method dp or adam"
        )


def describe() -> list[str]:
    """One line per config key: key, default and help (for ``fewstep config``)."""
    return describe_fields(Config)


__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "FINETUNE_PRESETS",
    "FinetuneConfig",
    "ModelConfig",
    "PretrainConfig",
    "SamplerConfig",
    "ScheduleConfig",
    "ScheduleOptConfig",
    "describe",
    "preset_for",
    "from_dict",
    "load_config",
    "to_dict",
    "validate",
]
