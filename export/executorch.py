"""ExecuTorch target (XNNPACK delegate): per-k ``.pte`` files, or one ``.pte`` with a method per k.

Per-k (``executorch/k<k>.pte``, method ``forward``)
    ``torch.export.export(model.subnet(k))`` -> ``to_edge_transform_and_lower(...,
    partitioner=[XnnpackPartitioner()])`` -> ``to_executorch()``: the plain timm ViT, weights
    packed by XNNPACK when the method is loaded.  Its layer norms and attention are first
    rewritten with ops XNNPACK's partitioner takes (:mod:`.xnnpack_graph`), so the whole
    network runs in one XNNPACK partition instead of dozens with portable kernels between.

Single (``executorch/hydravit.pte``, methods ``forward_k3``, ``forward_k4``, ...)
    One program.  Each method is lowered on its own (``to_edge_transform_and_lower``, in
    parallel worker processes with ``--jobs``), serialized with ExecuTorch's edge-program serde,
    and one ``EdgeProgramManager`` of all methods emits the program.  Every
    method is ``model.forward_heads(x, k)`` traced over the FULL parameters, so all methods
    reference the same constant tensors; ExecuTorch stores a constant once per program
    (the emitter and XNNPACK's named-data store key tensors by content), so the file holds the
    weights once.  The slices are taken inside each method at run time and the linear layers run
    in XNNPACK with non-static weights
    (``XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)``): XNNPACK's static
    weights must be dense per-k tensors, and the k-subnetwork of a weight matrix ``W[:64k, :64k]``
    is never a contiguous piece of ``W``, so statically packed weights for every k would be
    stored once per k (about the sum of the per-k files, 4.5x for k=3..12).  The price is a
    slice and a weight packing per run (1.84x the per-k latency at k=3, 1.38x at k=12 on the 12-head
    model, see ``hydravit-edge export-bench``).  Giving only the largest k static weights does not help:
    its XNNPACK named data and the other methods' program constants are separate stores, so the
    weights are then stored twice.  Methods are loaded on demand; switching k is calling another
    method of the loaded program.

Precisions (:mod:`.executorch_quant`): ``fp16``, ``int8`` (XNNPACK quantizer, dynamic activations)
and ``int8-static`` (calibrated) as per-k files.  Single: fp32 (above), and int8 / int8-static as one
set of int8 weights for every k (``hydravit.weights``: the full weights quantized once per output
channel, plus k's int8 program ``hydravit.k<k>.pte`` whose named data the runtime cuts from it; an
int8-static program also holds the activation ranges calibrated for k; no program runs every k:
:mod:`.executorch_lazy`); fp16 the same way, ``hydravit.weights`` holding the full parameters in
float16 (:data:`SINGLE_FP16_NOTE`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

from hydravit_edge.errors import UsageError
from hydravit_edge.targets import MODES

from .base import Exporter, converting
from .executorch_trace import _quiet, _trace
from .errors import ExportError
from .progress import ProgressFn
from .quantize import FP32, QuantSpec
from .records import ArtifactRecord
from .registry import register_exporter

PER_K_METHOD = "forward"
#: shown with every single-program export (CLI summary, manifest): the trade-off the user chose
SINGLE_SPEED_NOTE = ("weights stored once, but XNNPACK packs the shared weights on every call: 1.4-2.2x the "
                     "latency of per-k files on CPU (12-head model); --mode per-k for speed")
#: the same, now that each k also has a program whose weights the runtime cuts from the shared ones
SINGLE_LAZY_NOTE = ("weights stored once; the methods of hydravit.pte slice them at run time (1.4-2.2x per-k latency), "
                    "hydravit.k<k>.pte run at per-k speed with named data the runtime cuts from hydravit.pte "
                    "(the toolkit's runtime does this by default: materialize='lazy')")
#: the single int8 artifact (the CLI summary, the manifest's notes)
SINGLE_INT8_LAZY_NOTE = (
    "one set of int8 weights for every k: hydravit.weights holds every weight matrix of the full model quantized "
    "once per output channel (int8 values + float32 scales) and the float32 parameters (biases, layer norms, class "
    "token, position embedding); hydravit.k<k>.pte is k's int8 program (XNNPACK, per-k speed; int8-static: with the "
    "activation ranges calibrated for k), which stores no parameter: the runtime cuts its named data from "
    "hydravit.weights (the leading block of each int8 matrix, the scales of k's rows); there is no program that runs every k (XNNPACK lowers int8 linear layers "
    "with static weights only), so the runtime loads k's program whether it materialises lazily or eagerly")
SINGLE_FP16_NOTE = (
    "one set of fp16 weights for every k: hydravit.weights holds every parameter of the full model in float16; "
    "hydravit.k<k>.pte is k's fp16 program (XNNPACK with static weights, per-k speed), which stores no parameter: "
    "the runtime cuts its named data from hydravit.weights; there is no fp16 program that runs every k (its methods "
    "would run XNNPACK linear layers with non-static fp16 weights: the partitioner's "
    "force_non_static_weights_for_f32_linear covers float32 only), so the runtime loads k's program whether it "
    "materialises lazily or eagerly")


def heads_program(model, k: int):
    """The k-subnetwork over the FULL parameters, as a module torch.export can trace.

    Takes the cuts of the model's slicing table and runs them through HydraViT's ``_mlp`` and
    ``forward_head_heads`` and the XNNPACK-partitionable layer norm and attention of
    :mod:`.xnnpack_graph` (the same math as ``_ln`` / ``_attention``).  One more change for XNNPACK: the patch embedding
    is a convolution with a static per-k weight and no bias (the bias is added after it):
    XNNPACK cannot create a convolution whose bias is non-static, which is what
    ``force_non_static_weights_for_f32_linear`` makes of it.  That weight is 3*P*P*64k floats,
    under 1% of the model per k.
    """
    import torch
    import torch.nn.functional as F

    from hydravit_edge.model import _LN_EPS

    from .xnnpack_graph import attention, layer_norm

    if not isinstance(model.blocks[0].attn.q_norm, torch.nn.Identity):
        raise ExportError("the ExecuTorch single program does not support q/k norm attention")
    hd = model.config.head_dim
    _, c = model._cuts(k)  # the slicing table resolved for k
    pe = model.patch_embed.proj

    def ln(norm, x):
        return layer_norm(x, model._take(norm.weight, c["features"]), model._take(norm.bias, c["features"]), _LN_EPS)

    def attn(a, x):
        w, b = a.qkv.weight, a.qkv.bias
        pieces = zip(c["qkv.weight"].pieces, c["qkv.bias"].pieces, strict=True)  # the q, k, v thirds
        q, kk, v = (F.linear(x, w[iw], b[ib]) for iw, ib in pieces)
        return F.linear(attention(q, kk, v, k, hd), model._take(a.proj.weight, c["proj.weight"]),
                        model._take(a.proj.bias, c["features"]))

    class HeadsK(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            weight, bias = model._take(pe.weight.detach(), c["patch.weight"]), model._take(pe.bias.detach(), c["features"])
            self.patch_weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
            self.register_buffer("patch_bias", bias.clone().view(1, -1, 1, 1))

        def forward(self, image):
            m = self.model
            x = F.conv2d(image, self.patch_weight, None, stride=pe.stride) + self.patch_bias
            x = x.flatten(2).transpose(1, 2)
            cls = m._take(m.cls_token, c["token"]).expand(x.shape[0], -1, -1)
            x = torch.cat((cls, x), dim=1) + m._take(m.pos_embed, c["pos_embed"])
            for blk in m.blocks:
                x = x + m._scale(blk.ls1, attn(blk.attn, ln(blk.norm1, x)), c)
                x = x + m._scale(blk.ls2, m._mlp(blk.mlp, ln(blk.norm2, x), c), c)
            return m.forward_head_heads(ln(m.norm, x), k)

    return HeadsK().eval()


def lower_programs(programs: dict):
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner (static weights), then ``to_executorch``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()]).to_executorch()


#: State-dict prefix of the shared parameters in a single-program method (``HeadsK.model``).
_SHARED = "model."


def lowered_method(model, k: int) -> bytes:
    """Method ``forward_k<k>`` of the single program, lowered to XNNPACK with non-static linear
    weights and serialized with ExecuTorch's edge-program serde (a picklable pool task; ``model``
    is the exported model, narrowed to the largest k).

    The shared parameters are left out (empty placeholders): :func:`assemble_program` puts
    the caller's tensors back, so ten methods do not carry ten copies of the weights.
    """
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.serde import serialize as serde

    name = f"forward_k{k}"
    program = _trace(heads_program(model, k), model.config, k)
    with converting("executorch", "to_edge_transform_and_lower", k), _quiet():
        edge = to_edge_transform_and_lower(
            {name: program}, partitioner=[XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)])
        ep = edge.exported_program(name)
        for key in list(ep.state_dict):
            if key.startswith(_SHARED):
                ep.state_dict[key] = torch.empty(0)
        buf = io.BytesIO()
        serde.save(ep, buf)
    return buf.getvalue()


def assemble_program(methods: dict, model):
    """One ExecuTorch program from methods lowered separately (:func:`lowered_method`).

    Each method's shared-parameter placeholders are replaced by ``model``'s tensors (the same
    tensor objects in every method, one copy in memory; the emitter stores them once).
    """
    from executorch.exir import EdgeProgramManager
    from executorch.exir.serde import serialize as serde

    params = {n: t.detach() for n, t in model.state_dict().items()}
    programs = {}
    for name, blob in methods.items():
        ep = serde.load(io.BytesIO(blob))
        shapes = {ep.graph_signature.inputs_to_parameters.get(n.name, ep.graph_signature.inputs_to_buffers.get(n.name)):
                  tuple(n.meta["val"].shape) for n in ep.graph.nodes if n.op == "placeholder" and "val" in n.meta}
        for key in list(ep.state_dict):
            if key.startswith(_SHARED):
                src = params.get(key[len(_SHARED):])
                if src is None or tuple(src.shape) != shapes.get(key):
                    raise ExportError(f"method {name}: parameter {key} {shapes.get(key)} does not match the model "
                                      f"being exported ({None if src is None else tuple(src.shape)})")
                ep.state_dict[key] = src
        programs[name] = ep
    return EdgeProgramManager(programs).to_executorch()


@register_exporter
class ExecuTorchExporter(Exporter):
    name = "executorch"
    export_requires = ("executorch",)
    packages = ("executorch", "torch")
    entry_kind = "method"
    tolerance = 1e-4
    #: lowering costs ~20 s per k even for the small digits model (ExecuTorch's passes scale with
    #: the number of graph nodes, not with the weights), so two or more k always go to workers
    parallel_min_params = 0
    #: fp16, int8 and int8-static (:mod:`.executorch_quant`), per-k and single
    precisions = {"fp32": MODES, "fp16": MODES, "int8": MODES, "int8-static": MODES}

    def entry_name(self, k: int) -> str:
        return f"forward_k{k}"

    def quantization_info(self, quant: QuantSpec) -> Optional[dict[str, Any]]:
        from .executorch_quant import quantization_info

        return quantization_info(quant) if quant.quantized else None

    def export_k(self, model, k, out_dir, quant: QuantSpec = FP32) -> ArtifactRecord:
        from .executorch_quant import program_for
        from .xnnpack_graph import xnnpack_friendly  # one XNNPACK partition: see its docstring

        cfg = model.config
        program = program_for(xnnpack_friendly(model.subnet(k)), cfg, k, quant)
        with converting(self.name, "to_edge_transform_and_lower", k), _quiet():
            prog = lower_programs({PER_K_METHOD: program})
        (Path(out_dir) / self.per_k_filename(k)).write_bytes(prog.buffer)
        return self.record(cfg, k, "per-k", entry=PER_K_METHOD,
                           extra={"precision": quant.precision} if quant.quantized else {})

    def export_single(self, model, heads, out_dir, progress: Optional[ProgressFn], pool,
                      quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        if quant.precision in ("fp16", "int8", "int8-static"):
            return self.export_single_shared(model, heads, out_dir, pool, quant)
        if quant.quantized:  # export() refuses it first; never write an fp32 program under another precision
            raise UsageError(self.unsupported(quant.precision, "single") or f"no single {quant.precision} program")
        # Each method is lowered on its own (in the pool's workers) and comes back serialized; one
        # EdgeProgramManager then emits them as one program, storing the shared weights once.
        parts = pool.map(lowered_method, heads, progress, label="executorch k={k}")
        with converting(self.name, "EdgeProgramManager.to_executorch", heads), _quiet():
            prog = assemble_program({self.entry_name(k): parts[k] for k in heads}, model)
        (out_dir / self.single_filename).write_bytes(prog.buffer)
        # and per k a program with static XNNPACK weights whose named data the runtime cuts from
        # hydravit.pte (lazy materialisation, :mod:`.executorch_lazy`): per-k speed, weights stored once
        from .executorch_lazy import lazy_program, write_lazy

        lazy = pool.map(lazy_program, heads, None, label="executorch k={k} (named data)")
        with converting(self.name, "named-data layout", heads):
            layouts = write_lazy(model, heads, out_dir, out_dir / self.single_filename, lazy)
        return [self.record(model.config, k, "single", entry=self.entry_name(k),
                            extra={"method": self.entry_name(k), "lazy_graph": layouts[k]["program"],
                                   "lazy_entry": layouts[k]["method"], "lazy_data": layouts[k]},
                            notes=[SINGLE_LAZY_NOTE])
                for k in heads]

    def export_single_shared(self, model, heads, out_dir, pool, quant: QuantSpec) -> list[ArtifactRecord]:
        """The single fp16 / int8 artifact (:mod:`.executorch_lazy`): ``hydravit.weights`` and per k its
        program at that precision and its .ptd head; the records' file is ``hydravit.weights``, the entry
        k's program's method (a session on that file loads k's program)."""
        import functools

        from .executorch_lazy import METHOD, WEIGHTS_FILE, lazy_program, write_lazy_quantized

        parts = pool.map(functools.partial(lazy_program, quant=quant), heads, None,
                         label=f"executorch {quant.precision} k={{k}} (named data)")
        with converting(self.name, f"{quant.precision} named-data layout", heads):
            layouts, _ = write_lazy_quantized(model, heads, out_dir, parts, own_ok=quant.precision == "int8-static",
                                              precision=quant.precision)
        out = []
        for k in heads:
            rec = self.record(model.config, k, "single", entry=METHOD,
                              extra={"precision": quant.precision, "lazy_graph": layouts[k]["program"],
                                     "lazy_entry": layouts[k]["method"], "lazy_data": layouts[k]},
                              notes=[SINGLE_FP16_NOTE if quant.precision == "fp16" else SINGLE_INT8_LAZY_NOTE])
            rec.file = WEIGHTS_FILE
            out.append(rec)
        return out

    # ---- runtime (validation runs the files with hydravit_edge.engines) ---------------
    def runtime_label(self) -> str:
        return f"executorch {self.versions().get('executorch')} runtime (XNNPACK)"

    def describe(self, out_dir, records) -> dict:
        details: dict[str, Any] = {"delegate": "XnnpackBackend", "batch": 1}
        layouts = [r.extra["lazy_data"] for r in records if r.mode == "single" and (r.extra or {}).get("lazy_data")]
        if layouts and layouts[0].get("weights_format") == "raw":  # the single fp16 / int8 artifact
            tensors: dict[str, Any] = {}
            for lay in layouts:
                for seg in lay["segments"]:
                    if "cut" in seg:
                        key = seg["cut"] + (":scale" if seg.get("quant") == "scale" else "")
                        tensors[key] = {"offset": seg["at"], "shape": seg["shape"], "dtype": seg.get("dtype", "float32")}
            details["single"] = {
                "weights_file": layouts[0]["weights"],
                "programs": {str(r.k): r.extra["lazy_graph"] for r in sorted(records, key=lambda r: r.k)},
                "method": layouts[0]["method"],
                "weights": ("every parameter of the full model in float16; each k's program uses their cut "
                            "(extra.lazy_data)" if records[0].extra.get("precision") == "fp16" else
                            "every Linear / Conv2d weight of the full model quantized once per output channel "
                            "(hydravit_edge.precision.quantize_rows: int8 values, symmetric, float32 scale per row), "
                            "the other parameters in float32; each k's program uses their cut (extra.lazy_data)"),
                "tensors": dict(sorted(tensors.items(), key=lambda kv: kv[1]["offset"])),
            }
            details["precision"] = records[0].extra.get("precision", "int8")
            return details
        if any(r.mode == "single" for r in records):
            details["single"] = {
                "methods": [r.entry for r in sorted(records, key=lambda r: r.k)],
                "weights": "full parameters stored once as program constants; each method slices them at run time "
                           "and runs XNNPACK linear layers with non-static weights",
            }
        else:
            details["method"] = PER_K_METHOD
        precision = next((r.extra.get("precision") for r in records if r.extra.get("precision")), None)
        if precision:
            details["precision"] = precision
            details["single_mode"] = SINGLE_FP16_NOTE if precision == "fp16" else SINGLE_INT8_LAZY_NOTE
        return details
