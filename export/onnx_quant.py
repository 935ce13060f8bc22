"""ONNX graphs at fp16 and int8, with onnxruntime's own tools, and the shared int8 weights of a single artifact.

Per-k graph of k at a precision (:func:`quantize_proto`), from its fp32 graph:

* ``int8``: ``onnxruntime.quantization.quantize_dynamic`` -- MatMul/Gemm weights int8 per output
  channel (symmetric), activations quantized per call (``DynamicQuantizeLinear`` +
  ``MatMulInteger``, which onnxruntime fuses into ``DynamicQuantizeMatMul`` on CPU);
* ``int8-static``: ``quantize_static`` in QDQ format, per-channel int8 weights, activation ranges
  from the calibration images (MinMax);
* ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 input and
  output (the CPU provider runs it: ops without an fp16 kernel get Casts around them).

A single artifact's int8 graphs share ONE set of int8 weights (:func:`cut_from_full`): each
weight matrix of the full model is quantized per output channel once
(:func:`hydravit_edge.precision.quantize_rows`), and the int8 values and scales of k's graph
are replaced by the cut of k from them (rows and columns from the slicing table: the scale of
output channel r covers the full input width).  The merge (:mod:`.onnx`) then finds each of
them as a ``Slice`` of the full int8 tensor (``<param>#q``) and its scales (``<param>#s``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hydravit_edge.precision import quantize_rows

from .onnx_slices import _apply_plan, _digest, _slice_plan
from .quantize import QuantSpec

__all__ = ["quantize_proto", "cut_from_full", "derived_full", "derived_plan", "QUANT_OPS", "INT8_SUFFIX",
           "SCALE_SUFFIX", "FP16_SUFFIX"]

#: op types whose weights are quantized
QUANT_OPS = ["MatMul", "Gemm"]
#: names of the full derived tensors a single artifact stores: int8 values, their scales, fp16 values
INT8_SUFFIX, SCALE_SUFFIX, FP16_SUFFIX = "#q", "#s", "#h"


class _Reader:
    """onnxruntime CalibrationDataReader over calibration images, one image per call."""

    def __init__(self, images: np.ndarray, name: str) -> None:
        self.images, self.name, self.i = images, name, 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self.i >= len(self.images):
            return None
        x = self.images[self.i:self.i + 1].astype(np.float32)
        self.i += 1
        return {self.name: x}

    def rewind(self) -> None:
        self.i = 0


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs "Please consider to run pre-processing" on the root logger for
    every graph; the export says what it did itself."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_proto(proto, quant: QuantSpec):
    """The fp32 per-k graph ``proto`` at ``quant.precision`` (a new ModelProto)."""
    import onnx

    if quant.precision == "fp32":
        return proto
    if quant.precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=True)
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src = onnx.ModelProto()
    src.CopyFrom(proto)
    # torch's value_info carries shapes quantization's shape inference rejects (768 vs 1000 on the head)
    del src.graph.value_info[:]
    with tempfile.TemporaryDirectory(prefix="hydravit-quant-") as tmp, _quiet_root_logger():
        out = Path(tmp) / "q.onnx"
        if quant.precision == "int8":
            quantize_dynamic(src, out, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OPS,
                             extra_options={"WeightSymmetric": True})
        elif quant.precision == "int8-static":
            quantize_static(src, out, _Reader(quant.images(), src.graph.input[0].name), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                            op_types_to_quantize=QUANT_OPS,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                           "QuantizeBias": False})
        else:
            raise ValueError(f"ONNX has no {quant.precision} conversion")
        return onnx.load(str(out))


def _float_params(model, k: int) -> dict[str, np.ndarray]:
    return {n: t.detach().cpu().numpy() for n, t in model.subnet_state_dict(k).items()}


def cut_from_full(fp32_proto, qproto, model, k: int):
    """Replace the int8 weights and scales of ``qproto`` (``fp32_proto`` quantized) by the cut of k
    from the full weights quantized per output channel once; returns ``qproto`` (changed in place).

    Every quantized weight ``W`` of the fp32 graph (``W_quantized``, ``W_scale``, ``W_zero_point``
    in ``qproto``) is found, by value, as a parameter of ``model.subnet(k)`` (as stored, or
    transposed, as the exporter stores MatMul weights)."""
    from onnx import numpy_helper


    sub = _float_params(model, k)
    index: dict[bytes, tuple[str, bool]] = {}
    for n, a in sub.items():
        if a.ndim == 2:
            index.setdefault(_digest(a), (n, False))
            index.setdefault(_digest(a.T), (n, True))
    full = {n: t.detach().cpu().numpy() for n, t in model.state_dict().items()}
    inits = {t.name: t for t in qproto.graph.initializer}
    replaced = 0
    for w in fp32_proto.graph.initializer:
        qname = f"{w.name}_quantized"
        if qname not in inits:
            continue
        arr = numpy_helper.to_array(w)
        hit = index.get(_digest(arr))
        if hit is None:
            raise ValueError(f"quantized weight {w.name} {tuple(arr.shape)} of the k={k} graph matches no parameter")
        pname, transposed = hit
        source, pieces, axis = _slice_plan(model.slicing, pname, k)
        q_full, s_full = quantize_rows(full[source])
        q = _apply_plan(q_full, pieces, axis)
        s = _apply_plan(s_full, _rows_only(pieces), 0 if axis is not None else None)
        if q.shape != sub[pname].shape or s.shape != (sub[pname].shape[0],):
            raise ValueError(f"cut of {pname} at k={k}: {q.shape}/{s.shape} vs {sub[pname].shape}")
        q = q.T if transposed else q
        dims = tuple(inits[qname].dims)
        if q.shape != dims and q.T.shape == dims:  # a Gemm(transB) weight, stored [in, out] once quantized
            q = q.T
        if q.shape != dims:
            raise ValueError(f"cut of {pname} at k={k} has shape {q.shape}, the graph's {qname} {dims}")
        _set(inits[qname], q)
        _set(inits[f"{w.name}_scale"], s.reshape(tuple(inits[f"{w.name}_scale"].dims)))
        zp = inits.get(f"{w.name}_zero_point")
        if zp is not None:
            _set(zp, np.zeros(tuple(zp.dims), dtype=np.int8))
        replaced += 1
    if not replaced:
        raise ValueError(f"the k={k} int8 graph has no quantized weights")
    return qproto


def _rows_only(pieces):
    """A cut's pieces restricted to axis 0 (the output channels: what a per-row scale vector keeps)."""
    out = []
    for starts, ends, axes in pieces:
        keep = [(s, e, a) for s, e, a in zip(starts, ends, axes) if a == 0]
        out.append(([s for s, _, _ in keep], [e for _, e, _ in keep], [a for _, _, a in keep]))
    return out


