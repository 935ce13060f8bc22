"""Numeric precisions of artifacts, their validation tolerances, and the per-channel int8 cut.

One table (:data:`PRECISIONS`) says what each ``--precision`` means: how weights and activations
are stored, whether it needs calibration images, and how validation judges it:

* ``fp32``: max |logit error| vs PyTorch <= 1e-4 on the reference inputs (as always);
* ``fp16`` and the int8 precisions: by what users care about.  With labelled held-out images
  (the run's validation split, or ``--data``) the artifact's top-1 accuracy may fall at most
  ``max_top1_drop`` points below PyTorch fp32's on the same images; without them its top-1
  agreement with PyTorch fp32 must be at least ``min_agreement``.  The max logit error is
  reported either way.

An export directory holds each precision of a target under its own key and folder:
``onnx`` (fp32, as before), ``onnx-int8``, ``onnx-fp16`` ... (:func:`variant_key`); the
manifest entry names its ``target`` and ``precision``.

The int8 weights of a single artifact are quantized ONCE, per output channel (one scale per row
of a ``[out, in]`` weight, symmetric, zero point 0), and every k is a cut of them
(:func:`quantize_rows`, :func:`cut_rows`): row r's int8 values and scale do not depend on
which columns or rows k keeps, so the cut of k is exactly the leading block of the full
tensor (its rows, and the first ``64 k`` input columns).  The alternative -- quantizing each
k's own slice -- gives slightly finer scales for small k but needs a copy of the weights per k.

Plain data and numpy: the runtime and the apps' logic depend on this alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import UsageError

__all__ = ["Precision", "PRECISIONS", "precision_names", "get_precision", "parse_precisions", "variant_key",
           "split_variant_key", "quantize_rows", "dequantize_rows", "cut_rows", "INT8_MAX"]

#: symmetric int8: values in [-127, 127] (zero point 0)
INT8_MAX = 127


@dataclass(frozen=True)
class Precision:
    """One ``--precision`` value."""

    name: str
    #: how weights are stored, in words (the manifest's ``quantization.weights``)
    weights: str
    #: how activations are computed, in words
    activations: str
    #: needs calibration images (static activation ranges)
    calibrated: bool = False
    #: validation: most top-1 points (0-100) below PyTorch fp32 on labelled images (None: fp32 rule)
    max_top1_drop: Optional[float] = None
    #: validation without labels: max |logit error| as a fraction of the largest |fp32 logit|
    max_rel_err: Optional[float] = None
    #: validation of fp32: max abs logit error
    max_abs_err: Optional[float] = None

    @property
    def quantized(self) -> bool:
        return self.name != "fp32"

    def tolerance_text(self, labelled: bool) -> str:
        if not self.quantized:
            return f"max abs error <= {self.max_abs_err:g}"
        if labelled:
            return f"top-1 within {self.max_top1_drop:g} points of fp32"
        return f"err <= {self.max_rel_err:g} x max|logit|, no clear top-1 flip (unlabelled)"


#: Every precision an export can write, in table order.
PRECISIONS: tuple[Precision, ...] = (
    Precision("fp32", "float32", "float32", max_abs_err=1e-4),
    Precision("fp16", "float16", "float16 (where the runtime computes in fp16; float32 elsewhere)",
              max_top1_drop=0.3, max_rel_err=0.02),
    Precision("int8", "int8, per output channel, symmetric", "int8, quantized per call (dynamic)",
              max_top1_drop=1.0, max_rel_err=0.25),
    Precision("int8-static", "int8, per output channel, symmetric",
              "int8, ranges fixed by calibration images (static)", calibrated=True,
              max_top1_drop=1.0, max_rel_err=0.25),
)


def precision_names() -> tuple[str, ...]:
    return tuple(p.name for p in PRECISIONS)


def get_precision(name: str) -> Precision:
    for p in PRECISIONS:
        if p.name == name:
            return p
    raise UsageError(f"unknown precision '{name}'; choose from {', '.join(precision_names())}")


def parse_precisions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"fp32,int8"`` (or a list) -> ``("fp32", "int8")`` in the order given, each checked."""
    if text is None:
        return ("fp32",)
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    items = [t for t in items if t]
    if not items:
        raise UsageError(f"no precision given; choose from {', '.join(precision_names())}")
    for t in items:
        get_precision(t)
    return tuple(dict.fromkeys(items))


def variant_key(target: str, precision: str) -> str:
    """The manifest key and folder of ``target`` at ``precision``: ``onnx``, ``onnx-int8`` ..."""
    return target if precision == "fp32" else f"{target}-{precision}"


def split_variant_key(key: str) -> tuple[str, str]:
    """``"onnx-int8-static"`` -> ``("onnx", "int8-static")``; ``"onnx"`` -> ``("onnx", "fp32")``."""
    for p in sorted(precision_names(), key=len, reverse=True):
        if p != "fp32" and key.endswith("-" + p):
            return key[: -len(p) - 1], p
    return key, "fp32"


# =========================================================================== per-channel int8

def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (axis 0) of ``w``: ``(q int8, scale float32 [w.shape[0]])``
    with ``w ~= q * scale[:, None...]``; an all-zero row gets scale 1."""
    w = np.asarray(w, dtype=np.float32)
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(flat / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q.reshape(w.shape), scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32).reshape(q.shape[0], -1) * scale[:, None]).reshape(q.shape)


def cut_rows(q: np.ndarray, scale: np.ndarray, index: Sequence[slice]) -> tuple[np.ndarray, np.ndarray]:
    """The cut ``q[index]`` of a per-row quantized tensor and its scales ``scale[index[0]]``:
    exactly the int8 values and scales of the full tensor's block (nothing is re-quantized)."""
    index = tuple(index)
    return q[index], scale[index[0] if index else slice(None)]
