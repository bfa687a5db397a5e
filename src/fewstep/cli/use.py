"""`fewstep sample`, `fewstep evaluate` and `fewstep config`: using a trained model."""

from __future__ import annotations

import json

import click

from .common import checkpoint_option, check_output, config_options, friendly

MAX_SAMPLES = 100_000_000


def _open(checkpoint: str, config_path, overrides):
    """The model and the config to use it with (its own, updated by --config and --set)."""
    from ..api import check_unchanged, load
    from ..config import load_config, to_dict

    model = load(checkpoint)
    config = (
        load_config(config_path, overrides, base=to_dict(model.config)) if (config_path or overrides) else model.config
    )
    check_unchanged(model, config)
    return model, config


@click.command()
@checkpoint_option()
@click.option(
    "-n",
    "--num-samples",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, MAX_SAMPLES),
    help="Samples to draw.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Sample i depends only on (seed, i), not on the batch size.",
)
@click.option(
    "--batch-size",
    default=1024,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Samples per batch (memory grows with it, not with the number of steps).",
)
@click.option(
    "--out",
    default="samples.npy",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Output .npy file [n, *shape] (.npy is added when missing).",
)
@click.option(
    "--figure",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a figure to this PNG: a scatter over the data (2-D) or a sample grid (images).",
)
@config_options("sampler.kind=ddim --set sampler.steps=4")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly
def sample(checkpoint, num_samples, seed, batch_size, out, figure, config_path, overrides, quiet):
    """Draw samples with the sampler recorded in the model, or the one --set sampler.* describes."""

    from ..api import sample as draw
    from ..errors import FewstepError
    from ..files import write_npy_atomic
    from ..preflight import FIGURE_SUFFIXES, sampling

    inputs = (checkpoint, config_path)
    out = check_output(out, "--out", suffix=".npy", inputs=inputs)
    if figure:
        figure = check_output(figure, "--figure", inputs=(*inputs, out), suffixes=FIGURE_SUFFIXES)
    model, config = _open(checkpoint, config_path, overrides)
    if figure and len(model.shape) != 3 and model.shape != (2,):
        raise FewstepError(f"--figure draws 2-D points or images; this model's samples have shape {model.shape}")
    table, data = sampling(model, config, num_samples, seed, batch_size, need_data=bool(figure) and model.shape == (2,))
    x = draw(model, num_samples, seed, table, batch_size, progress=not quiet, config=config)

    write_npy_atomic(out, x.numpy())
    noun = "sample" if num_samples == 1 else "samples"
    click.echo(f"wrote {num_samples} {noun} ({table.K}-step {table.name} sampler) to {out}")
    if figure:
        from ..plots import grid_figure, scatter

        if len(model.shape) == 3:
            grid_figure([(f"{table.K}-step {table.name}, seed {seed}", x[:64])], {}, figure)
        else:
            reference, _ = data.floor_pair(min(num_samples, 10_000), config.evaluate.seed)
            scatter([(f"{table.K}-step {table.name} samples", x)], reference, figure)
        click.echo(f"figure: {figure}")


