"""What every `fewstep` command shares: one-line errors, the config options, output-path checks."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from ..errors import FewstepError

CONFIG_HELP = "YAML config file; `fewstep config` lists every key with its default and meaning."


def friendly(fn):
    """Turn FewstepError (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FewstepError as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: the last checkpoint is kept; continue with --resume", err=True)
            sys.exit(130)
        except MemoryError:
            click.echo("error: out of memory; use a smaller batch size, model or sample count", err=True)
            sys.exit(2)

    return wrapper


def config_options(example: str):
    """--config and --set, with an example of --set that fits the command."""

    def decorate(fn):
        fn = click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help=f"Override one config key, e.g. --set {example} (repeatable; values are YAML).",
        )(fn)
        return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)(
            fn
        )

    return decorate


def run_options(kind: str):
    """--run-dir, --resume and --quiet of the commands that write a run directory."""

    def decorate(fn):
        fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
        fn = click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")(fn)
        return click.option(
            "--run-dir",
            type=click.Path(file_okay=False),
            default=None,
            help=f"Run directory (default: runs/{kind}-<time>).",
        )(fn)

    return decorate


CHECKPOINT_HELP = (
    "A fewstep checkpoint (.safetensors) or a diffusers pipeline folder (model_index.json, unet/, scheduler/)."
)


def checkpoint_option(required: bool = True, help: str = CHECKPOINT_HELP):
    return click.option("--checkpoint", required=required, type=click.Path(), default=None, help=help)


def check_output(path: str | Path, what: str = "output file", suffix: str | None = None) -> Path:
    """Refuse an output path that cannot be written, before any work: its folder must exist and be writable."""
    path = Path(path)
    if suffix and path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    if path.is_dir():
        raise FewstepError(f"{what} {path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FewstepError(f"the folder of {what} {path} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise FewstepError(f"{what} {path} cannot be written (permission denied)")
    return path
