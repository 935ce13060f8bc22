"""Writing an export atomically: everything is built in a temporary directory next to the output
and renamed into place only when export and validation succeeded.  A failure leaves nothing
half-written; a directory whose validation failed is kept as ``<out>.failed`` for inspection,
and the previous output stays untouched."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hydravit_edge.errors import HydraEdgeError, UsageError

__all__ = ["OutputExistsError", "staging", "install", "keep_failed"]


class OutputExistsError(HydraEdgeError):
    """The output directory exists and ``force`` was not given."""


@contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """A temporary directory next to ``out``; removed unless the caller renamed it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} already exists; pass --force (force=True) to replace it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
    except OSError as exc:
        raise HydraEdgeError(f"cannot write the output {out}: {exc.strerror or exc}") from None
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def install(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` (force) is swapped out first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def keep_failed(tmp: Path, out: Path) -> Path:
    """Rename ``tmp`` to ``<out>.failed`` (replacing an earlier one) and return that path."""
    failed = out.with_name(out.name + ".failed")
    if failed.exists():
        shutil.rmtree(failed)
    os.replace(tmp, failed)
    return failed