@click.command()
@checkpoint_option(
    required=False, help="Evaluate this model's sampler: a fewstep checkpoint or a diffusers pipeline folder."
)
@click.option(
    "--samples",
    type=click.Path(dir_okay=False),
    default=None,
    help="Or evaluate samples from a .npy file [n, *shape] (against the data of --config/--set).",
)
@config_options("evaluate.repeats=5")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the scores as JSON here.")
@click.option(
    "--save-samples",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --checkpoint: also write the scored samples (the first repeat) to this .npy file.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly
def evaluate(checkpoint, samples, config_path, overrides, out, save_samples, quiet):
    """Sample quality against held-out data, beside the noise floor: W2, sliced W2 and precision/recall
    for points, FID, KID and precision/recall for images."""
    from ..api import evaluate as score
    from ..config import load_config
    from ..errors import FewstepError
    from ..evaluation import format_scores
    from ..files import write_text_atomic

    if (checkpoint is None) == (samples is None):
        raise FewstepError("give exactly one of --checkpoint and --samples")
    out = check_output(out, "--out", inputs=(checkpoint, samples, config_path)) if out else None
    if save_samples and not checkpoint:
        raise FewstepError("--save-samples goes with --checkpoint (the samples of --samples are already on disk)")
    save_samples = check_output(save_samples, "--save-samples", suffix=".npy") if save_samples else None
    if checkpoint:
        model, config = _open(checkpoint, config_path, overrides)
        click.echo(f"evaluating {checkpoint} on {config.data.name}")
        result = score(model, config=config, progress=not quiet, save_samples=save_samples)
    else:
        config = load_config(config_path, overrides)
        x = _load_samples(samples)
        chosen = config_path is not None or any(o.strip().startswith("data.") for o in overrides)
        default = "" if chosen else " (the default data set: choose another with --set data.name=...)"
        click.echo(f"evaluating {len(x)} samples from {samples} on {config.data.name}{default}")
        result = score(samples=x, config=config, progress=not quiet)
    spread = f", mean +- sd over {result['repeats']} draws" if result["repeats"] > 1 else ""
    sampler = f"sampler: {result['sampler']}; " if result.get("sampler") else ""
    click.echo(
        f"{sampler}data: {result['data']}; {result['n']} samples against {result['n']} held-out examples{spread}"
    )
    click.echo(format_scores(result))
    if out:
        write_text_atomic(out, json.dumps(result, indent=2))
        click.echo(f"scores: {out}")
    if save_samples:
        click.echo(f"samples: {save_samples}")


def _load_samples(path: str):
    """Samples [n, *shape] from an .npy file (any shape: images too) or a .npz/.csv array."""
    from pathlib import Path

    import numpy as np
    import torch

    from ..data import load_array
    from ..errors import FewstepError

    if not Path(path).is_file():
        raise FewstepError(f"samples file {path} does not exist")
    if not path.endswith(".npy"):
        return load_array(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FewstepError(f"cannot read samples file {path}: {str(exc).splitlines()[0]}") from None
    if array.ndim < 2 or len(array) < 2 or not np.issubdtype(array.dtype, np.number):
        raise FewstepError(
            f"samples file {path} holds {array.dtype} of shape {array.shape}; expected numbers [n, *shape] with n >= 2"
        )
    if not np.isfinite(array).all():
        raise FewstepError(f"samples file {path} contains NaN or infinite values")
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


@click.command()
@checkpoint_option()
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="The pipeline folder to write (model_index.json, unet/, scheduler/); it must not exist or be empty.",
)
@click.option(
    "--scheduler",
    type=click.Choice(["fewstep", "ddpm"]),
    default="fewstep",
    show_default=True,
    help="fewstep: a FewstepScheduler running the sampler fewstep would use (the fine-tuned one); ddpm: a "
    "stock DDPMScheduler (the model's T-step DDPM), i.e. a plain DDPMPipeline folder.",
)
@config_options("sampler.kind=fastdpm --set sampler.steps=10")
@friendly
def export(checkpoint, out, scheduler, config_path, overrides):
    """Write a model and its sampler as a diffusers pipeline folder.

    The network is written as a diffusers UNet2DModel (fewstep's own U-Net is converted; it needs
    one GroupNorm group count, model.norm_groups) and the scheduler is a FewstepScheduler stepping
    through the sampler fewstep would use (the one recorded with the model, e.g. the fine-tuned
    sampler, or the one the sampler.* settings describe). In diffusers alone:
    DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)(batch_size=16).images.
    """
    from ..api import export as write, sampler_table

    model, config = _open(checkpoint, config_path, overrides)
    table = sampler_table(model, config)
    path = write(model, out, table, config, scheduler)
    params = sum(p.numel() for p in model.model.parameters())
    if scheduler == "ddpm":
        click.echo(
            f"wrote {path}: UNet2DModel ({params / 1e3:.0f}K parameters) and DDPMScheduler "
            f"({model.schedule.T}-step DDPM); DiffusionPipeline.from_pretrained({str(path)!r}) loads it"
        )
        return
    click.echo(
        f"wrote {path}: UNet2DModel ({params / 1e3:.0f}K parameters) and FewstepScheduler "
        f"({table.K}-step {table.name} sampler)"
    )
    click.echo(
        f"sample it with diffusers alone: DiffusionPipeline.from_pretrained({str(path)!r}, "
        "trust_remote_code=True)(batch_size=16).images"
    )


@click.command("config")
def show_config():
    """Print every config key with its default and meaning."""
    from ..config import describe

    click.echo("\n".join(describe()))
