"""One typed configuration for every fewstep command, loaded from YAML with strict checks.

Each field carries its meaning in ``help`` (shown by ``fewstep config``) and its valid range in
``min`` / ``max`` / ``choices``. Unknown keys, wrong types and out-of-range values raise a
``FewstepError`` that names the key.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import FewstepError


def opt(default: Any, help: str, **checks: Any) -> Any:
    """A config field with its documentation and checks (min, max, choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class DataConfig:
    name: str = opt("swiss_roll", "data set: swiss_roll, moons, gaussian, file; images: digits (sklearn 8x8, embedded), mnist (IDX), cifar10 (python batches), folder (PNG/JPEG)", choices=("swiss_roll", "moons", "gaussian", "file", "digits", "mnist", "cifar10", "folder"))
    path: str | None = opt(None, "array file (.npy/.npz/.csv, shape [N, D]) when name is 'file'; the directory of mnist, cifar10 or folder images")
    image_size: int | None = opt(None, "resize images to this square size (null = keep; folder images of mixed sizes need it)", min=1)
    n_train: int = opt(10_000, "training points drawn from a toy data set (App. F.1: 10K)", min=2)
    seed: int = opt(0, "seed of the training draw (evaluation uses other seeds)")


@dataclass
class ScheduleConfig:
    kind: str = opt("sigmoid", "noise schedule: linear (Ho et al.), cosine (Nichol-Dhariwal), sigmoid (paper toys)", choices=("linear", "cosine", "sigmoid"))
    T: int = opt(10, "number of diffusion steps the model is trained with", min=1, max=100_000)


@dataclass
class ModelConfig:
    hidden: list[int] = opt([128, 128, 128], "hidden widths of the epsilon-MLP (App. F.1: 3 hidden layers of 128 = 4 layers)")
    activation: str = opt("softplus", "activation of the epsilon-MLP", choices=("softplus", "relu", "silu"))
    time_dim: int = opt(32, "size of the sinusoidal time features", min=2)
    kind: str = opt("mlp", "epsilon-model: mlp (vectors, App. F.1) or unet (images, Ho et al. U-Net)", choices=("mlp", "unet"))
    channels: int = opt(32, "U-Net base width (Ho et al.: 128 on CIFAR-10)", min=1)
    channel_mult: list[int] = opt([1, 2], "U-Net width multipliers, one per resolution level (each level halves the size)", min=1)
    num_res_blocks: int = opt(1, "U-Net residual blocks per level (Ho et al.: 2)", min=1)
    attention_resolutions: list[int] = opt([], "U-Net activation heights that get self-attention (Ho et al.: [16]); the middle block always has it", min=1)
    dropout: float = opt(0.0, "U-Net dropout in residual blocks (Ho et al.: 0.1 on CIFAR-10)", min=0.0, max=1.0)


@dataclass
class PretrainConfig:
    steps: int = opt(20_000, "optimiser steps of DDPM pretraining", min=1)
    batch_size: int = opt(256, "points per step (drawn with replacement)", min=1)
    lr: float = opt(1e-3, "Adam learning rate", min=0.0)
    ema_decay: float = opt(0.999, "decay of the EMA weights used for sampling (0 disables)", min=0.0, max=1.0)
    log_every: int = opt(100, "steps between metric lines", min=1)
    checkpoint_every: int = opt(2_000, "steps between checkpoints (for --resume)", min=1)


@dataclass
class SamplerConfig:
    variance: str = opt("beta", "step variance Sigma of eq. 3: beta or beta_tilde", choices=("beta", "beta_tilde"))
    noise_at_last_step: bool = opt(True, "add noise at the last step (needed by policy-gradient fine-tuning)")
    timesteps: list[int] | None = opt(None, "increasing sub-sequence of [0, T-1] to sample on; null = all T steps")
    kind: str = opt("ddpm", "sampler: ddpm (ancestral, eq. 3), ddim, fastdpm, analytic_dpm, dpm_solver_2m (multistep ODE)",
                    choices=("ddpm", "ddim", "fastdpm", "analytic_dpm", "dpm_solver_2m"))
    steps: int | None = opt(None, "number of steps K when timesteps is null (ddpm: null = all T steps)", min=1)
    spacing: str = opt("uniform", "how K steps are spaced when timesteps is null: uniform in time, quadratic, "
                       "uniform in log-SNR, karras (EDM rho=7)", choices=("uniform", "quadratic", "logsnr", "karras"))
    eta: float = opt(0.0, "DDIM stochasticity (0: deterministic, 1: ancestral DDPM on the same steps)", min=0.0)
    fastdpm_approach: str = opt("STEP", "FastDPM: STEP (sub-sequence of steps) or VAR (short variance schedule)", choices=("STEP", "VAR"))
    fastdpm_schedule: str = opt("linear", "FastDPM sub-sequence (STEP) or variance schedule (VAR): linear or quadratic", choices=("linear", "quadratic"))
    kappa: float = opt(0.0, "FastDPM noise scale of the reverse process (0: deterministic, 1: full)", min=0.0, max=1.0)
    fastdpm_reverse: str = opt("ddim", "FastDPM reverse process: ddpm (posterior mean) or ddim (eta = kappa)", choices=("ddpm", "ddim"))
    analytic_mean: str = opt("ddpm", "Analytic-DPM mean: ddpm (Markov posterior) or ddim (lambda = 0)", choices=("ddpm", "ddim"))
    analytic_gamma: list[float] | None = opt(None, "Analytic-DPM Gamma_n per step (increasing time), estimated on data by "
                                             "fewstep.samplers.estimate_gamma; required for kind analytic_dpm")


@dataclass
class ScheduleOptConfig:
    """Few-step schedule optimisation (issue 4): the discretisation loss (Phase 1) and fine-tuning at the steps (Phase 2)."""

    steps: int = opt(4, "number of model evaluations K of the optimised sampler (NFE)", min=1)
    method: str = opt("dp", "Phase 1 optimiser: dp (exact on a grid of candidate times) or adam (cumulative-softmax "
                      "logits, early-stopped on held-out sliced W2)", choices=("dp", "adam"))
    grid_size: int = opt(200, "candidate times per spacing of the dp grid (union of time- and log-SNR-uniform)", min=3)
    n_mc: int = opt(2048, "training points of the Monte-Carlo estimate of the loss on the grid", min=1)
    init_spacing: str = opt("logsnr", "initial schedule of adam", choices=("uniform", "quadratic", "logsnr", "karras"))
    adam_steps: int = opt(300, "Adam iterations of the adam optimiser", min=0)
    adam_lr: float = opt(0.05, "Adam learning rate on the logits", min=0.0)
    adam_batch: int = opt(512, "training points per Adam iteration", min=1)
    eval_every: int = opt(25, "Adam iterations between held-out sliced-W2 evaluations (early stopping)", min=1)
    patience: int = opt(4, "evaluations without improvement before adam stops", min=1)
    eval_samples: int = opt(2000, "samples and held-out data points of the early-stopping metric", min=2)
    finetune_steps: int = opt(1000, "Phase 2 optimiser steps per round", min=0)
    finetune_lr: float = opt(1e-4, "Phase 2 Adam learning rate (small: the model is only adjusted at K steps)", min=0.0)
    finetune_batch: int = opt(256, "Phase 2 training points per step", min=1)
    weighting: str = opt("uniform", "Phase 2 weights of the K steps: uniform, or w (the loss weights w_i)", choices=("uniform", "w"))
    rounds: int = opt(1, "rounds R of (Phase 1, Phase 2) in `fewstep schedule finetune`", min=1)


@dataclass
class EvalConfig:
    n_samples: int = opt(10_000, "generated and data points compared (paper: 10K)", min=2)
    sliced_projections: int = opt(100, "random directions of sliced W2", min=1)
    max_iter: int = opt(10_000_000, "network-simplex iterations of exact W2 (POT's default stops early)", min=1000)
    seed: int = opt(12_345, "seed of evaluation draws (samples and data)")


@dataclass
class FinetuneConfig:
    """Shortcut fine-tuning (paper Section 4, Algorithm 1); defaults are the paper's toy settings (App. F.1)."""

    estimator: str = opt("pg_baseline", "generator gradient: pg_baseline (eq. 20), pg (eq. 15, no baseline), pathwise (SFT, eq. 14)", choices=("pg_baseline", "pg", "pathwise"))
    critic_reg: str = opt("baseline", "critic regulariser: baseline (R_B of eq. 23, 'SFT-PG (B)') or gp (gradient penalty, eq. 22)", choices=("baseline", "gp"))
    iterations: int = opt(2_000, "outer iterations of Algorithm 1", min=1)
    batch_size: int = opt(64, "m: trajectories per critic round, data points per round, buffer steps per generator round", min=1)
    n_critic: int = opt(5, "critic/baseline rounds per iteration (n_critic)", min=1)
    n_generator: int = opt(1, "generator rounds per iteration (n_generator; images: 10)", min=1)
    lam: float = opt(0.1, "lambda of eq. 23 weighting R_B in the critic objective (images: 1.0)", min=0.0)
    gp_weight: float = opt(0.001, "eta of the gradient penalty eq. 22 (paper's best: 0.001)", min=0.0)
    clip: float | None = opt(None, "gamma: clip the generator's gradient norm (Section 4.2); null = no clipping (images: 0.1)", min=0.0)
    lr_generator: float = opt(5e-5, "Adam learning rate of the generator theta (images: 1e-6)", min=0.0)
    lr_critic: float = opt(1e-3, "Adam learning rate of the critic alpha (images: 1e-4)", min=0.0)
    lr_baseline: float = opt(1e-3, "Adam learning rate of the baseline omega (images: 1e-4)", min=0.0)
    critic_hidden: list[int] = opt([128, 128], "hidden widths of the MLP critic (App. F.1: 3 layers, 128 units, ReLU)")
    baseline_hidden: list[int] = opt([128, 128], "hidden widths of the MLP baseline V(x_{t+1}, t) (App. F.1; images: 1024, 1024, 256)")
    critic_channels: list[int] = opt([64, 128, 256], "images: widths of the conv critic's three stride-2 layers (App. F.2: 256, 512, 1024)", min=1)
    lr_schedule: str = opt("constant", "generator learning-rate schedule over the iterations: constant (paper), linear or cosine decay to 0", choices=("constant", "linear", "cosine"))
    ema_decay: float = opt(0.0, "EMA of the generator weights used for sampling (not in the paper; 0 = off, 0.999 damps adversarial oscillation)", min=0.0, max=1.0)
    critic_bound: float = opt(1e4, "divergence guard: stop when |critic value| exceeds this", min=0.0)
    eval_every: int = opt(100, "iterations between W2 evaluations during fine-tuning", min=1)
    eval_samples: int = opt(2_000, "samples of the evaluations during fine-tuning (the final one uses evaluate.n_samples)", min=2)
    checkpoint_every: int = opt(500, "iterations between checkpoints (for --resume)", min=1)


FINETUNE_PRESETS = {
    "toy": {},
    "images": {"lam": 1.0, "n_critic": 5, "n_generator": 10, "clip": 0.1, "lr_generator": 1e-6,
               "lr_critic": 1e-4, "lr_baseline": 1e-4, "batch_size": 128,
               "critic_channels": [256, 512, 1024], "baseline_hidden": [1024, 1024, 256]},
}
"""Paper settings (Section 6.1, App. F): toy defaults are the dataclass defaults."""


@dataclass
class Config:
    seed: int = opt(0, "seed of the run: model initialisation, minibatches, noise")
    device: str = opt("cpu", "torch device (cpu, cuda, cuda:1, ...)")
    threads: int = opt(0, "torch CPU threads; 0 = auto: 1 for vector data (small MLP ops lose to threading overhead), all cores for images", min=0)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    schedule_opt: ScheduleOptConfig = field(default_factory=ScheduleOptConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def _check_value(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_value(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise FewstepError(f"config key {key} must be a list, got {value!r}")
        return [_check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise FewstepError(f"config key {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FewstepError(f"config key {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FewstepError(f"config key {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise FewstepError(f"config key {key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from nested dicts, checking keys, types and ranges."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise FewstepError(f"config section {prefix.rstrip('.') or '(top level)'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FewstepError(f"unknown config key {prefix}{unknown[0]} (known in this section: {', '.join(fields)})")
    values = {}
    for name, value in data.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = from_dict(hint, value, key + ".")
            continue
        value = _check_value(value, hint, key)
        meta = fields[name].metadata
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                continue
            if "choices" in meta and v not in meta["choices"]:
                raise FewstepError(f"config key {key} is {v!r}; choose one of {', '.join(map(str, meta['choices']))}")
            if "min" in meta and v < meta["min"]:
                raise FewstepError(f"config key {key} is {v!r}; it must be >= {meta['min']}")
            if "max" in meta and v > meta["max"]:
                raise FewstepError(f"config key {key} is {v!r}; it must be <= {meta['max']}")
        values[name] = value
    return cls(**values)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise FewstepError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        node = data
        *parents, last = dotted.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise FewstepError(f"override {item!r}: {p} is not a section")
        try:
            node[last] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise FewstepError(f"override {item!r}: value is not valid YAML") from None
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), base: dict | None = None
) -> Config:
    """The checked config: ``base`` (a config dict such as a checkpoint's or a run's; default: the
    defaults), updated section by section by the YAML file at ``path``, then by ``overrides``."""
    data: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FewstepError(f"config file {path} does not exist")
        try:
            file_data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise FewstepError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(file_data, dict):
            raise FewstepError(f"config file {path} must hold a mapping of sections")
        for section, values in file_data.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section].update(values)
            else:
                data[section] = values
    config = from_dict(Config, apply_overrides(data, list(overrides)))
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that involve more than one field."""
    if config.data.name == "file" and not config.data.path:
        raise FewstepError("config key data.path is required when data.name is 'file'")
    ts = config.sampler.timesteps
    if ts is not None:
        if not ts or any(b <= a for a, b in zip(ts, ts[1:])) or ts[0] < 0 or ts[-1] >= config.schedule.T:
            raise FewstepError(f"config key sampler.timesteps must increase strictly within [0, {config.schedule.T - 1}], got {ts}")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: key, default and help (for ``fewstep config``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines += describe(hints[f.name], prefix + f.name + ".")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"{prefix + f.name} = {default!r}  # {f.metadata.get('help', '')}")
    return lines
