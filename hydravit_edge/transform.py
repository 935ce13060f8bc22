"""The model's evaluation transform, without PyTorch: image file / PIL image / array -> float32 CHW.

A model is evaluated with timm's convention (``timm.data.create_transform(img_size,
is_training=False, crop_pct=..., interpolation=...)``): convert to RGB, resize the shorter
side to ``floor(img_size / crop_pct)`` with the model's interpolation, centre-crop
``img_size x img_size``, scale to [0, 1], ``(x - mean) / std`` per channel, CHW float32.
Training records ``crop_pct`` and ``interpolation`` in the model config
(:class:`~hydravit_edge.config.HydraConfig`), the export writes them into the manifest's
``input`` spec, and this module applies them for the runtime, ``predict`` and the benchmark's
accuracy column; the Android and iOS apps implement the same steps.  The tests check it equals
timm's transform pixel for pixel.

Dependencies: numpy and Pillow.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import UsageError

__all__ = ["EvalTransform", "INTERPOLATIONS", "load_image"]

#: interpolation names (timm's) and their Pillow filters
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a base dependency
        raise UsageError("reading images needs Pillow (pip install pillow)") from None
    return Image


def load_image(source: Any):
    """A PIL image in RGB from a path, an open PIL image, or an HxW / HxWxC uint8 array.

    Grey and palette images are expanded and RGBA loses its alpha channel, as
    ``torchvision.datasets.folder.pil_loader`` (``Image.convert("RGB")``) does in training.
    """
    Image = _pil()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except FileNotFoundError:
            raise UsageError(f"{path}: no such image file") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UsageError(f"{path}: cannot read this image ({exc})") from None
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    arr = np.asarray(source)
    if arr.dtype != np.uint8:
        raise UsageError(f"an image array of any size must be uint8 HxW or HxWxC, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return Image.fromarray(arr, "RGB" if arr.shape[-1] == 3 else "RGBA").convert("RGB")
    raise UsageError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}")


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side, centre-crop, normalise: the model's evaluation transform."""

    img_size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if not 0 < float(self.crop_pct) <= 1:
            raise UsageError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")

    @property
    def resize(self) -> int:
        """Length the shorter side is resized to (timm: ``floor(img_size / crop_pct)``)."""
        return math.floor(self.img_size / float(self.crop_pct))

    @classmethod
    def from_config(cls, config: Any) -> "EvalTransform":
        """From a :class:`HydraConfig` or its dict form."""
        get = config.get if isinstance(config, Mapping) else lambda key, default=None: getattr(config, key, default)
        return cls(int(get("img_size")), float(get("crop_pct", 0.875) or 0.875), str(get("interpolation", "bicubic")),
                   tuple(float(v) for v in get("mean")), tuple(float(v) for v in get("std")))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], config: Any = None) -> "EvalTransform":
        """From a manifest's ``input`` spec; fields it lacks come from ``config``.

        Manifests written before the transform was recorded said "resize to img_size": without
        ``crop_pct`` in the spec or the config, that is ``crop_pct=1.0``, bilinear (as the apps read it).
        """
        if config is not None and isinstance(config, Mapping) and "crop_pct" not in config:
            config = {**config, "crop_pct": 1.0, "interpolation": "bilinear"}
        base = cls.from_config(config) if config is not None else None
        img = spec.get("img_size") or (spec.get("shape") or [None])[-1] or (base.img_size if base else None)
        if img is None:
            raise UsageError("the input spec names no image size")
        pick = (lambda key, default: spec[key] if spec.get(key) is not None
                else getattr(base, key) if base is not None else default)
        return cls(int(img), float(pick("crop_pct", 0.875)), str(pick("interpolation", "bicubic")),
                   tuple(float(v) for v in pick("mean", cls.mean)), tuple(float(v) for v in pick("std", cls.std)))

    def to_spec(self) -> dict[str, Any]:
        """The fields the manifest's ``input`` spec carries."""
        return {"resize": self.resize, "crop_pct": float(self.crop_pct), "interpolation": self.interpolation,
                "crop": self.img_size, "mean": list(self.mean), "std": list(self.std),
                "preprocessing": self.describe()}

    def describe(self) -> str:
        return (f"convert to RGB; resize the shorter side to {self.resize} ({self.interpolation}); centre-crop "
                f"{self.img_size}x{self.img_size}; x = (pixel / 255 - mean[c]) / std[c]; layout NCHW, float32")

    # ---- applying it ---------------------------------------------------------------------
    def resize_crop(self, image: Any):
        """The RGB PIL image after resize and centre crop (torchvision's ``Resize(int)`` + ``CenterCrop``)."""
        Image = _pil()
        img = load_image(image)
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        size = self.resize
        if short != size:
            new_long = int(size * long / short)
            new_w, new_h = (size, new_long) if w <= h else (new_long, size)
            img = img.resize((new_w, new_h), getattr(Image.Resampling, self.interpolation.upper()))
        w, h = img.size
        c = self.img_size
        if w < c or h < c:  # cannot happen for crop_pct <= 1; torchvision pads, so do we
            canvas = Image.new("RGB", (max(w, c), max(h, c)))
            canvas.paste(img, ((max(w, c) - w) // 2, (max(h, c) - h) // 2))
            img, (w, h) = canvas, canvas.size
        top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        return img.crop((left, top, left + c, top + c))

    def __call__(self, image: Any) -> np.ndarray:
        """One image (path, PIL image, uint8 array of any size) -> normalised float32 ``C x S x S``."""
        x = np.asarray(self.resize_crop(image), dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        m = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        s = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return ((x - m) / s).astype(np.float32)

    def batch(self, images: Sequence[Any]) -> np.ndarray:
        """Several images -> ``N x C x S x S``."""
        return np.stack([self(im) for im in images]) if len(images) else np.zeros(
            (0, len(self.mean), self.img_size, self.img_size), np.float32)
