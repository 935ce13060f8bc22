"""Precisions of the ExecuTorch target: what ``k<k>.pte`` holds at fp16, int8 and int8-static.

Each function returns the ``torch.export`` program of k that :func:`.executorch.lower_programs`
lowers with the XNNPACK partitioner, as at fp32; only the program differs.

``int8`` / ``int8-static`` (:func:`quantized_program`)
    ExecuTorch's PT2E flow with its XNNPACK quantizer: ``XNNPACKQuantizer`` with
    ``get_symmetric_quantization_config(is_per_channel=True, is_dynamic=...)`` (int8 weights,
    symmetric, one scale per output channel), ``prepare_pt2e`` -> (static: the calibration
    images run through the prepared model, one at a time: the program takes batch 1) ->
    ``convert_pt2e`` -> ``torch.export``.  Dynamic: XNNPACK quantizes the activations of every
    linear / convolution per call; static: the ranges observed on the calibration images are
    fixed in the program (q/dq pairs around every quantized op, which XNNPACK runs as int8).
    Each k of a per-k file is quantized from its own weights (``model.subnet(k)``): for k < max its
    scales come from its own input columns, not from a cut of the full model's.

``int8`` of the single artifact (:func:`cut_quantized`, ``quantized_program(..., cut=...)``)
    The same PT2E program of k, but every frozen int8 weight and its scales are then replaced by the
    CUT of the full model's weights quantized once (:func:`quantized_weights`:
    :func:`hydravit_edge.precision.quantize_rows`, one scale per output row over ALL the full
    model's input columns): the leading block of the int8 values and the scales of k's rows.
    So every k's XNNPACK named data is a cut of one full int8 tensor and one scale vector, which
    the single artifact stores once (:mod:`.executorch_lazy`).

``fp16`` (:func:`half_program`)
    ``xnnpack_friendly(model.subnet(k)).half()`` between two casts, so that the program takes
    float32 ``image`` and returns float32 ``logits``; XNNPACK runs it in fp16.  XNNPACK (in
    ExecuTorch 1.5) has no fp16 GELU, so each block's GELU runs in ExecuTorch's portable kernels
    between XNNPACK partitions (one partition per block instead of one for the whole network).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .quantize import QuantSpec

__all__ = ["quantized_program", "half_program", "program_for", "QUANT_TOOL", "quantization_info",
           "quantized_weights", "cut_quantized", "scale_ranges"]

#: the tools of each precision (the manifest's ``quantization.tool``)
QUANT_TOOL = {
    "fp16": "torch Module.half() -> executorch to_edge_transform_and_lower (XnnpackPartitioner, fp16)",
    "int8": "executorch XNNPACKQuantizer (PT2E prepare_pt2e / convert_pt2e, torchao), dynamic activations",
    "int8-static": "executorch XNNPACKQuantizer (PT2E prepare_pt2e / calibration / convert_pt2e, torchao), "
                   "static activations",
}


def quantization_info(quant: QuantSpec) -> dict[str, Any]:
    if quant.precision == "fp16":
        scheme = ("float16 weights and activations in XNNPACK; float32 image and logits (cast in the program); "
                  "GELU in ExecuTorch's portable fp16 kernel (XNNPACK has no fp16 GELU)")
    else:
        act = ("activations of every linear / convolution quantized per call by XNNPACK" if quant.precision == "int8"
               else "activation ranges fixed by the calibration images (static q/dq, run as int8 by XNNPACK)")
        scheme = ("get_symmetric_quantization_config(is_per_channel=True, is_dynamic="
                  f"{quant.precision == 'int8'}): int8 weights, symmetric, one scale per output channel; per-k files: "
                  "each k quantized from its own weights")
        if quant.precision in ("int8", "int8-static"):
            scheme += ("; the single artifact: the full weights quantized ONCE per output channel "
                       "(hydravit_edge.precision.quantize_rows) and every k's program uses their cut (the leading "
                       "block of the int8 values, the scales of k's rows), so one set of int8 weights serves every k")
        scheme += f"; {act}"
    return {"tool": QUANT_TOOL[quant.precision], "scheme": scheme}


def _quantizer(dynamic: bool):
    """ExecuTorch's XNNPACK quantizer, per-channel symmetric int8 weights."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))


def calibrate(prepared, images: np.ndarray) -> int:
    """Run the calibration images through a PT2E-prepared program (batch 1 each); returns how many ran."""
    import torch

    with torch.no_grad():
        for x in images:
            prepared(torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32)))
    return len(images)


