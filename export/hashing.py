"""Sizes and sha256 of exported files and bundles (directories such as an ``.mlpackage``), as
the manifest records them and ``validate`` re-checks them."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["path_size", "file_sha256", "path_sha256"]


def path_size(path: Path) -> int:
    """Bytes of a file, or of every file below a directory (e.g. an .mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_sha256(path: Path) -> str:
    """sha256 of a file; for a directory, sha256 of the lines ``"<relative posix path>\\0<file sha256>\\n"``
    over its files in sorted order (documented in the manifest schema)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted((q for q in path.rglob("*") if q.is_file()), key=lambda q: q.relative_to(path).as_posix()):
        h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()
