"""diffusers interoperability: a ``UNet2DModel`` + ``DDPMScheduler`` saved by ``save_pretrained``
becomes a fewstep epsilon-model and ``NoiseSchedule``; a fine-tuned model goes back out as a
pipeline directory that ``diffusers.DDPMPipeline.from_pretrained`` loads.

fewstep's model time input ``i`` has signal level ``alpha_bar[i]`` exactly as in diffusers, so the
wrapper passes ``t`` straight through: ``eps = unet(x, t).sample``. The schedule is the
scheduler's own ``betas`` (float32 in diffusers, widened to float64), so any beta_schedule
(linear, scaled_linear, squaredcos_cap_v2, sigmoid, trained betas) is reproduced exactly.

Supported: ``prediction_type="epsilon"`` and fixed variances (``fixed_small`` = beta_tilde,
``fixed_large`` = beta). v-prediction, sample prediction, learned variances and dynamic
thresholding change what the network outputs or how a step is taken, and are refused.

``clip_sample`` (the DDPMScheduler default) becomes the sampler's ``clip_x0``: fewstep's step is
then computed from the clipped x0-prediction, exactly as ``DDPMScheduler.step`` does.

A model is written back (``export.save_pipeline``, ``fewstep export``) with its sampler: the scheduler is a
:class:`~fewstep.images.table_scheduler.FewstepScheduler` stepping through the step table (shipped
in the folder, so ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` samples
with the fine-tuned few-step sampler in diffusers alone), whose config keeps the original
DDPMScheduler config (``base_scheduler``); ``fewstep_sampler.json`` records the time-steps and the
table for fewstep. Such a folder loads back here with its table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import FewstepError
from ..schedules import NoiseSchedule
from ..steps import StepTable, table_from_dict, table_to_dict

MODEL_INDEX = "model_index.json"

SAMPLER_FILE = "fewstep_sampler.json"
VARIANCES = {
    "fixed_small": "beta_tilde",
    "fixed_small_log": "beta_tilde",
    "fixed_large": "beta",
    "fixed_large_log": "beta",
}


class DiffusersEps(nn.Module):
    """A diffusers ``UNet2DModel`` as a fewstep epsilon-model: ``model(x, t) = unet(x, t).sample``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


@dataclass
class DiffusersModel:
    """What ``load_diffusers`` returns: the epsilon-model, its schedule, the DDPMScheduler (the
    model's own, or the one a fewstep-exported pipeline was made from), the fewstep
    ``sampler.variance`` matching its ``variance_type``, and the step table a fewstep-exported
    pipeline samples with (None for a plain pipeline)."""

    model: DiffusersEps
    schedule: NoiseSchedule
    scheduler: object
    variance: str
    table: StepTable | None = None


def _read_config(directory: Path, name: str) -> dict:
    file = directory / name
    if not file.is_file():
        raise FewstepError(f"{directory} has no {name}; expected a folder written by diffusers' save_pretrained")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise FewstepError(f"{file} is not valid JSON ({exc})") from None


def check_scheduler_config(config: dict, source: str) -> str:
    """The fewstep variance for a scheduler config, or a FewstepError naming what is unsupported."""
    prediction = config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise FewstepError(
            f"{source}: prediction_type {prediction!r} is not supported (fewstep needs epsilon-prediction)"
        )
    variance_type = config.get("variance_type", "fixed_small")
    if variance_type not in VARIANCES:
        raise FewstepError(
            f"{source}: variance_type {variance_type!r} (learned variance) is not supported; "
            "use fixed_small or fixed_large"
        )
    if config.get("thresholding", False):
        raise FewstepError(f"{source}: dynamic thresholding is not supported by fewstep's Gaussian step tables")
    return VARIANCES[variance_type]