def quantized_weights(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{parameter: (int8 values, float32 scales)}``: every ``Linear`` / ``Conv2d`` weight of the full
    (narrowed) model quantized once per output channel (:func:`~hydravit_edge.precision.quantize_rows`),
    the weights PT2E's XNNPACK quantizer quantizes."""
    import torch

    from hydravit_edge.precision import quantize_rows

    out = {}
    for mname, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            out[f"{mname}.weight" if mname else "weight"] = quantize_rows(mod.weight.detach().cpu().numpy())
    return out


def scale_ranges(c) -> Optional[list[tuple[int, int]]]:
    """The output rows (axis-0 ranges) of a cut, in concatenation order; None: every row."""
    if c.ranges is None:
        return None
    return [(int(a), int(b)) for a, b in c.ranges[0]]


def cut_quantized(model, k: int, full: Optional[dict] = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{key of subnetwork k: (int8 cut, scale cut)}`` of :func:`quantized_weights` (exactly the full
    tensors' block: nothing is re-quantized, :func:`~hydravit_edge.precision.cut_rows`)."""
    from hydravit_edge.slicing import take

    table = model.slicing
    full = quantized_weights(model) if full is None else full
    out = {}
    for sub_key, name in table.subnet_params(k).items():
        if name not in full:
            continue
        q, s = full[name]
        c = table.cut_of(name, k)
        rows = scale_ranges(c)
        out[sub_key] = (np.ascontiguousarray(take(q, c)),
                        s.copy() if rows is None else np.concatenate([s[a:b] for a, b in rows]))
    return out


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def use_cut_weights(gm, own: dict[str, np.ndarray], cut: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Replace, in a ``convert_pt2e`` GraphModule, every frozen int8 weight (the input of a
    ``dequantize_per_channel`` on axis 0) and its scales by the cut of the full weights (``cut``:
    :func:`cut_quantized`).  Which weight a constant is: the parameter of ``own`` (k's float weights)
    whose shape it has and which it dequantizes to (within half a step per row); returns the keys
    replaced, raises when a constant matches none or several."""
    import torch

    from .errors import ExportError

    done = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or "dequantize_per_channel" not in str(n.target):
            continue
        qn, sn = n.args[0], n.args[1]
        if getattr(qn, "op", None) != "get_attr" or getattr(sn, "op", None) != "get_attr":
            continue
        q = _attr(gm, qn.target).detach().cpu().numpy()
        s = _attr(gm, sn.target).detach().cpu().numpy().astype(np.float32)
        axis = n.args[3] if len(n.args) > 3 else n.kwargs.get("axis", 0)
        if q.dtype != np.int8 or axis != 0:
            raise ExportError(f"a PT2E quantized weight {tuple(q.shape)} ({q.dtype}, axis {axis}) is not "
                              "int8 per output channel")
        deq = q.astype(np.float32).reshape(q.shape[0], -1) * s[:, None]
        hits = [key for key, w in own.items() if key in cut and w.shape == q.shape
                and np.all(np.abs(deq - w.reshape(w.shape[0], -1)) <= 0.5001 * s[:, None] + 1e-12)]
        if len(hits) != 1:
            raise ExportError(f"a PT2E int8 weight {tuple(q.shape)} matches {len(hits)} weights of the subnetwork "
                              f"({hits}); cannot put the cut of the full int8 weights in its place")
        qc, sc = cut[hits[0]]
        setattr(gm, qn.target, torch.from_numpy(np.ascontiguousarray(qc, dtype=np.int8)))
        setattr(gm, sn.target, torch.from_numpy(np.ascontiguousarray(sc, dtype=np.float32)))
        done.append(hits[0])
    missing = sorted(set(cut) - set(done))
    if missing:
        raise ExportError(f"PT2E left {missing} unquantized: their int8 cut has no place in k's program")
    return done


def quantized_program(module, cfg, k: int, quant: QuantSpec, cut: Optional[dict] = None, own: Optional[dict] = None):
    """The ``torch.export`` program of ``module`` (k's network) quantized with ExecuTorch's XNNPACK
    quantizer through PT2E (see the module docstring).  With ``cut`` (:func:`cut_quantized`) and
    ``own`` (k's float weights by the same keys) its int8 weights and scales are the cut of the full
    weights quantized once, not its observers' (:func:`use_cut_weights`)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .base import converting
    from .executorch_trace import _quiet
    from .specs import IOSpec

    example = (IOSpec.example(cfg),)
    static = quant.precision == "int8-static"
    images = quant.images() if static else None  # a missing calibration file is a UsageError, before the work
    with converting("executorch", "XNNPACKQuantizer (PT2E)", k), _quiet(), torch.no_grad():
        graph = torch.export.export(module.eval(), example).module()
        prepared = prepare_pt2e(graph, _quantizer(dynamic=not static))
        if static:
            calibrate(prepared, images)
        else:
            prepared(*example)  # dynamic: only the weights' observers, which need no data
        converted = convert_pt2e(prepared)
        if cut is not None:
            use_cut_weights(converted, own or {}, cut)
        return torch.export.export(converted, example)


def half_program(module, cfg, k: int):
    """The ``torch.export`` program of ``module`` in fp16, with float32 input and output."""
    import torch

    from .executorch_trace import _trace

    class Half(torch.nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net.half()

        def forward(self, image):
            return self.net(image.to(torch.float16)).to(torch.float32)

    return _trace(Half(module), cfg, k)


def program_for(module, cfg, k: int, quant: QuantSpec):
    """k's program at ``quant.precision`` (``module``: ``xnnpack_friendly(model.subnet(k))``)."""
    from .executorch_trace import _trace

    if quant.precision == "fp32":
        return _trace(module, cfg, k)
    if quant.precision == "fp16":
        return half_program(module, cfg, k)
    return quantized_program(module, cfg, k, quant)
