"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

TEMP_SUFFIX = ".tmp"


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, fsync the result, give it the usual file mode, and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give it the mode a plain write would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    write_atomic(path, write)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files left in ``directory`` by writes that were interrupted; return them."""
    directory = Path(directory)
    stale = [p for p in directory.glob(f"*{TEMP_SUFFIX}") if p.is_file()] if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