def _diffusers():
    """The diffusers package, or a one-line error saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise FewstepError("diffusers is not installed; pip install 'fewstep[diffusers]'") from None
    return diffusers


def load_diffusers(
    path: str | Path | None = None, unet: str | Path | None = None, scheduler: str | Path | None = None
) -> DiffusersModel:
    """Load a pipeline directory (with ``unet/`` and ``scheduler/``) or the two folders given apart."""
    DDPMScheduler, UNet2DModel = _diffusers().DDPMScheduler, _diffusers().UNet2DModel

    if path is not None:
        path = Path(path)
        if not path.is_dir():
            raise FewstepError(f"diffusers pipeline directory {path} does not exist")
        unet, scheduler = unet or path / "unet", scheduler or path / "scheduler"
    if unet is None or scheduler is None:
        raise FewstepError("give a pipeline directory, or both the unet and the scheduler folders")
    unet, scheduler = Path(unet), Path(scheduler)
    unet_config = _read_config(unet, "config.json")
    if unet_config.get("_class_name") != "UNet2DModel":
        raise FewstepError(
            f"{unet} holds a {unet_config.get('_class_name')!r}; fewstep loads unconditional UNet2DModel networks"
        )
    if unet_config.get("num_class_embeds") is not None or unet_config.get("class_embed_type") is not None:
        raise FewstepError(f"{unet} holds a class-conditional UNet2DModel; fewstep loads unconditional networks")
    sched_config, table = _scheduler_config(scheduler)
    variance = check_scheduler_config(sched_config, str(scheduler))
    try:
        net = UNet2DModel.from_pretrained(str(unet), low_cpu_mem_usage=False)
        sched = DDPMScheduler.from_config(sched_config)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FewstepError(f"cannot load the diffusers model in {unet}: {str(exc).splitlines()[0]}") from None
    name = "diffusers-" + str(sched_config.get("beta_schedule", "custom"))
    schedule = NoiseSchedule(name, sched.betas.to(torch.float64).clone())
    return DiffusersModel(DiffusersEps(net).eval(), schedule, sched, variance, table)


def _scheduler_config(folder: Path) -> tuple[dict, StepTable | None]:
    """The DDPMScheduler config of a scheduler folder, and the step table of a FewstepScheduler."""
    config = _read_config(folder, "scheduler_config.json")
    name = config.get("_class_name", "DDPMScheduler")
    if name == "FewstepScheduler":
        base = config.get("base_scheduler")
        if not isinstance(base, dict) or not isinstance(config.get("table"), dict):
            raise FewstepError(f"{folder}: the FewstepScheduler config has no base_scheduler or table")
        return base, table_from_dict(config["table"], str(folder / "scheduler_config.json"))
    return config, None  # a DDPMScheduler (another scheduler's config is read as DDPMScheduler's: same betas)


def load_sampler(path: str | Path) -> StepTable:
    """The step table recorded by ``export.save_pipeline`` / ``fewstep export`` in a pipeline directory."""
    file = Path(path) / SAMPLER_FILE
    if file.is_file():
        return table_from_dict(json.loads(file.read_text())["table"], str(file))
    scheduler = Path(path) / "scheduler"
    table = _scheduler_config(scheduler)[1] if (scheduler / "scheduler_config.json").is_file() else None
    if table is None:
        raise FewstepError(f"{path} has no {SAMPLER_FILE}: it was not written by fewstep with a sampler")
    return table


def _shape(unet) -> tuple[int, int, int]:
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return int(unet.config.in_channels), int(height), int(width)


def _schedule(scheduler_config: dict) -> NoiseSchedule:
    scheduler = _diffusers().DDPMScheduler.from_config(scheduler_config)
    name = "diffusers-" + str(scheduler_config.get("beta_schedule", "custom"))
    return NoiseSchedule(name, scheduler.betas.to(torch.float64).clone())


def sampler_settings(scheduler_config: dict, variance: str) -> dict:
    """The fewstep sampler section that reproduces a DDPMScheduler: its variance and its x0 clipping."""
    clip = float(scheduler_config.get("clip_sample_range", 1.0)) if scheduler_config.get("clip_sample", True) else None
    return {"kind": "ddpm", "ddpm": {"variance": variance}, "clip_x0": clip, "noise_at_last_step": False}


def load_diffusers_pretrained(path: str | Path, config=None):
    """A diffusers pipeline folder as a :class:`fewstep.models.Pretrained`.

    The config's model and schedule sections say ``diffusers`` (the network and the betas come with
    the folder); the sampler section reproduces the pipeline's DDPMScheduler (variance type and
    ``clip_sample``); a ``fewstep_sampler.json`` written by fewstep gives the recorded table.
    Set ``data.*`` to the images the model was trained on to fine-tune or evaluate it.
    """
    from ..config import from_dict, load_config, to_dict
    from ..pretrained import Pretrained

    loaded = load_diffusers(path)
    scheduler_config = dict(loaded.scheduler.config)
    T = int(scheduler_config.get("num_train_timesteps", len(loaded.schedule.beta)))
    base = {
        "model": {"kind": "diffusers"},
        "schedule": {"kind": "diffusers", "T": T},
        "sampler": sampler_settings(scheduler_config, loaded.variance),
    }
    saved = load_config(None, base=base)
    if config is not None and (config.model.kind != "diffusers" or config.schedule.T != T):
        raise FewstepError(
            f"{path} holds a diffusers model with T={T}; the config describes model.kind="
            f"{config.model.kind}, schedule.T={config.schedule.T}"
        )
    meta = {
        "diffusers": {"unet": dict(loaded.model.unet.config), "scheduler": scheduler_config},
        "config": to_dict(saved),
    }
    table = loaded.table
    if table is None and (Path(path) / SAMPLER_FILE).is_file():
        table = load_sampler(path)
    if table is not None:
        meta["table"] = table_to_dict(table)
    return Pretrained(
        loaded.model,
        config or from_dict(type(saved), to_dict(saved)),
        _shape(loaded.model.unet),
        loaded.schedule,
        table,
        str(path),
        meta,
        kind="diffusers",
    )


def rebuild(record: dict) -> tuple[DiffusersEps, NoiseSchedule]:
    """The network (random weights) and schedule of a diffusers model recorded in a fewstep checkpoint."""
    try:
        unet = _diffusers().UNet2DModel.from_config(record["unet"])
        return DiffusersEps(unet), _schedule(record["scheduler"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FewstepError(f"the diffusers model record is damaged ({exc})") from None
