"""The named-data (``.ptd``) file of one k of an ExecuTorch single artifact, made from the weights
the artifact stores once (see :mod:`hydravit_edge.export.executorch_lazy`, which writes the
layout and checks that these bytes equal ExecuTorch's own, byte for byte).  numpy only.

A layout (a record's ``extra.lazy_data``) names its weights file (``weights``) and, per segment
of the .ptd, the byte range it fills (``offset``, ``size``) and its source:

* ``{"copy": at}``: the bytes lie verbatim at offset ``at`` of the weights file;
* ``{"own": at}``: data of k alone (an int8-static program's int32 biases, whose scale is k's
  calibrated input scale times the weight's), verbatim at offset ``at`` of k's head file (after
  its first ``head_bytes`` bytes, which are the .ptd's own head);
* ``{"cut": name, "at", "shape", "pieces", "axis", "transform", "dtype"}``: the cut of k of the full
  tensor ``name`` stored raw (C order) at ``at`` with ``shape``: per piece the ``[start, stop]``
  range of every axis, the pieces concatenated along ``axis`` (``pieces`` null: the whole tensor),
  then ``transform`` (``id``, or ``nhwc``: ``[O, I, H, W] -> [O, H, W, I]``, XNNPACK's convolution
  layout).  ``dtype`` is the stored element type: ``float32`` (the default when absent), ``float16``
  (the single fp16 artifact: every parameter stored in float16) or ``int8``; ``cast`` (optional,
  ``float32``): the element type the program wants, converted to after the cut (exact from float16:
  XNNPACK keeps an fp16 program's convolution weights in float32).
  An int8 single artifact stores each quantized weight once as its full int8 values
  (``"quant": "values"``, dtype int8, cut like the float weight) and its float32 scales, one per
  output row (``"quant": "scale"``, shape ``[out]``, the pieces are k's row ranges): the
  per-channel symmetric int8 of :func:`hydravit_edge.precision.quantize_rows`, whose cut is exactly
  k's int8 weight.

``weights_format``: absent (fp32: the weights lie in ``hydravit.pte``, itself a program) or ``raw``
(int8: a plain binary file, not a program).  ``check: "sha256"``: the synthesized bytes must hash to
the layout's ``sha256`` (the int8 artifact asks for it: its validation tolerance would not see a
flipped weight byte).
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np

__all__ = ["synthesize", "DTYPES"]

#: element types a ``cut`` segment's full tensor may be stored in
DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


def synthesize(layout: dict, head: bytes, weights: Any, verify: Optional[bool] = None) -> bytearray:
    """The .ptd of ``layout`` (a record's ``extra.lazy_data``) from its head and ``weights`` (the
    bytes of the weights file, e.g. a memory map): each segment copied from there, or cut from a
    full tensor stored there (see the module docstring).  ``verify`` (default: the layout's
    ``check``) compares the result's sha256 with the layout's; ValueError when they differ."""
    out = bytearray(int(layout["size"]))
    base = int(layout.get("head_bytes", len(head)))
    out[:base] = head[:base]
    buf = np.frombuffer(weights, dtype=np.uint8)
    for seg in layout["segments"]:
        off, size = int(seg["offset"]), int(seg["size"])
        if "own" in seg:
            at = int(seg["own"])
            if at + size > len(head):
                raise ValueError(f"segment at {off}: k's own bytes lie past the end of {layout.get('head')}")
            out[off:off + size] = head[at:at + size]
            continue
        if "copy" in seg:
            at = int(seg["copy"])
            out[off:off + size] = buf[at:at + size].tobytes()
            continue
        dtype = np.dtype(DTYPES[seg.get("dtype", "float32")])
        at, shape = int(seg["at"]), [int(d) for d in seg["shape"]]
        nbytes = dtype.itemsize * int(np.prod(shape))
        if at + nbytes > len(buf):
            raise ValueError(f"segment at {off}: {seg.get('cut')} lies past the end of the weights file")
        full = buf[at:at + nbytes].view(dtype).reshape(shape)
        if seg["pieces"] is None:
            arr = full
        else:
            parts = [full[tuple(slice(a, b) for a, b in piece)] for piece in seg["pieces"]]
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=seg["axis"])
        if seg["transform"] == "nhwc":
            arr = arr.transpose(0, 2, 3, 1)
        data = np.ascontiguousarray(arr, dtype=np.dtype(DTYPES[seg["cast"]]) if seg.get("cast") else dtype)
        if data.nbytes != size:
            raise ValueError(f"segment at {off}: {data.nbytes} bytes cut, the program expects {size}")
        out[off:off + size] = memoryview(data).cast("B")
    if verify is None:
        verify = layout.get("check") == "sha256"
    if verify and hashlib.sha256(out).hexdigest() != layout.get("sha256"):
        raise ValueError(f"the named data of {layout.get('program')} cut from {layout.get('weights')} differs from "
                         "what the program was exported with (sha256): the weights file is damaged")
    return out
