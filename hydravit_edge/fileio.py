"""Writing files without ever leaving a half-written one: a temporary file beside the target, then a rename.

Every file this toolkit writes (checkpoints, run files, manifests, reports, lookup tables) goes
through :func:`atomic_write`.  The temporary file is created private (``mkstemp``: 0600); before the
rename it gets the permissions an ordinary ``open(path, "w")`` would give (0666 less the umask), so
results are as readable as any other file the user writes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "default_file_mode"]


def default_file_mode() -> int:
    """0666 less the process umask (what ``open(path, "w")`` creates)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, flush it to disk, then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
