"""How k's cut of a parameter is read off the slicing table, as pieces a graph can express with
``Slice``/``Concat`` (the ONNX single graph, :mod:`.onnx`, and its int8 weights, :mod:`.onnx_quant`)."""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["_slice_plan", "_apply_plan", "_digest"]


def _slice_plan(table, key: str, k: int):
    """How subnetwork k's ``key`` is cut from the full parameters, read off the slicing table.

    Returns ``(source, pieces, concat_axis)``: the full parameter it comes from, a list of
    ``(starts, ends, axes)`` (only the axes that are cut; empty when used whole) and the axis
    the pieces are concatenated along when there are several (the q/k/v thirds).
    """
    source = table.subnet_params(k)[key]
    c = table.cut_of(source, k)
    shape = table.params[source].shape
    if c.ranges is None:
        return source, [], None
    pieces = []
    for idx in c.pieces:
        cut = [(s.start, s.stop, a) for a, s in enumerate(idx) if (s.start, s.stop) != (0, shape[a])]
        pieces.append(([s for s, _, _ in cut], [e for _, e, _ in cut], [a for _, _, a in cut]))
    return source, pieces, c.axis


def _apply_plan(full: np.ndarray, pieces, axis) -> np.ndarray:
    if not pieces:
        return full
    parts = []
    for starts, ends, axes in pieces:
        idx = [slice(None)] * full.ndim
        for s, e, a in zip(starts, ends, axes):
            idx[a] = slice(s, e)
        parts.append(full[tuple(idx)])
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def _digest(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()
