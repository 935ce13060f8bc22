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
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hydravit_edge.engines.ptd import synthesize

from .errors import ExportError

__all__ = ["TAG", "lazy_program", "weights_index", "data_layout", "program_filename", "head_filename"]

#: the named-data tag (and file stem ExecuTorch would give the .ptd)
TAG = "hydravit"
METHOD = "forward"


def program_filename(k: int) -> str:
    return f"hydravit.k{k}.pte"


def head_filename(k: int) -> str:
    return f"hydravit.k{k}.ptdhead"


def lazy_program(model, k: int) -> tuple[bytes, bytes]:
    """``(pte, ptd)`` of k's program with its XNNPACK constants as external named data (a picklable pool task)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .base import converting
    from .executorch_trace import _quiet, _trace
    from .xnnpack_graph import xnnpack_friendly

    ep = _trace(xnnpack_friendly(model.subnet(k)), model.config, k)
    sig = ep.graph_signature
    for n in ep.graph.nodes:
        if n.op == "placeholder" and (n.name in sig.inputs_to_parameters or n.name in sig.inputs_to_buffers):
            n.meta.setdefault("custom", {})["delegate_constant_tag"] = TAG
    with converting("executorch", "to_edge_transform_and_lower (named data)", k), _quiet(), torch.no_grad():
        prog = to_edge_transform_and_lower({METHOD: ep}, partitioner=[XnnpackPartitioner()]).to_executorch()
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
