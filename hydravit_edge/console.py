"""Shared rich consoles and small formatting helpers for the CLI and the reports."""

from __future__ import annotations

from rich import filesize
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def human_bytes(n: float) -> str:
    """Decimal byte size, two decimals: ``1.23 MB``, ``12.35 kB``, ``500 bytes`` (:func:`rich.filesize.decimal`)."""
    return filesize.decimal(int(n), precision=2)
