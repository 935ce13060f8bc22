"""The ONNX single artifact on disk: weights stored once, memory-mappable, and a graph per k over them.

``hydravit.onnx`` is the ``If``-chain graph (:mod:`.onnx`) whose top-level initializers (the
full parameters) live in ``hydravit.onnx.data``.  Each tensor of 64 KiB or more lies at an offset
aligned to 64 KiB, so that onnxruntime memory-maps it (clean, file-backed pages) instead of reading
it into its heap; the smaller ones (biases, layer norms, int8 scales) follow, packed at 64 bytes,
as onnxruntime's own external-data writer packs tensors under its alignment threshold.

``hydravit.k<k>.onnx`` is branch k of that graph as a graph of its own: input ``image``, output
``logits``, the branch's nodes, and as initializers the SAME full parameters, referenced in
``hydravit.onnx.data`` (same offsets; no byte is stored twice).  Its weights are the branch's
constant ``Slice``/``Concat``/``Transpose`` expressions of them, so a session of this graph
folds and prepacks subnetwork k only: it runs at the per-k file's speed in the memory of one
k.  The toolkit's runtime opens these when it materialises a k lazily (the default); any
onnxruntime user can still run ``hydravit.onnx`` with its ``heads`` input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

__all__ = ["ALIGN", "data_filename", "lazy_filename", "externalize", "lazy_graph", "save_single"]

#: offsets of external tensors: 64 KiB, the allocation granularity of Windows (4 KiB elsewhere)
ALIGN = 1 << 16
#: tensors smaller than this stay inside the graph
MIN_EXTERNAL_BYTES = 1024
#: offsets of the external tensors smaller than ALIGN (biases, layer norms, scales), packed after the
#: large ones: onnxruntime reads them (a copy of well under 1 MB) instead of mapping them
SMALL_ALIGN = 64


def data_filename(graph_file: str) -> str:
    return f"{graph_file}.data"


def lazy_filename(k: int) -> str:
    return f"hydravit.k{k}.onnx"


def externalize(proto, names: Iterable[str], data_path: Path) -> dict[str, Any]:
    """Move the initializers ``names`` of ``proto`` (top-level) into ``data_path``, each at an
    offset aligned to :data:`ALIGN`; returns ``{name: TensorProto}`` of the moved ones (data
    cleared, ``external_data`` set), which other graphs may reference as they are."""
    from onnx import TensorProto
    from onnx.external_data_helper import set_external_data

    wanted = set(names)
    moved = {}
    chosen = [t for t in proto.graph.initializer
              if t.name in wanted and t.HasField("raw_data") and len(t.raw_data) >= MIN_EXTERNAL_BYTES]
    # large tensors first, each at a multiple of ALIGN (memory-mapped); then the small ones packed
    # (onnxruntime reads those: padding each to 64 KiB would add megabytes to the file)
    chosen.sort(key=lambda t: len(t.raw_data) < ALIGN)
    with open(data_path, "wb") as f:
        for t in chosen:
            pos = f.tell()
            pad = (-pos) % (ALIGN if len(t.raw_data) >= ALIGN else SMALL_ALIGN)
            if pad:
                f.write(b"\0" * pad)
            offset = f.tell()
            f.write(t.raw_data)
            set_external_data(t, data_path.name, offset, len(t.raw_data))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            moved[t.name] = t
    return moved


def lazy_graph(main, branch, k: int, image_vi, logits_vi):
    """Branch ``k`` (a GraphProto of the ``If`` chain) of ``main`` as a model of its own, its outer
    initializers taken from ``main``'s top level as they are (external references included)."""
    import onnx
    from onnx import helper

    top = {t.name: t for t in main.graph.initializer}
    used = sorted({i for n in branch.node for i in n.input if i in top})
    out_name = branch.output[0].name
    nodes = list(branch.node) + [helper.make_node("Identity", [out_name], [logits_vi.name], name="logits")]
    inits = []
    for name in used:
        t = onnx.TensorProto()
        t.CopyFrom(top[name])
        inits.append(t)
    graph = helper.make_graph(nodes, f"hydravit_k{k}", [image_vi], [logits_vi],
                              initializer=list(branch.initializer) + inits, value_info=list(branch.value_info))
    model = helper.make_model(graph, opset_imports=list(main.opset_import), producer_name=main.producer_name,
                              functions=list(main.functions))
    model.ir_version = main.ir_version
    model.doc_string = (f"HydraViT subnetwork k={k}: its weights are cut at session creation from the full "
                        "parameters in hydravit.onnx.data (shared by every k)")
    for p in main.metadata_props:
        model.metadata_props.add(key=p.key, value=p.value)
    model.metadata_props.add(key="hydravit.k", value=str(k))
    return model


def save_single(proto, path: Path, full_names: Iterable[str], heads: Iterable[int]) -> dict[int, str]:
    """Write the single graph ``proto`` to ``path`` with its full parameters in ``<path>.data``
    and the graph of every k next to it; returns ``{k: graph file name}``."""
    import onnx

    externalize(proto, full_names, path.parent / data_filename(path.name))
    onnx.save_model(proto, str(path))
    graphs = {}
    image_vi, logits_vi = proto.graph.input[0], proto.graph.output[0]
    branches = _branches(proto)
    for k in heads:
        name = lazy_filename(k)
        onnx.save_model(lazy_graph(proto, branches[k], k, image_vi, logits_vi), str(path.parent / name))
        graphs[k] = name
    return graphs


def _branches(proto) -> dict[int, Any]:
    """``{k: then-branch}`` of the ``If`` chain (nodes ``select/k<k>``, nested in else-branches)."""
    out = {}
    nodes = list(proto.graph.node)
    while nodes:
        nxt = []
        for node in nodes:
            if node.op_type == "If" and node.name.startswith("select/k"):
                k = int(node.name.split("/k", 1)[1])
                for a in node.attribute:
                    if a.name == "then_branch":
                        out[k] = a.g
                    elif a.name == "else_branch":
                        nxt.extend(a.g.node)
        nodes = nxt
    return out
