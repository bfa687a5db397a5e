"""What every `fewstep` command shares: one-line errors, the config options, output-path checks."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ..errors import FewstepError

CONFIG_HELP = "YAML config file; `fewstep config` lists every key with its default and meaning."


MAX_WORD = 80
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
MAX_LINE = 600


def one_line(message: str) -> str:
    """``message`` on one line, with any very long word (a 100 kB --set value, a path) shortened."""
    words = [w if len(w) <= MAX_WORD else f"{w[:50]}...{w[-20:]} ({len(w)} characters)" for w in message.split()]
    text = " ".join(words)
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def friendly(fn):
    """Turn FewstepError (and Ctrl-C, and running out of memory) into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FewstepError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: the last checkpoint is kept; continue with --resume", err=True)
            sys.exit(130)
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            click.echo("error: out of memory; use a smaller batch size, model or sample count", err=True)
            sys.exit(2)

    return wrapper


class Commands(click.Group):
    """The top-level group: click's own usage errors (a bad option value, a missing option, an
    unknown command) become one line, "error: ...", and exit 2, like every other refusal."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS_IS_HELP as exc:
            exc.show()
            sys.exit(0)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {one_line(exc.format_message().rstrip('.'))}{where}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


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
        fn = click.option(
            "--resume",
            is_flag=True,
            help="Continue the run in --run-dir from its last checkpoint (--set may change how long it runs, "
            "not what it is: seed, data, schedule, model and the fine-tuned sampler stay).",
        )(fn)
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
    if required:
        return click.option("--checkpoint", required=True, type=click.Path(), help=help)
    return click.option("--checkpoint", type=click.Path(), default=None, help=help)


def check_output(path, what: str = "output file", suffix: str | None = None, inputs=(), suffixes=()) -> Path:
    from ..preflight import check_output as check

    return check(path, what, suffix, inputs, suffixes)
