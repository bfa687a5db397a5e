"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import re
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


SAFETENSORS_TEMPORARY = re.compile(r"\.tmp[A-Za-z0-9]{6}")
"""The temporary file safetensors' ``save_file`` writes next to its target before renaming it."""


def write_npy_atomic(path: str | Path, array) -> None:
    """A numpy array (or CPU tensor) as a .npy file, written atomically."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))

    write_atomic(path, write)


def is_temporary(path: Path) -> bool:
    return path.name.endswith(TEMP_SUFFIX) or bool(SAFETENSORS_TEMPORARY.fullmatch(path.name))


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files left in ``directory`` by writes that were interrupted (fewstep's
    ``*.tmp`` and safetensors' ``.tmpXXXXXX``); return them. Call it only where no write is running."""
    directory = Path(directory)
    stale = sorted(p for p in directory.iterdir() if p.is_file() and is_temporary(p)) if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def can_create_in(directory: Path) -> str | None:
    """Why no file can be created in the existing ``directory`` (None when one can): tried, not guessed,
    so read-only mounts, /proc and root's permissions are all judged by the system itself."""
    if not directory.is_dir():
        return f"{directory} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".fewstep-probe-", suffix=TEMP_SUFFIX)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None
