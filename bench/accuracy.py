"""The held-out images a benchmark measures accuracy on: the model's own, or none.

Accuracy in a report row (and the LUT's ``top1``) must come from the dataset the model was
trained on, never from another one that happens to have the same labels.  The export
manifest records that dataset (``source.data``, from the checkpoint's metadata):

* ``digits``: the fixed held-out split of the embedded digits (the one ``train``/``eval`` use);
* an ImageFolder root: its ``val/`` images through the model's evaluation transform
  (:class:`hydravit_edge.transform.EvalTransform`, from the manifest's input spec);
* nothing recorded, or the folder is not on this machine: no accuracy (the reason is said).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from hydravit_edge.transform import EvalTransform

__all__ = ["HeldOut", "heldout_set", "trained_on", "DEFAULT_MAX_IMAGES"]

#: a benchmark evaluates at most this many held-out images (a seeded sample of larger sets)
DEFAULT_MAX_IMAGES = 2000
_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class HeldOut:
    images: np.ndarray  # N x C x S x S float32, normalised
    labels: np.ndarray  # N int64, indices into the manifest's labels
    name: str  # the dataset, as the report names it


def trained_on(manifest_data: dict) -> Optional[str]:
    """The dataset a manifest says its weights were trained on, or None."""
    data = (manifest_data.get("source") or {}).get("data")
    return str(data) if data else None


def _digits(img_size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    from hydravit_edge.train.data import DigitsDataset

    ds = DigitsDataset("val", img_size)
    x = ds.images.numpy().astype(np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32), ds.targets.numpy().astype(np.int64)


def _folder(root: Path, labels: Sequence[str], transform: EvalTransform, max_images: int,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """``val/<class>/*`` images whose class is one of ``labels`` (sample of ``max_images``)."""
    index = {name: i for i, name in enumerate(labels)}
    files: list[tuple[Path, int]] = []
    for d in sorted(p for p in (root / "val").iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in index:
            raise ValueError(f"{root}/val has class {d.name!r}, which the model does not know")
        files += [(f, index[d.name]) for f in sorted(d.rglob("*")) if f.is_file() and f.suffix.lower() in _IMG_EXTENSIONS]
    total = len(files)
    if total > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(total, max_images, replace=False))
        files = [files[i] for i in pick]
    xs, ys, bad = [], [], []
    for f, y in files:
        try:
            xs.append(transform(f))
            ys.append(y)
        except Exception as exc:  # an unreadable file is reported, not fatal
            bad.append(f"{f}: {exc}")
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, 3, transform.img_size, transform.img_size), np.float32)
    return x, np.asarray(ys, dtype=np.int64), total, bad


def heldout_set(manifest_data: dict, labels: Sequence[str], transform: EvalTransform, *,
                max_images: int = DEFAULT_MAX_IMAGES) -> tuple[Optional[HeldOut], str]:
    """The model's held-out images and a note; ``(None, why)`` when there are none here."""
    data = trained_on(manifest_data)
    if data is None:
        return None, "no accuracy: the export does not record the dataset its weights were trained on"
    if data.strip().lower() == "digits":
        x, y = _digits(transform.img_size, transform.mean, transform.std)
        return HeldOut(x, y, "digits-heldout"), f"accuracy on the digits held-out split ({len(y)} images)"
    root = Path(data).expanduser()
    if not (root / "val").is_dir():
        return None, f"no accuracy: the training data {root} (its val/ split) is not on this machine"
    try:
        x, y, total, bad = _folder(root, labels, transform, max_images)
    except ValueError as exc:
        return None, f"no accuracy: {exc}"
    if not len(y):
        return None, f"no accuracy: no readable images in {root}/val"
    note = f"accuracy on {len(y)} of {total} images of {root}/val (the model's evaluation transform)"
    if bad:
        note += f"; {len(bad)} unreadable file(s) skipped, first: {bad[0]}"
    return HeldOut(x, y, f"{root}/val"), note
