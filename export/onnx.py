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
exporter pre-transposes MatMul weights); each parameter slice is expressed with the slice
rules of :meth:`HydraViT.subnet_state_dict`, and the slices are checked against it before use.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .base import ArtifactRecord, ExportError, Exporter, ProgressFn, TensorSpec, register_exporter

#: Initializers of a per-k graph that match no parameter may stay inside their branch
#: (shape constants and the like) only up to this many bytes.
_LOCAL_LIMIT = 1 << 16
_HEADS_INPUT = "heads"


def _slice_plan(name: str, full_shape: Sequence[int], cfg, k: int):
    """How the k-subnetwork's ``name`` is cut from the full parameter.

    Returns ``(pieces, concat_axis)``; ``pieces`` is a list of ``(starts, ends, axes)`` and the
    pieces are concatenated along ``concat_axis`` when there are several.  Mirrors
    ``HydraViT.subnet_state_dict`` (and is checked against it).
    """
    e, h, full = cfg.width(k), cfg.mlp_hidden(k), cfg.embed_dim
    nd = len(full_shape)
    if name in ("cls_token", "pos_embed"):
        return [([0], [e], [nd - 1])], None
    if name.startswith("patch_embed.proj."):
        return [([0], [e], [0])], None
    if name.endswith(".qkv.weight"):
        return [([i * full, 0], [i * full + e, e], [0, 1]) for i in range(3)], 0
    if name.endswith(".qkv.bias"):
        return [([i * full], [i * full + e], [0]) for i in range(3)], 0
    if name.endswith("mlp.fc1.weight"):
        return [([0, 0], [h, e], [0, 1])], None
    if name.endswith("mlp.fc1.bias"):
        return [([0], [h], [0])], None
    if name.endswith("mlp.fc2.weight"):
        return [([0, 0], [e, h], [0, 1])], None
    if name == "head.weight":
        return [([0], [e], [1])], None
    if name == "head.bias" or name.startswith("head_k."):
        return [], None
    if nd == 2:
        return [([0, 0], [e, e], [0, 1])], None
    if nd == 1:
        return [([0], [e], [0])], None
    raise ExportError(f"ONNX export does not know how to slice parameter {name} {tuple(full_shape)}")


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

    x = torch.zeros(1, config.in_chans, config.img_size, config.img_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        with _quiet(), torch.no_grad():
            prog = torch.onnx.export(module.eval(), (x,), None, input_names=["image"], output_names=["logits"],
                                     dynamo=True, optimize=True, verbose=False, opset_version=opset,
                                     dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export / translation failures
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return prog.model_proto


def subnet_proto(model, k: int):
    """The per-k ONNX graph of ``model.subnet(k)`` (a picklable :class:`~.parallel.ExportPool` task)."""
    return export_onnx_proto(model.subnet(k), model.config)


def _save(proto, path: Path) -> None:
    import onnx

    if proto.ByteSize() > 2_000_000_000:  # protobuf limit: weights go to an external data file
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


class _Merger:
    """Builds the single multi-k graph from per-k graphs, one branch at a time."""

    def __init__(self, model) -> None:
        self.cfg = model.config
        self.full = {n: t.detach().cpu().numpy() for n, t in model.state_dict().items()}
        self.model = model
        self.used: dict[str, np.ndarray] = {}  # top-level initializers (full parameters)
        self.branches: dict[int, Any] = {}
        self.local_bytes: dict[int, int] = {}
        self.opset = None
        self.ir_version = None
        self.functions: dict[tuple[str, str], Any] = {}

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
        # value -> (parameter, transposed?) for every parameter of the k-subnetwork
        index: dict[bytes, tuple[str, bool]] = {}
        for n, a in sub_sd.items():
            index.setdefault(_digest(a), (n, False))
            if a.ndim == 2:
                index.setdefault(_digest(a.T), (n, True))
        plans = {}
        for n, a in sub_sd.items():
            pieces, axis = _slice_plan(n, self.full[n].shape, self.cfg, k)
            if not np.array_equal(_apply_plan(self.full[n], pieces, axis), a):
                raise ExportError(f"slice rule for {n} at k={k} disagrees with HydraViT.subnet_state_dict")
            plans[n] = (pieces, axis)

        rename: dict[str, str] = {"image": "image"}
        nodes, inits = [], []
        local = 0
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            hit = index.get(_digest(arr)) if arr.dtype == np.float32 else None
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
                local += len(init.raw_data) or init.ByteSize()
                t = onnx.TensorProto()
                t.CopyFrom(init)
                t.name = pre + init.name
                inits.append(t)
                rename[init.name] = t.name
                continue
            pname, transposed = hit
            self.used[pname] = self.full[pname]
            pieces, axis = plans[pname]
            cur = pname
            out = pre + init.name
            if not pieces:  # used whole (shared classifier bias): a full-range slice, for the same reason
                pieces = [([0], [self.full[pname].shape[0]], [0])]
            # Always a Slice, even for the full tensor: onnxruntime then folds every branch weight into a
            # branch-local constant, so each branch is optimised exactly like the per-k graph (e.g. the
            # NCHWc conv transform only sees constants of its own graph) and the top-level initializers
            # become unused after folding and are released.
            if True:
                parts = []
                for j, (st, en, ax) in enumerate(pieces):
                    b = f"{out}/slice{j}"
                    for suffix, v in (("starts", st), ("ends", en), ("axes", ax)):
                        inits.append(numpy_helper.from_array(np.asarray(v, dtype=np.int64), f"{b}/{suffix}"))
                    nodes.append(helper.make_node("Slice", [pname, f"{b}/starts", f"{b}/ends", f"{b}/axes"], [b], name=b))
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
                inits.append(numpy_helper.from_array(np.asarray(list(init.dims), dtype=np.int64), f"{out}/shape"))
                nodes.append(helper.make_node("Reshape", [cur, f"{out}/shape"], [f"{out}/r"], name=f"{out}/r"))
                cur = f"{out}/r"
            rename[init.name] = cur

        def rn(name: str) -> str:
            if not name:
                return name
            return rename.get(name, pre + name)

        for node in g.node:
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
        self.branches[k] = helper.make_graph(nodes, f"k{k}", [], [out_vi], initializer=inits, value_info=value_info)
        self.local_bytes[k] = local

    def build(self, ks: Sequence[int], producer: str):
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
        graph = helper.make_graph(
            top_nodes, "hydravit",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", cfg.in_chans, cfg.img_size, cfg.img_size]),
             helper.make_tensor_value_info(_HEADS_INPUT, TensorProto.INT64, [1])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg.num_classes])],
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
    title = "ONNX"
    suffix = ".onnx"
    export_requires = ("onnx", "onnxscript")
    runtime_requires = ("onnxruntime",)
    packages = ("onnx", "onnxscript", "onnxruntime", "torch")
    entry_kind = "graph+input"
    tolerance = 1e-4

    def _specs(self, cfg, single: bool):
        inputs = [TensorSpec("image", ["batch", cfg.in_chans, cfg.img_size, cfg.img_size], "float32",
                             "normalised RGB image, NCHW")]
        if single:
            inputs.append(TensorSpec(_HEADS_INPUT, [1], "int64", "head count k of the subnetwork to run"))
        return inputs, [TensorSpec("logits", ["batch", cfg.num_classes], "float32", "class scores (pre-softmax)")]

    def export_k(self, model, k, out_dir) -> ArtifactRecord:
        self.require("export")
        _save(subnet_proto(model, k), Path(out_dir) / self.per_k_filename(k))
        inputs, outputs = self._specs(model.config, False)
        return ArtifactRecord(k, self.per_k_filename(k), None, "graph", "per-k", inputs, outputs)

    def export(self, model, heads, out_dir, mode, progress: Optional[ProgressFn] = None, pool=None) -> list[ArtifactRecord]:
        self.require("export")
        import hydravit_edge

        if mode == "per-k":
            return self.export_per_k(model, heads, out_dir, progress, pool)
        cfg = model.config
        pool, narrowed = self.single_pool(model, heads, pool)
        merger = _Merger(narrowed)
        # per-k graphs in the pool's workers; merged here in k order (the merge is quick)
        for k, proto in pool.map(subnet_proto, heads, progress, label="onnx k={k}").items():
            merger.add(k, proto)
        proto = merger.build(heads, f"hydravit-edge {hydravit_edge.__version__}")
        _save(proto, Path(out_dir) / self.single_filename)
        inputs, outputs = self._specs(cfg, True)
        return [ArtifactRecord(k, self.single_filename, None, "graph+input", "single", inputs, outputs,
                               extra={"heads_input": _HEADS_INPUT, "heads_value": [k], "branch": f"k{k}",
                                      "branch_local_bytes": merger.local_bytes[k]})
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
