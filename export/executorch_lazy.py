"""ExecuTorch single artifact, lazily materialised: a program per k whose XNNPACK weights are cut
from the weights ``hydravit.pte`` already stores once.

``hydravit.pte`` (:mod:`.executorch`) holds every k with the full parameters stored once, but
its methods slice them at run time, so XNNPACK packs them on every call (1.4-2.2x the per-k
latency).  Next to it the export writes, per k:

``hydravit.k<k>.pte``
    The per-k file's program (``xnnpack_friendly(model.subnet(k))``, static XNNPACK weights, so
    they are packed once, when the method is loaded), with every XNNPACK constant kept OUT of the
    program as named data (``delegate_constant_tag``): a few tens of KB of graph.
``hydravit.k<k>.ptdhead``
    The head (header and flatbuffer index) of the named-data file (``.ptd``) that program
    expects.  The keys are sha256 digests of the tensors' bytes.

and records in the manifest (``extra.lazy_data``) where every segment of that ``.ptd`` comes
from: the subnetwork-k cut (resolved from the slicing table: ranges per axis, the q/k/v thirds
concatenated) of a full parameter that lies raw in ``hydravit.pte`` (``details.lazy_weights``:
offset, shape), optionally transposed to XNNPACK's NHWC for the patch convolution; or bytes that
lie verbatim in ``hydravit.pte`` (the patch weight of k, which it stores cut).  The runtime
(:mod:`hydravit_edge.engines.executorch_engine`) memory-maps ``hydravit.pte``, writes the ``.ptd``
of k from those pieces, loads k's method with it (XNNPACK packs the weights then) and deletes it:
one k in memory, at the per-k file's speed, and no weight stored twice.  The export checks that the
synthesized bytes equal, byte for byte, the ``.ptd`` ExecuTorch wrote (``data_sha256``).

int8 (:func:`write_lazy_quantized`)
    There is no int8 ``hydravit.pte``: XNNPACK lowers int8 linear layers with static weights only,
    so no method could slice the shared weights at run time.  The single int8 artifact is

    ``hydravit.weights``
        A plain binary file (:data:`WEIGHTS_MAGIC`, then tensors, each 64-byte aligned, C order):
        every ``Linear`` / ``Conv2d`` weight of the full model quantized ONCE per output channel
        (:func:`hydravit_edge.precision.quantize_rows`): its int8 values and its float32 scales,
        and the float32 parameters k's named data holds: the biases XNNPACK keeps, and the
        program's own constants (layer norms, class token, position embedding), which the export
        moves to the named data too (``ExecutorchBackendConfig(external_constants=...)``), so
        that no k's program stores a parameter of its own.
    ``hydravit.k<k>.pte`` / ``hydravit.k<k>.ptdhead``
        k's PT2E int8 program (:func:`.executorch_quant.quantized_program`) whose frozen int8
        weights and scales were replaced by the CUT of the full ones
        (:func:`.executorch_quant.cut_quantized`), XNNPACK constants kept out as named data.

    fp16 is the same with k's fp16 program (:func:`.executorch_quant.half_program`) and every
    parameter stored once in float16 (``dtype: "float16"``; ``cast: "float32"`` where XNNPACK keeps
    an fp16 program's weight in float32, the patch convolution's).

    int8-static is the same with k's calibrated program, except that XNNPACK stores its biases as
    int32 in the scale of k's input times the weight's: those segments are k's own (``"own"``: after
    the head in ``hydravit.k<k>.ptdhead``, a small share of k's named data).  So are the program's
    scalar constants (at most :data:`OWN_LIMIT` bytes each).

    Every other named-data segment of k is a cut of a tensor of ``hydravit.weights``: int8 values
    (``"quant": "values"``, dtype int8), scales (``"quant": "scale"``: the rows of k) or a float32
    parameter (:mod:`hydravit_edge.engines.ptd`); the layout has ``weights_format: "raw"`` and
    ``check: "sha256"``.  The records' ``file`` is ``hydravit.weights`` (the artifact that holds every
    k); a session opened on it loads each k's program.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hydravit_edge.engines.ptd import synthesize

from .errors import ExportError

__all__ = ["TAG", "lazy_program", "weights_index", "data_layout", "program_filename", "head_filename",
           "WEIGHTS_FILE", "WEIGHTS_MAGIC", "write_lazy_quantized", "quantized_layout"]

#: the named-data tag (and file stem ExecuTorch would give the .ptd)
TAG = "hydravit"
METHOD = "forward"
#: the int8 single artifact's weights file, its first bytes and the alignment of its tensors
WEIGHTS_FILE = "hydravit.weights"
WEIGHTS_MAGIC = b"HYDRAVIT-WEIGHTS 1\n"
ALIGN = 64
#: named data of k that is no cut of the weights file may follow k's .ptd head up to this size
#: (the program's scalar constants); larger ones only where they are k's by nature (int8-static biases)
OWN_LIMIT = 256


def program_filename(k: int) -> str:
    return f"hydravit.k{k}.pte"


def head_filename(k: int) -> str:
    return f"hydravit.k{k}.ptdhead"


def lazy_program(model, k: int, quant=None) -> tuple[bytes, bytes]:
    """``(pte, ptd)`` of k's program with its XNNPACK constants as external named data (a picklable pool
    task).  ``quant`` int8: the PT2E program with the cut of the full weights quantized once."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    from .base import converting
    from .executorch_trace import _quiet, _trace
    from .xnnpack_graph import xnnpack_friendly

    quantized = quant is not None and quant.quantized
    if quantized and quant.precision == "fp16":
        from .executorch_quant import half_program

        ep = half_program(xnnpack_friendly(model.subnet(k)), model.config, k)
    elif quantized:
        from .executorch_quant import cut_quantized, quantized_program

        if quant.precision not in ("int8", "int8-static"):
            raise ExportError(f"executorch k={k}: no single {quant.precision} program")
        own = {key: t.detach().cpu().numpy() for key, t in model.subnet_state_dict(k).items()}
        ep = quantized_program(xnnpack_friendly(model.subnet(k)), model.config, k, quant,
                               cut=cut_quantized(model, k), own=own)
    else:
        ep = _trace(xnnpack_friendly(model.subnet(k)), model.config, k)
    sig = ep.graph_signature
    consts = set(sig.inputs_to_parameters) | set(sig.inputs_to_buffers)  # int8: PT2E's frozen weights are buffers
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name in consts:
            n.meta.setdefault("custom", {})["delegate_constant_tag"] = TAG
    # fp16 / int8: the program's own constants (layer norms, class token, position embedding: what runs
    # outside XNNPACK) go to the same named data, so that they too are cut from the weights file, not stored per k
    config = ExecutorchBackendConfig(external_constants=lambda node: TAG) if quantized else None
    with converting("executorch", "to_edge_transform_and_lower (named data)", k), _quiet(), torch.no_grad():
        prog = to_edge_transform_and_lower({METHOD: ep}, partitioner=[XnnpackPartitioner()]).to_executorch(config)
    data = prog._tensor_data.get(TAG)  # ExecuTorch 1.5: {tag: Cord} of the named data it would write as <tag>.ptd
    if data is None:
        raise ExportError(f"executorch k={k}: the lowered program kept no XNNPACK named data outside it")
    return bytes(prog.buffer), bytes(data)


