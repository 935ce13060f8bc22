"""Classify image files with an exported model: ``hydravit-edge predict EXPORT_DIR IMAGE_OR_FOLDER...``.

Files are read with Pillow (PNG, JPEG, ... of any size; grey, RGB or RGBA), go through the
model's evaluation transform (the manifest's input spec, :mod:`hydravit_edge.transform`) and
then through :class:`hydravit_edge.runtime.Runtime` in batches, with the k the policy picks
(or ``heads``).  A folder is walked recursively; a file that cannot be read is reported and
skipped.  When the images sit in folders named after the model's labels (an ImageFolder
layout), the summary also gives top-1 against those names.

Dependencies: numpy, Pillow and the chosen runtime; never PyTorch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .errors import UsageError

__all__ = ["IMAGE_EXTENSIONS", "ImageResult", "PredictRun", "collect_images", "predict_files", "softmax"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class ImageResult:
    path: str
    k: int
    top: list[tuple[str, int, float]]  # (label, index, probability), best first
    latency_ms: float  # runtime time of the batch this image was in, per image
    expected: Optional[str] = None  # the folder name, when it is one of the model's labels

    def as_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "k": self.k, "latency_ms": round(self.latency_ms, 4),
             "top": [{"label": lab, "index": i, "probability": round(p, 6)} for lab, i, p in self.top]}
        if self.expected is not None:
            d["expected"] = self.expected
        return d


@dataclass
class PredictRun:
    results: list[ImageResult] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    seconds: float = 0.0

    @property
    def top1(self) -> Optional[float]:
        """Top-1 (%) against the folder names, over the images that have one."""
        scored = [r for r in self.results if r.expected is not None]
        if not scored:
            return None
        return 100.0 * sum(r.top[0][0] == r.expected for r in scored) / len(scored)

    def as_dict(self) -> dict[str, Any]:
        scored = sum(r.expected is not None for r in self.results)
        return {"images": [r.as_dict() for r in self.results],
                "errors": [{"path": p, "error": e} for p, e in self.errors],
                "summary": {"images": len(self.results), "unreadable": len(self.errors),
                            "seconds": round(self.seconds, 3), "top1_vs_folders": self.top1,
                            "scored": scored}}


def collect_images(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files named or found (recursively, sorted) under the given paths; missing paths are errors."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                errors.append((str(p), f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            errors.append((str(p), "no such file or folder"))
    return files, errors


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict_files(runtime: Any, paths: Sequence[str | os.PathLike], *, heads: Optional[int] = None, top: int = 5,
                  batch_size: int = 32, progress: Any = None) -> PredictRun:
    """Run every image under ``paths`` through ``runtime`` (a :class:`~hydravit_edge.runtime.Runtime`).

    ``progress(done, total)`` is called after each batch when given.
    """
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    t_start = time.perf_counter()
    files, errors = collect_images(paths)
    run = PredictRun(errors=errors)
    labels = list(runtime.labels) if runtime.labels else None
    known = set(labels or ())
    transform = runtime.transform
    top = min(top, len(labels) if labels else top)
    for start in range(0, len(files), batch_size):
        chunk, xs = [], []
        for f in files[start:start + batch_size]:
            try:
                xs.append(transform(f))
                chunk.append(f)
            except UsageError as exc:
                run.errors.append((str(f), str(exc).removeprefix(f"{f}: ")))
        if chunk:
            out = runtime.predict(np.stack(xs), heads=heads, normalized=True)
            probs = softmax(np.asarray(out.logits, dtype=np.float64))
            order = np.argsort(-probs, axis=-1, kind="stable")[:, :top]
            per_image = out.latency_ms / len(chunk)
            for f, row, p in zip(chunk, order, probs):
                names = [labels[i] if labels else str(i) for i in row]
                folder = f.parent.name
                run.results.append(ImageResult(str(f), int(out.k), [(n, int(i), float(p[i])) for n, i in zip(names, row)],
                                               per_image, folder if folder in known else None))
        if progress is not None:
            progress(min(start + batch_size, len(files)), len(files))
    run.seconds = time.perf_counter() - t_start
    return run


def iter_rows(run: PredictRun) -> Iterable[tuple[str, ...]]:
    """Table rows ``(image, k, label (p), ...)`` for display."""
    for r in run.results:
        yield (r.path, str(r.k), *(f"{lab} ({p:.3f})" for lab, _, p in r.top), f"{r.latency_ms:.2f}")
