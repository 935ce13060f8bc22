"""What ``Runtime.predict`` accepts as images, made into the float32 NCHW batch a model takes.

Paths and PIL images (alone or in a list) and ``uint8`` arrays (``HxW``, ``HxWxC``, ``CxHxW``,
``NxHxW``, ``NxHxWxC``, ``NxCxHxW``; grey, RGB or RGBA; any size) go through the model's evaluation
transform (:mod:`.transform`); float arrays of the model's size are pre-sized tensors in [0, 1].
numpy only.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = ["to_batch"]


def _is_image(x: Any) -> bool:
    """A path or a PIL image (anything the evaluation transform reads as one image)."""
    if isinstance(x, (str, os.PathLike)):
        return True
    return type(x).__module__.startswith("PIL.")


def _uint8_images(x: np.ndarray) -> list[np.ndarray]:
    """A uint8 image or batch (HxW, HxWxC, CxHxW, NxHxW, NxHxWxC, NxCxHxW) as a list of HxW(xC) images."""
    channels = (1, 3, 4)
    if x.ndim == 2:
        return [x]
    if x.ndim == 3:
        if x.shape[-1] in channels:
            return [x]
        if x.shape[0] in channels:
            return [x.transpose(1, 2, 0)]
        return list(x)  # N grey images
    if x.ndim == 4:
        return list(x if x.shape[-1] in channels else x.transpose(0, 2, 3, 1))
    raise UsageError(f"uint8 images must be 2-D, 3-D or 4-D, got shape {tuple(x.shape)}")


def to_batch(images: Any, transform, in_chans: int, img_size: int, mean: np.ndarray, std: np.ndarray,
             normalized: bool = False) -> np.ndarray:
    """Float32 NCHW for the model: images through ``transform``; a float tensor only normalised
    (``(x - mean) / std``, or passed through with ``normalized``)."""
    if _is_image(images) or (isinstance(images, (list, tuple)) and images and all(map(_is_image, images))):
        return transform.batch(list(images) if isinstance(images, (list, tuple)) else [images])
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return transform.batch(_uint8_images(x))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UsageError(f"images must be 3-D (one image) or 4-D (a batch), got shape {tuple(x.shape)}")
    x = x.astype(np.float32, copy=False)
    if x.shape[1:] != (in_chans, img_size, img_size):
        raise UsageError(f"a float tensor must be {in_chans}x{img_size}x{img_size} (NCHW, "
                         f"pre-sized); got {tuple(x.shape[1:])}. Pass uint8 images, PIL images or paths "
                         "to have them resized and cropped")
    if not normalized:
        x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)
