"""ONNX target: per-k graphs and one graph that switches k with a ``heads`` input.

Per-k (``onnx/k<k>.onnx``)
    ``torch.onnx.export(model.subnet(k), dynamo=True)`` with its default optimisation, a
    dynamic batch axis, input ``image`` (float32 NCHW) and output ``logits`` -- exactly how one
    would export timm's DeiT, so the graphs run as fast as DeiT's.

Single (``onnx/hydravit.onnx``)
    Inputs ``image`` (float32 ``[batch, 3, H, W]``) and ``heads`` (int64, shape ``[1]``; any k
    of the exported set), output ``logits`` (float32 ``[batch, classes]``).  The graph is a
    chain of ``If`` nodes (``heads == k``); branch k is the per-k graph of k, except that every
    weight it uses is an expression (``Slice``/``Concat``/``Transpose``/``Reshape`` with
    constant bounds) of the FULL parameters, which are stored once as top-level initializers.
    Those expressions depend on initializers only, so onnxruntime constant-folds them when the
    session is created and each branch then runs exactly the per-k graph with prepacked
    weights: switching k is a different ``heads`` value in the next ``run`` (no reload, no
    weight copy per run).  A ``heads`` value outside the exported set fails in a node named
    ``heads_must_be_one_of_<ks>``.

    Trade-off: the file is the size of the k=max graph, but a session materialises the folded
    weights of every branch, so its RAM is about the sum of the per-k sessions' RAM (see
    ``hydravit-edge export-bench``).  The alternative -- slicing at run time (what a graph with
    a symbolic k from ``torch.export`` does) -- keeps one copy in RAM but copies and repacks
    the weights on every run, which costs far more than 10% at large k.

How branch weights are found: every float initializer of the exported per-k graph is
matched, by value, against the k-subnetwork's parameters (as stored, or transposed, as the
exporter pre-transposes MatMul weights); each parameter slice is expressed with the model's
slicing table (:mod:`hydravit_edge.slicing`), and the slices are checked against
:meth:`HydraViT.subnet_state_dict` before use.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hydravit_edge.targets import MODES

from .base import Exporter, converting
from .errors import ExportError
from .progress import ProgressFn
from .records import ArtifactRecord, TensorSpec
from .registry import register_exporter
from .onnx_lazy import data_filename, save_single
from .onnx_slices import _apply_plan, _digest, _slice_plan
from .onnx_quant import FP16_SUFFIX, INT8_SUFFIX, SCALE_SUFFIX, cut_from_full, derived_full, derived_plan, quantize_proto
from .quantize import FP32, QuantSpec
from .specs import HEADS, IMAGE, LOGITS, IOSpec

#: Initializers of a per-k graph that match no parameter (shape constants and the like) become
#: shared constants of the single graph (stored once by value) only up to this many bytes.
_LOCAL_LIMIT = 1 << 16
_HEADS_INPUT = HEADS
#: ONNX element types of the TensorSpec dtypes the graphs use.
_ELEM_TYPES = {"float32": 1, "int64": 7}  # onnx.TensorProto.FLOAT, .INT64


def _quiet():
    """Silence torch.onnx's progress prints and warnings during export."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def export_onnx_proto(module, config, opset: Optional[int] = None):
    """``torch.onnx.export`` (dynamo, default optimisation) of a plain ViT: dynamic batch,
    input ``image``, output ``logits``.  Used for the per-k graphs and for timm's DeiT in the
    benchmark, so both are exported the same way."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    with _quiet(), torch.no_grad():
        prog = torch.onnx.export(module.eval(), (IOSpec.example(config),), None, input_names=[IMAGE],
                                 output_names=[LOGITS], dynamo=True, optimize=True, verbose=False,
                                 opset_version=opset, dynamic_shapes=({0: batch},))
    return prog.model_proto


def subnet_proto(model, k: int, quant: QuantSpec = FP32, shared: bool = False):
    """The per-k ONNX graph of ``model.subnet(k)`` at ``quant.precision`` (a picklable
    :class:`~.parallel.ExportPool` task).  ``shared``: int8 weights cut from the full weights
    quantized once (:func:`~.onnx_quant.cut_from_full`, what a single artifact stores) instead of
    quantized from k's own slice."""
    vit = model.subnet(k)
    with converting("onnx", "torch.onnx.export", k):
        proto = export_onnx_proto(vit, model.config)
    if not quant.quantized:
        return proto
    with converting("onnx", _TOOLS[quant.precision], k):
        qproto = quantize_proto(proto, quant)
        if shared and quant.precision.startswith("int8"):
            cut_from_full(proto, qproto, model, k)
    return qproto