def _set(tensor, value: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value.astype(_np_dtype(tensor))), tensor.name))


def _np_dtype(tensor):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(tensor.data_type)


def derived_full(full: dict[str, np.ndarray], precision: str) -> dict[str, np.ndarray]:
    """The full tensors a single artifact at ``precision`` stores besides (or instead of) the float32
    parameters: ``<p>#q`` int8 and ``<p>#s`` scales of every matrix (int8), ``<p>#h`` float16 (fp16)."""
    out: dict[str, np.ndarray] = {}
    for name, a in full.items():
        if precision.startswith("int8") and a.ndim == 2:
            q, s = quantize_rows(a)
            out[name + INT8_SUFFIX], out[name + SCALE_SUFFIX] = q, s
        elif precision == "fp16":
            out[name + FP16_SUFFIX] = a.astype(np.float16)
    return out


def derived_plan(name: str, plan: tuple[str, Any, Any]) -> tuple[str, Any, Any]:
    """How k's cut of a derived tensor is made from its parameter's cut ``plan``."""
    source, pieces, axis = plan
    if name.endswith(SCALE_SUFFIX):
        rows = _rows_only(pieces)
        if all(not axes for _, _, axes in rows):
            return source + SCALE_SUFFIX, [], None  # every output channel: the scales whole
        return source + SCALE_SUFFIX, rows, (0 if axis is not None else None)
    return source + name[-2:], pieces, axis