def weights_index(pte: bytes, full: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Where each full parameter lies raw (float32, C order) in the single program's bytes:
    ``{name: {"offset", "shape"}}``; parameters it does not store whole are left out."""
    out = {}
    start = 0
    for name, a in full.items():  # the emitter writes them in state-dict order: search from the last one
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        off = pte.find(b, start)
        if off < 0:
            off = pte.find(b)
        if off >= 0:
            out[name] = {"offset": int(off), "shape": list(a.shape)}
            start = off + len(b)
    return out


def _ptd_segments(ptd: bytes) -> tuple[int, list[tuple[str, int, int]]]:
    """``(segment_base_offset, [(key, absolute offset, size)])`` of a FlatTensor (.ptd) file."""
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorHeader, _deserialize_to_flat_tensor

    hdr = FlatTensorHeader.from_bytes(ptd[8:])
    ft = _deserialize_to_flat_tensor(ptd[:hdr.flatbuffer_offset + hdr.flatbuffer_size])
    segs = []
    for nd in ft.named_data:
        s = ft.segments[nd.segment_index]
        segs.append((nd.key, hdr.segment_base_offset + int(s.offset), int(s.size)))
    return int(hdr.segment_base_offset), segs


def _transforms(a: np.ndarray):
    yield "id", a
    if a.ndim == 4:
        yield "nhwc", a.transpose(0, 2, 3, 1)


def data_layout(model, k: int, ptd: bytes, pte: bytes, index: dict[str, dict]) -> tuple[bytes, dict[str, Any]]:
    """``(head bytes, layout)`` of k's .ptd: every segment's source (a cut of a full parameter in
    ``hydravit.pte``, or bytes found there verbatim); raises when a segment has none."""
    table = model.slicing
    subnet = {key: t.detach().cpu().numpy() for key, t in model.subnet_state_dict(k).items()}
    sources: dict[str, tuple[str, str]] = {}
    for key, a in subnet.items():
        for tr, arr in _transforms(a):
            sources.setdefault(hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(), (key, tr))
    full_of = table.subnet_params(k)
    base, segs = _ptd_segments(ptd)
    out = []
    for key, off, size in segs:
        blob = ptd[off:off + size]
        hit = sources.get(key)
        src: Optional[dict] = None
        if hit is not None and full_of[hit[0]] in index:
            sub_key, tr = hit
            name = full_of[sub_key]
            c = table.cut_of(name, k)
            pieces = [[[s.start, s.stop] for s in piece] for piece in c.pieces] if c.ranges is not None else None
            src = {"cut": name, "at": index[name]["offset"], "shape": index[name]["shape"], "pieces": pieces,
                   "axis": c.axis, "transform": tr}
        else:
            at = pte.find(blob)
            if at >= 0:
                src = {"copy": int(at)}
        if src is None:
            raise ExportError(f"executorch k={k}: named data {key[:12]} ({size} bytes) is neither a cut of a stored "
                              "parameter nor stored in hydravit.pte")
        out.append({"offset": off, "size": size, **src})
    layout = {"program": program_filename(k), "method": METHOD, "head": head_filename(k), "head_bytes": base,
              "size": len(ptd), "sha256": hashlib.sha256(ptd).hexdigest(), "segments": out}
    return ptd[:base], layout


def write_lazy(model, heads: Sequence[int], out_dir: Path, pte_path: Path, parts: dict[int, tuple[bytes, bytes]]):
    """Write k's program and .ptd head for every k; returns ``{k: layout}``.

    Each synthesized .ptd is checked against the one ExecuTorch wrote, byte for byte.
    """
    pte = pte_path.read_bytes()
    full = {n: t.detach().cpu().numpy() for n, t in model.state_dict().items()}
    index = weights_index(pte, full)
    layouts = {}
    for k in heads:
        program, ptd = parts[k]
        head, layout = data_layout(model, k, ptd, pte, index)
        if bytes(synthesize(layout, head, pte)) != ptd:
            raise ExportError(f"executorch k={k}: the named data cut from hydravit.pte differs from what the "
                              "program was lowered with")
        layout["weights"] = pte_path.name  # next to the program
        (out_dir / layout["program"]).write_bytes(program)
        (out_dir / layout["head"]).write_bytes(head)
        layouts[k] = layout
    return layouts


# =========================================================================== int8

def _cut_spec(table, name: str, k: int) -> tuple[Optional[list], Optional[int]]:
    c = table.cut_of(name, k)
    pieces = [[[s.start, s.stop] for s in piece] for piece in c.pieces] if c.ranges is not None else None
    return pieces, c.axis


def _scale_spec(table, name: str, k: int) -> tuple[Optional[list], Optional[int]]:
    from .executorch_quant import scale_ranges

    rows = scale_ranges(table.cut_of(name, k))
    if rows is None:
        return None, None
    return [[[a, b]] for a, b in rows], (0 if len(rows) > 1 else None)


def quantized_layout(model, k: int, ptd: bytes, full_q: dict, own_ok: bool = False,
                     float_dtype: str = "float32") -> tuple[bytes, dict[str, Any]]:
    """``(head bytes, layout)`` of k's int8 .ptd, each segment's source a cut of a full tensor of the
    weights file (int8 values, scales or a float32 parameter) still without its place there (``at``,
    ``shape``: :func:`write_lazy_quantized`).  A segment that is none of them raises, unless
    ``own_ok`` (int8-static: XNNPACK stores k's biases as int32 in the scale of k's calibrated input
    times the weight's, data of k alone): then its bytes follow the head in k's head file (``own``).
    ``float_dtype``: how the parameters that are not int8 are stored (float16 for the single fp16 artifact,
    whose ``full_q`` is empty)."""
    from .executorch_quant import cut_quantized

    table = model.slicing
    full_of = table.subnet_params(k)
    cuts = cut_quantized(model, k, full_q)
    sources: dict[str, dict] = {}

    def add(arr, name, quant, dtype, pieces, axis, transforms=("id",), cast=None):
        for tr in transforms:
            a = arr.transpose(0, 2, 3, 1) if tr == "nhwc" else arr
            digest = hashlib.sha256(np.ascontiguousarray(a, dtype=cast).tobytes()).hexdigest()
            src = {"cut": name, "dtype": dtype, "pieces": pieces, "axis": axis, "transform": tr}
            if quant:
                src["quant"] = quant
            if cast:
                src["cast"] = cast
            sources.setdefault(digest, src)

    for sub_key, t in model.subnet_state_dict(k).items():
        name = full_of[sub_key]
        trs = ("id", "nhwc") if t.dim() == 4 else ("id",)
        pieces, axis = _cut_spec(table, name, k)
        if sub_key in cuts:
            q, s = cuts[sub_key]
            add(q, name, "values", "int8", pieces, axis, trs)
            add(s, name, "scale", "float32", *_scale_spec(table, name, k))
        else:
            stored = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=float_dtype)
            add(stored, name, None, float_dtype, pieces, axis, trs)
            if float_dtype != "float32":  # XNNPACK keeps some fp16 programs' weights in float32 (the patch conv)
                add(stored, name, None, float_dtype, pieces, axis, trs, cast="float32")
    base, segs = _ptd_segments(ptd)
    out = []
    head = bytearray(ptd[:base])
    for key, off, size in segs:
        src = sources.get(hashlib.sha256(ptd[off:off + size]).hexdigest())
        if src is None:
            if not own_ok and size > OWN_LIMIT:
                raise ExportError(f"executorch int8 k={k}: named data {key[:18]} ({size} bytes) is no cut of the "
                                  "full int8 weights, their scales or a float32 parameter")
            head += b"\0" * (-len(head) % ALIGN)
            src = {"own": len(head)}
            head += ptd[off:off + size]
        out.append({"offset": off, "size": size, **src})
    layout = {"program": program_filename(k), "method": METHOD, "head": head_filename(k), "head_bytes": base,
              "size": len(ptd), "sha256": hashlib.sha256(ptd).hexdigest(), "segments": out,
              "weights": WEIGHTS_FILE, "weights_format": "raw", "check": "sha256"}
    return bytes(head), layout


def _stored(params: dict, name: str, quant: Optional[str], full_q: dict, dtype: str = "float32") -> np.ndarray:
    if quant == "values":
        return full_q[name][0]
    if quant == "scale":
        return full_q[name][1]
    return np.ascontiguousarray(params[name].detach().cpu().numpy(), dtype=dtype)


def write_lazy_quantized(model, heads: Sequence[int], out_dir: Path, parts: dict[int, tuple[bytes, bytes]],
                         own_ok: bool = False, precision: str = "int8") -> tuple[dict[int, dict], dict[str, dict]]:
    """Write ``hydravit.weights`` (each tensor a segment source uses, once) and k's program and .ptd
    head for every k; returns ``({k: layout}, index)`` with ``index``: ``{"<name>" or "<name>:scale":
    {"offset", "shape", "dtype"}}``.  Each synthesized .ptd is checked against ExecuTorch's, byte for byte.
    ``precision`` fp16: no int8 tensors, every parameter stored once in float16."""
    from hydravit_edge.engines.ptd import synthesize

    from .executorch_quant import quantized_weights

    half = precision == "fp16"
    full_q = {} if half else quantized_weights(model)
    float_dtype = "float16" if half else "float32"
    heads_layouts = {}
    used: dict[tuple[str, Optional[str]], None] = {}
    for k in heads:
        head, layout = quantized_layout(model, k, parts[k][1], full_q, own_ok=own_ok, float_dtype=float_dtype)
        heads_layouts[k] = (head, layout)
        for seg in layout["segments"]:
            if "cut" in seg:
                used[(seg["cut"], seg.get("quant"))] = None
    order = {name: i for i, name in enumerate(model.slicing.params)}
    params = model.state_dict()
    rank = {None: 0, "values": 0, "scale": 1}
    blob = bytearray(WEIGHTS_MAGIC)
    index: dict[str, dict] = {}
    where = {}
    for name, quant in sorted(used, key=lambda nq: (order.get(nq[0], len(order)), rank[nq[1]])):
        a = np.ascontiguousarray(_stored(params, name, quant, full_q, float_dtype))
        blob += b"\0" * (-len(blob) % ALIGN)
        where[(name, quant)] = {"offset": len(blob), "shape": list(a.shape), "dtype": str(a.dtype)}
        index[name + (":scale" if quant == "scale" else "")] = where[(name, quant)]
        blob += a.tobytes()
    weights = bytes(blob)
    (out_dir / WEIGHTS_FILE).write_bytes(weights)
    layouts = {}
    for k in heads:
        head, layout = heads_layouts[k]
        for seg in layout["segments"]:
            if "cut" in seg:
                w = where[(seg["cut"], seg.get("quant"))]
                seg["at"], seg["shape"] = w["offset"], w["shape"]
        if bytes(synthesize(layout, head, weights)) != parts[k][1]:
            raise ExportError(f"executorch {precision} k={k}: the named data cut from {WEIGHTS_FILE} differs from what "
                              "the program was lowered with")
        (out_dir / layout["program"]).write_bytes(parts[k][0])
        (out_dir / layout["head"]).write_bytes(head)
        layouts[k] = layout
    return layouts, index
