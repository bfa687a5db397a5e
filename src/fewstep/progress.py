"""Progress output: bars on a terminal only, plain notes for long silent steps.

A bar redraws itself with carriage returns and pads lines with spaces; in a log file or a pipe
that is noise (and trailing spaces), so bars are drawn only when stderr is a terminal.
"""

from __future__ import annotations

import sys


def bar(iterable=None, enabled: bool = True, **kwargs):
    """A tqdm bar when ``enabled`` and stderr is a terminal; a silent pass-through otherwise."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def note(message: str, enabled: bool = True) -> None:
    """One line on stderr before a long step that shows no progress of its own."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