#: the onnxruntime tool of each precision
_TOOLS = {"fp16": "onnxruntime.transformers.float16.convert_float_to_float16",
          "int8": "onnxruntime.quantization.quantize_dynamic",
          "int8-static": "onnxruntime.quantization.quantize_static (QDQ)"}


def save_proto(proto, path: Path) -> None:
    """Write an ONNX model; one over protobuf's 2 GB limit keeps its weights in ``<name>.data`` next to it."""
    import onnx

    if proto.ByteSize() > 2_000_000_000:  # protobuf limit: weights go to an external data file
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


def _topological(graph) -> list:
    """The nodes of ``graph`` in an order where every input is produced before it is used
    (fp16 conversion appends its input/output Casts at the end of the node list)."""
    produced = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, out = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in produced for i in node.input):
                out.append(node)
                produced.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # inputs from outside (outer scope): keep their order
            out.extend(rest)
            break
        pending = rest
    return out


class _Merger:
    """Builds the single multi-k graph from per-k graphs, one branch at a time."""

    def __init__(self, model, precision: str = "fp32") -> None:
        self.cfg = model.config
        self.full = {n: t.detach().cpu().numpy() for n, t in model.state_dict().items()}
        # int8: every matrix quantized per output channel once (<p>#q, <p>#s); fp16: <p>#h
        self.full.update(derived_full(self.full, precision))
        self.model = model
        self.used: dict[str, np.ndarray] = {}  # top-level initializers (full parameters)
        self.branches: dict[int, Any] = {}
        self.local_bytes: dict[int, int] = {}
        self.opset = None
        self.ir_version = None
        self.functions: dict[tuple[str, str], Any] = {}
        #: the small constants of every branch (slice bounds, shapes, the per-k graph's own scalars),
        #: stored once at the top level by value: twelve branches need about thirty distinct ones
        self.consts: dict[bytes, Any] = {}
        self.const_bytes: dict[str, int] = {}

    def _const(self, t) -> tuple[str, int]:
        """The shared top-level name of constant ``t`` (a TensorProto), stored once per distinct value;
        ``(name, bytes)``."""
        from onnx import numpy_helper

        a = numpy_helper.to_array(t)
        c = numpy_helper.from_array(a, "")  # one encoding per value (raw data), whatever the source's
        key = c.SerializeToString(deterministic=True)
        hit = self.consts.get(key)
        if hit is None:
            if a.dtype == np.int64 and a.ndim == 1 and a.size <= 4:
                c.name = "const/i64/" + ",".join(str(int(v)) for v in a)
            else:
                c.name = f"const/{a.dtype}{list(a.shape)}/{hashlib.sha256(key).hexdigest()[:12]}"
            hit = self.consts[key] = c
            self.const_bytes[c.name] = a.nbytes
        return hit.name, a.nbytes

    def _bound(self, v) -> str:
        """The shared constant of an int64 vector (a slice's starts/ends/axes, a shape)."""
        from onnx import numpy_helper

        return self._const(numpy_helper.from_array(np.asarray(v, dtype=np.int64), "c"))[0]

    def add(self, k: int, proto) -> None:
        import onnx
        from onnx import helper, numpy_helper

        if self.opset is None:
            self.opset, self.ir_version = list(proto.opset_import), proto.ir_version
        for fn in proto.functions:
            self.functions.setdefault((fn.domain, fn.name), fn)
        g = proto.graph
        pre = f"k{k}/"
        sub_sd = {n: t.numpy() for n, t in self.model.subnet_state_dict(k).items()}
        plans = {}
        for n, a in sub_sd.items():
            source, pieces, axis = _slice_plan(self.model.slicing, n, k)
            if not np.array_equal(_apply_plan(self.full[source], pieces, axis), a):
                raise ExportError(f"slice rule for {n} at k={k} disagrees with HydraViT.subnet_state_dict")
            plans[n] = (source, pieces, axis)
        for n in list(sub_sd):  # k's cut of the derived full tensors (int8 values and scales, fp16)
            for suffix in (INT8_SUFFIX, SCALE_SUFFIX, FP16_SUFFIX):
                if plans[n][0] + suffix in self.full:
                    plan = derived_plan(n + suffix, plans[n])
                    sub_sd[n + suffix] = _apply_plan(self.full[plan[0]], plan[1], plan[2])
                    plans[n + suffix] = plan
        # value -> (tensor, transposed?) for every tensor of the k-subnetwork
        index: dict[bytes, tuple[str, bool]] = {}
        for n, a in sub_sd.items():
            index.setdefault(_digest(a), (n, False))
            if a.ndim == 2:
                index.setdefault(_digest(a.T), (n, True))

        rename: dict[str, str] = {"image": "image"}
        nodes = []
        local: dict[str, int] = {}
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            hit = index.get(_digest(arr)) if arr.dtype in (np.float32, np.float16, np.int8) else None
            if hit is not None:
                pname, transposed = hit
                src = sub_sd[pname].T if transposed else sub_sd[pname]
                if src.size != arr.size or not np.array_equal(src.reshape(arr.shape), arr):
                    hit = None
            if hit is None:
                if init.ByteSize() > _LOCAL_LIMIT:
                    raise ExportError(
                        f"ONNX single export: initializer {init.name} {tuple(init.dims)} of the k={k} graph matches no "
                        "parameter; its weights would be stored twice")
                name, size = self._const(init)
                local[name] = size
                rename[init.name] = name
                continue
            pname, transposed = hit
            source, pieces, axis = plans[pname]
            self.used[source] = self.full[source]
            cur = source
            out = pre + init.name
            if not pieces:  # used whole (a classifier bias): a full-range slice, for the same reason
                pieces = [([0], [self.full[source].shape[0]], [0])]
            # Always a Slice, even for the full tensor: onnxruntime then folds every branch weight into a
            # branch-local constant, so each branch is optimised exactly like the per-k graph (e.g. the
            # NCHWc conv transform only sees constants of its own graph) and the top-level initializers
            # become unused after folding and are released.
            parts = []
            for j, (st, en, ax) in enumerate(pieces):
                b = f"{out}/slice{j}"
                nodes.append(helper.make_node("Slice", [source] + [self._bound(v) for v in (st, en, ax)], [b], name=b))
                parts.append(b)
            if len(parts) > 1:
                nodes.append(helper.make_node("Concat", parts, [f"{out}/concat"], axis=axis, name=f"{out}/concat"))
                cur = f"{out}/concat"
            else:
                cur = parts[0]
            if transposed:
                nodes.append(helper.make_node("Transpose", [cur], [f"{out}/t"], perm=[1, 0], name=f"{out}/t"))
                cur = f"{out}/t"
            src_shape = sub_sd[pname].shape[::-1] if transposed else sub_sd[pname].shape
            if tuple(src_shape) != tuple(init.dims):
                nodes.append(helper.make_node("Reshape", [cur, self._bound(list(init.dims))], [f"{out}/r"], name=f"{out}/r"))
                cur = f"{out}/r"
            rename[init.name] = cur

        def rn(name: str) -> str:
            if not name:
                return name
            return rename.get(name, pre + name)

        for node in _topological(g):
            n2 = onnx.NodeProto()
            n2.CopyFrom(node)
            n2.name = pre + (node.name or node.output[0])
            del n2.metadata_props[:]
            n2.doc_string = ""
            del n2.input[:]
            n2.input.extend(rn(i) for i in node.input)
            del n2.output[:]
            n2.output.extend(rn(o) for o in node.output)
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n2.attribute):
                raise ExportError("ONNX single export: per-k graphs with control flow are not supported")
            nodes.append(n2)
        if len(g.output) != 1 or len(g.input) != 1:
            raise ExportError("ONNX single export expects per-k graphs with one input and one output")
        out_vi = onnx.ValueInfoProto()
        out_vi.CopyFrom(g.output[0])
        out_vi.name = rn(g.output[0].name)
        del out_vi.metadata_props[:]
        value_info = []
        for vi in g.value_info:
            v2 = onnx.ValueInfoProto()
            v2.CopyFrom(vi)
            v2.name = rn(vi.name)
            del v2.metadata_props[:]
            value_info.append(v2)
        for n in nodes:  # the slice bounds and shapes it uses count as k's constants too
            for i in n.input:
                if i.startswith("const/") and i not in local:
                    local[i] = self.const_bytes[i]
        self.branches[k] = helper.make_graph(nodes, f"k{k}", [], [out_vi], value_info=value_info)
        self.local_bytes[k] = sum(local.values())

    def build(self, ks: Sequence[int], producer: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        """The single graph: ``inputs`` (image, heads) and ``outputs`` (logits) as the target's spec says."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        cfg = self.cfg
        ks = sorted(ks)
        tag = "_".join(str(k) for k in ks)
        valid = np.asarray(ks, dtype=np.int64)
        # else-branch of the last test: fails for any heads value not exported
        bad = helper.make_graph(
            [helper.make_node("Abs", [_HEADS_INPUT], ["invalid/abs"], name="invalid/abs"),
             helper.make_node("Add", ["invalid/abs", "invalid/n"], ["invalid/index"], name="invalid/add"),
             helper.make_node("Gather", ["invalid/valid", "invalid/index"], ["invalid/gather"],
                              name=f"heads_must_be_one_of_{tag}"),
             helper.make_node("Cast", ["invalid/gather"], ["invalid/cast"], to=TensorProto.FLOAT, name="invalid/cast"),
             helper.make_node("Expand", ["invalid/cast", "invalid/shape"], ["invalid/logits"], name="invalid/expand")],
            "invalid_heads", [], [helper.make_tensor_value_info("invalid/logits", TensorProto.FLOAT, None)],
            initializer=[numpy_helper.from_array(valid, "invalid/valid"),
                         numpy_helper.from_array(np.asarray([len(ks)], np.int64), "invalid/n"),
                         numpy_helper.from_array(np.asarray([1, cfg.num_classes], np.int64), "invalid/shape")])
        else_graph = bad
        top_nodes, top_inits = [], []
        for i, k in enumerate(reversed(ks)):
            last = i == len(ks) - 1
            out = "logits" if last else f"select/k{k}/out"
            nodes = [helper.make_node("Equal", [_HEADS_INPUT, f"select/k{k}/value"], [f"select/k{k}/is"], name=f"select/k{k}/is"),
                     helper.make_node("If", [f"select/k{k}/is"], [out], name=f"select/k{k}",
                                      then_branch=self.branches[k], else_branch=else_graph)]
            value = [numpy_helper.from_array(np.asarray([k], np.int64), f"select/k{k}/value")]
            if last:
                top_nodes, top_inits = nodes, value
            else:
                else_graph = helper.make_graph(nodes, f"select_k{k}", [],
                                               [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                                               initializer=value)
        weights = [numpy_helper.from_array(np.ascontiguousarray(v), n) for n, v in self.used.items()]
        weights += list(self.consts.values())
        graph = helper.make_graph(
            top_nodes, "hydravit",
            [helper.make_tensor_value_info(t.name, _ELEM_TYPES[t.dtype], t.shape) for t in inputs],
            [helper.make_tensor_value_info(t.name, _ELEM_TYPES[t.dtype], t.shape) for t in outputs],
            initializer=weights + top_inits)
        model = helper.make_model(graph, opset_imports=self.opset, producer_name=producer,
                                  functions=list(self.functions.values()))
        model.ir_version = self.ir_version
        model.doc_string = (f"HydraViT, heads {ks}: feed image (float32 NCHW) and heads (int64 [1]); "
                            "weights stored once, k switched per run")
        for key, value in (("hydravit.heads", ",".join(map(str, ks))), ("hydravit.heads_input", _HEADS_INPUT),
                           ("hydravit.config", cfg.to_json())):
            model.metadata_props.add(key=key, value=value)
        if model.ByteSize() < 2_000_000_000:
            onnx.checker.check_model(model)
        return model


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    export_requires = ("onnx", "onnxscript")
    packages = ("onnx", "onnxscript", "onnxruntime", "torch")
    entry_kind = "graph+input"
    io = IOSpec(batch="batch", heads_input=True)  # dynamic batch; the single graph takes k as `heads`
    tolerance = 1e-4
    precisions = {"fp32": MODES, "fp16": MODES, "int8": MODES, "int8-static": MODES}

    def quantization_info(self, quant: QuantSpec) -> dict:
        info = {"tool": _TOOLS[quant.precision]}
        if quant.precision.startswith("int8"):
            info["scheme"] = ("per-k files: each k quantized from its own weights; single: the full weights "
                              "quantized per output channel once (<param>#q, <param>#s in hydravit.onnx.data), "
                              "each k's int8 weights and scales a Slice of them")
        else:
            info["scheme"] = "float16 weights (single: the full weights once, <param>#h); float32 image and logits"
        return info

    def export_k(self, model, k, out_dir, quant: QuantSpec = FP32) -> ArtifactRecord:
        save_proto(subnet_proto(model, k, quant), Path(out_dir) / self.per_k_filename(k))
        return self.record(model.config, k, "per-k")

    def export_single(self, model, heads, out_dir, progress: Optional[ProgressFn], pool,
                      quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        import hydravit_edge

        cfg = model.config
        merger = _Merger(model, quant.precision)
        # per-k graphs in the pool's workers; merged here in k order (the merge is quick)
        protos = pool.map(functools.partial(subnet_proto, quant=quant, shared=True), heads, progress,
                          label="onnx k={k}")
        with converting(self.name, "merging the per-k graphs", heads):
            for k, proto in protos.items():
                merger.add(k, proto)
            proto = merger.build(heads, f"hydravit-edge {hydravit_edge.__version__}", self.io.inputs(cfg, "single"),
                                 self.io.outputs(cfg))
            graphs = save_single(proto, out_dir / self.single_filename, merger.used, heads)
        data = data_filename(self.single_filename)
        return [self.record(cfg, k, "single", extra={"heads_input": _HEADS_INPUT, "heads_value": [k], "branch": f"k{k}",
                                                    "branch_local_bytes": merger.local_bytes[k],
                                                    "external_data": data, "lazy_graph": graphs[k]})
                for k in heads]

    # ---- runtime (validation runs the files with hydravit_edge.engines) ---------------
    def runtime_label(self) -> str:
        return f"onnxruntime {self.versions().get('onnxruntime')} (CPU)"

    def describe(self, out_dir, records) -> dict:
        import onnx

        details: dict[str, Any] = {}
        files = sorted({r.file for r in records})
        for f in files:
            m = onnx.load(str(Path(out_dir) / f), load_external_data=False)
            details[f] = {
                "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
                "ir_version": m.ir_version,
                "inputs": [i.name for i in m.graph.input],
                "outputs": [o.name for o in m.graph.output],
                "initializers": len(m.graph.initializer),
            }
        if any(r.mode == "single" for r in records):
            details["single"] = {
                "heads_input": {"name": _HEADS_INPUT, "dtype": "int64", "shape": [1],
                                "values": sorted(r.k for r in records)},
                "design": "If chain on heads == k; branch k = per-k graph whose weights are constant "
                          "Slice/Concat/Transpose expressions of the full parameters (stored once); "
                          "onnxruntime folds them at session creation",
            }
        return details
