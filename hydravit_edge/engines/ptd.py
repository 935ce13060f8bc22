"""The named-data (``.ptd``) file of one k of an ExecuTorch single artifact, made from the weights
``hydravit.pte`` stores once (see :mod:`hydravit_edge.export.executorch_lazy`, which writes the
layout and checks that these bytes equal ExecuTorch's own, byte for byte).  numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["synthesize"]


def synthesize(layout: dict, head: bytes, weights: Any) -> bytearray:
    """The .ptd of ``layout`` (a record's ``extra.lazy_data``) from its head and ``weights`` (the
    bytes of ``hydravit.pte``, e.g. a memory map): each segment copied from there, or cut from a
    full parameter stored there (ranges per axis from the slicing table, pieces concatenated,
    optionally NHWC for the patch convolution)."""
    out = bytearray(int(layout["size"]))
    out[:len(head)] = head
    buf = np.frombuffer(weights, dtype=np.uint8)
    for seg in layout["segments"]:
        off, size = int(seg["offset"]), int(seg["size"])
        if "copy" in seg:
            at = int(seg["copy"])
            out[off:off + size] = buf[at:at + size].tobytes()
            continue
        at, shape = int(seg["at"]), [int(d) for d in seg["shape"]]
        full = buf[at:at + 4 * int(np.prod(shape))].view(np.float32).reshape(shape)
        if seg["pieces"] is None:
            arr = full
        else:
            parts = [full[tuple(slice(a, b) for a, b in piece)] for piece in seg["pieces"]]
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=seg["axis"])
        if seg["transform"] == "nhwc":
            arr = arr.transpose(0, 2, 3, 1)
        data = np.ascontiguousarray(arr, dtype=np.float32)
        if data.nbytes != size:
            raise ValueError(f"segment at {off}: {data.nbytes} bytes cut, the program expects {size}")
        out[off:off + size] = memoryview(data).cast("B")
    return out
