"""TFLite (LiteRT) target: per-k flatbuffers and one flatbuffer with a signature per k.

Conversion uses ``litert-torch`` (heavy: jax, transformers; the ``tflite`` extra), runtime
checks use ``ai-edge-litert``'s ``Interpreter``.  Both are imported only inside methods, so
``hydravit_edge`` imports without them and a missing one names the extra to install.

Per-k (``tflite/k<k>.tflite``)
    ``litert_torch.convert`` of ``model.subnet(k)`` (the plain timm ViT), default signature
    ``serving_default``, input ``image`` float32 ``[1, 3, H, W]`` (NCHW), output ``logits``
    float32 ``[1, classes]``.  Weights are constants the converter folds and XNNPACK prepacks.

Single (``tflite/hydravit.tflite``)
    One flatbuffer with one signature per k (``k3``, ...), each ``model.forward_heads(image,
    k)``, same input/output names.  All signatures reference the SAME full-size weight
    buffers and slice them with ``SLICE`` ops: the converter runs with
    ``lightweight_conversion=True`` (weights become resource constants that MLIR does not
    constant-fold) and ``runtime_constant_folding=False``, and litert-torch's cross-signature
    constant cache maps each parameter to one buffer.  Pick k with
    ``interpreter.get_signature_runner("k3")``; all signatures live in one interpreter, so
    switching k reloads nothing.

    Cost: the sliced weights are run-time tensors, so XNNPACK cannot prepack them and the
    fully-connected layers run with dynamic weights; on CPU the single file is markedly
    slower than the per-k files (measured figures in the README).  Use per-k files where
    latency matters more than storage.

    The exporter measures the weight bytes of the file; should a litert-torch version store
    the weights per signature (more than 1.10x the parameters), single mode falls back to
    per-k files and says so in the records' notes and the manifest.

Precisions (per-k files; the single file is fp32, :data:`SINGLE_QUANT_NOTE` says why)
    ``fp16``: litert-torch's ``quant_recipes.full_fp16_recipe()`` (float16 weights, which
    XNNPACK dequantizes when it loads them; computed in float32).  ``int8``:
    ``quant_recipes.full_dynamic_recipe()`` (int8 weights per output channel, activations of
    every fully-connected / convolution quantized per call: dynamic range).  Both are
    litert-torch's own conversion (``convert(quant_config=...)``, run by ai-edge-quantizer).
    ``int8-static``: litert-torch's static PT2E path makes the file's ``image`` and ``logits``
    int8 (it has no float-IO option), so the fp32 file is quantized with ai-edge-quantizer (the
    quantizer litert-torch's recipes run on): static int8 (``add_static_config``, ranges from
    the calibration images) for every op of the transformer blocks, dynamic int8 for the patch
    embedding and the classifier, so the file still takes float32 ``image`` and returns float32
    ``logits``.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from hydravit_edge.errors import MissingDependencyError, UsageError
from hydravit_edge.targets import MODES, target

from .base import Exporter, converting, stored_params
from .errors import ExportError
from .progress import ProgressFn
from .quantize import FP32, HeldOutRef, QuantSpec
from .records import ArtifactRecord, Reference, ValidationResult
from .registry import register_exporter
from .specs import IMAGE, LOGITS, IOSpec

#: weights of the single file may exceed the parameters of its largest k by at most this factor.
SINGLE_WEIGHT_FACTOR = 1.10
#: constants of at least this many bytes become resource constants (not folded) in single mode.
_RESOURCE_THRESHOLD_BYTES = 1024
_EXTRA = target("tflite").extra

#: shown with every shared-weight single export (CLI summary, manifest)
SINGLE_SPEED_NOTE = ("weights stored once, but sliced at run time so XNNPACK cannot prepack them: 1.5-4x the "
                     "latency of per-k files on CPU (12-head model); --mode per-k for speed")
#: why the single file is fp32 only (the error of --mode single --precision fp16/int8...)
SINGLE_QUANT_NOTE = (
    ": the single TFLite file is fp32 only: its signatures share full-size weight buffers that SLICE ops cut at run "
    "time, and litert-torch's quantization (its recipes run by ai-edge-quantizer, and PT2E) quantizes only constant "
    "weight operands of FULLY_CONNECTED / CONV_2D, so it finds none and the file stays float32 (measured with "
    "litert-torch 0.10); a shared int8 file would need int8 full-size buffers with per-channel scales, SLICE of "
    "both and a DEQUANTIZE per signature, which the converter does not produce; use --mode per-k")
#: the block of a litert-torch tensor name that int8-static quantizes statically (the transformer blocks)
_STATIC_SCOPE = ".*Sequential_blocks.*"
#: TFLite tensor types (schema ``TensorType``) of weight buffers, by name
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


def _import(module: str, purpose: str):
    import importlib
    import logging

    pytree = logging.getLogger("torch.utils._pytree")  # a deprecation notice from a litert-torch dependency
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        with _quiet():
            return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"TFLite {purpose} needs the Python package '{module}' ({exc}); "
            f"install it with: pip install 'hydravit-edge[{_EXTRA}]'") from exc
    finally:
        pytree.setLevel(level)


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet():
    """Silence Python-level chatter and the C++ INFO logs litert-torch's libraries write straight
    to file descriptor 2 (oneDNN notices, op counts); the captured text is replayed on failure."""
    import sys
    import tempfile

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
            tempfile.TemporaryFile(mode="w+b") as sink:
        warnings.simplefilter("ignore")
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (embedded interpreters)
            yield
            return
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                sink.seek(0)
                text = sink.read().decode(errors="replace")
                if text.strip():
                    sys.stderr.write(text[-4000:])


def _modules():
    import torch

    class Program(torch.nn.Module):
        """``image`` -> ``{"logits": ...}`` (the dict names the TFLite output)."""

        def __init__(self, model, k: Optional[int] = None):
            super().__init__()
            self.model = model
            self.k = k

        def forward(self, image):
            if self.k is None:
                return {LOGITS: self.model(image)}
            return {LOGITS: self.model.forward_heads(image, self.k)}

    return Program


# =========================================================================== precisions

def quant_config(quant: QuantSpec):
    """litert-torch's ``quant_config`` for ``convert`` at ``quant``'s precision (None: fp32 and int8-static,
    which is quantized after conversion: :func:`quantize_static`)."""
    if quant.precision not in ("fp16", "int8"):
        return None
    recipes = _import("litert_torch.generative.quantize.quant_recipes", "export")
    return recipes.full_fp16_recipe() if quant.precision == "fp16" else recipes.full_dynamic_recipe()


def quantize_static(path: Path, quant: QuantSpec, signature: str, input_name: str) -> None:
    """int8-static of the fp32 file at ``path``, in place, with ai-edge-quantizer: the transformer blocks
    static int8 (ranges from ``quant.images()``), the remaining fully-connected / convolution weights
    dynamic int8; ``image`` and ``logits`` stay float32."""
    import numpy as np

    aeq = _import("ai_edge_quantizer.quantizer", "export")
    qtyping = _import("ai_edge_quantizer.qtyping", "export")
    images = quant.images()
    q = aeq.Quantizer(Path(path).read_bytes())
    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    q.add_dynamic_config(".*", ops, 8)  # later rules take precedence: the blocks are static
    q.add_static_config(_STATIC_SCOPE, ops, 8, 8)
    data = {signature: [{input_name: np.ascontiguousarray(x[None], dtype=np.float32)} for x in images]}
    result = q.quantize(q.calibrate(data, num_threads=max(1, min(8, os.cpu_count() or 1))),
                        enable_progress_report=False)
    out = bytes(result.quantized_model)
    if "QUANTIZE" not in op_names(out):  # static int8 enters the blocks through a QUANTIZE op
        raise ExportError(f"ai-edge-quantizer quantized no op statically: no tensor name matched {_STATIC_SCOPE!r} "
                          "(litert-torch names tensors after the module path; did it change?)")
    Path(path).write_bytes(out)


def op_names(data: bytes) -> set[str]:
    """The builtin operators a TFLite flatbuffer uses (``{"FULLY_CONNECTED", "QUANTIZE", ...}``)."""
    schema = _import("ai_edge_litert.schema_py_generated", "inspection")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(data, 0)
    out = set()
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        out.add(names.get(max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())), "?"))
    return out


def quantized_params(module) -> int:
    """Weights of the fully-connected layers and convolutions of ``module``: what the quantized precisions store
    as int8 / float16."""
    import torch

    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))


# =========================================================================== flatbuffer inspection

def inspect_tflite(path: Path) -> dict[str, Any]:
    """Signatures (inputs, outputs, subgraph), and weight bytes: per signature (buffers its
    subgraph references), for the whole file (every buffer once) and per tensor type of the
    buffers (``weight_bytes_by_dtype``: "float32", "float16", "int8", ...).  Pure flatbuffer parsing."""
    schema = _import("ai_edge_litert.schema_py_generated", "inspection")
    data = Path(path).read_bytes()
    try:
        model = schema.Model.GetRootAs(data, 0)
        n_buf = model.BuffersLength()
    except Exception as exc:
        raise ValueError(f"not a TFLite flatbuffer ({type(exc).__name__}: {exc})") from None
    if data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (missing TFL3 identifier)")
    buf_bytes = []
    for i in range(n_buf):
        b = model.Buffers(i)
        n = b.DataLength() or (b.Size() if b.Offset() > 1 else 0)
        if b.Offset() > 1 and b.Offset() + b.Size() > len(data):
            raise ValueError(f"buffer {i} points past the end of the file")
        buf_bytes.append(int(n))

    def dec(s):
        return s.decode() if isinstance(s, bytes) else s

    kinds: dict[int, str] = {}
    for g in range(model.SubgraphsLength()):
        sg = model.Subgraphs(g)
        for j in range(sg.TensorsLength()):
            t = sg.Tensors(j)
            kinds.setdefault(int(t.Buffer()), _TENSOR_TYPES.get(int(t.Type()), str(t.Type())))
    by_dtype: dict[str, int] = {}
    for b, n in enumerate(buf_bytes):
        if n and b in kinds:
            by_dtype[kinds[b]] = by_dtype.get(kinds[b], 0) + n
    sigs: dict[str, dict[str, Any]] = {}
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        sg = model.Subgraphs(sd.SubgraphIndex())

        def spec(tm):
            t = sg.Tensors(tm.TensorIndex())
            return {"name": dec(tm.Name()), "shape": [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []}

        used = {sg.Tensors(j).Buffer() for j in range(sg.TensorsLength())}
        sigs[dec(sd.SignatureKey())] = {
            "subgraph": int(sd.SubgraphIndex()),
            "inputs": [spec(sd.Inputs(j)) for j in range(sd.InputsLength())],
            "outputs": [spec(sd.Outputs(j)) for j in range(sd.OutputsLength())],
            "weight_bytes": int(sum(buf_bytes[b] for b in used if 0 < b < n_buf)),
        }
    return {"signatures": sigs, "weight_bytes_total": int(sum(buf_bytes)), "file_bytes": len(data),
            "weight_bytes_by_dtype": dict(sorted(by_dtype.items()))}


def _precision_problems(extra: dict, by_dtype: dict[str, int], total: int) -> list[str]:
    """What is wrong with a file's weight bytes for the record's precision (``extra``: ``weight_params``,
    ``precision``, ``quantized_params``): all weights present, and the layers' weights int8 / float16."""
    params = int(extra["weight_params"])
    precision = extra.get("precision", "fp32")
    if precision == "fp32":
        least, low = 4 * params, None
    else:
        n = int(extra.get("quantized_params", 0))
        kind, width = ("float16", 2) if precision == "fp16" else ("int8", 1)
        least = width * n + 4 * (params - n)
        low = (kind, width * n)
    problems = []
    if total < 0.9 * least:
        problems.append(f"the file holds {total} weight bytes, expected about {least} (weights missing)")
    if low and by_dtype.get(low[0], 0) < 0.9 * low[1]:
        problems.append(f"{by_dtype.get(low[0], 0)} bytes of {low[0]} weights, expected about {low[1]} (the fully-"
                        f"connected and convolution weights at {precision})")
    return problems


# =========================================================================== exporter

@register_exporter
class TFLiteExporter(Exporter):
    name = "tflite"
    export_requires = ("litert_torch", "ai_edge_litert")
    packages = ("litert-torch", "ai-edge-litert", "torch")
    entry_kind = "signature"
    tolerance = 1e-4
    per_k_signature = "serving_default"
    #: fp16 / int8 / int8-static as per-k files (see the module docstring); the single file is fp32
    precisions = {"fp32": MODES, "fp16": ("per-k",), "int8": ("per-k",), "int8-static": ("per-k",)}
    precision_notes = {"fp16": SINGLE_QUANT_NOTE, "int8": SINGLE_QUANT_NOTE, "int8-static": SINGLE_QUANT_NOTE}

    def entry_name(self, k: int) -> Optional[str]:
        return f"k{k}"

    def quantization_info(self, quant: QuantSpec) -> Optional[dict[str, Any]]:
        if quant.precision == "fp16":
            return {"tool": "litert_torch.convert(quant_config=quant_recipes.full_fp16_recipe())",
                    "scheme": "float16 weights of every fully-connected / convolution (FLOAT_CAST, weight only); "
                              "the interpreter dequantizes them and computes in float32; float32 image and logits",
                    "activations": "float32 (XNNPACK dequantizes the float16 weights when it loads them)"}
        if quant.precision == "int8":
            return {"tool": "litert_torch.convert(quant_config=quant_recipes.full_dynamic_recipe())",
                    "scheme": "int8 weights per output channel (symmetric) of every fully-connected / convolution, "
                              "activations quantized per call (dynamic range); each k from its own weights"}
        if quant.precision == "int8-static":
            return {"tool": "ai_edge_quantizer.Quantizer (add_static_config / calibrate / quantize) on the "
                            "litert-torch fp32 file",
                    "scheme": "static int8 (8-bit activations with calibrated ranges, int8 weights per output "
                              f"channel) for every op of the transformer blocks ({_STATIC_SCOPE}); dynamic int8 for "
                              "the patch embedding and classifier; float32 image and logits",
                    "activations": "int8, ranges fixed by calibration images (static), in the transformer blocks; "
                                   "float32 around the patch embedding and classifier (dynamic int8 weights)"}
        return None

    def _convert(self, build, path: Path, heads, **kwargs) -> None:
        """``build()`` -> litert_torch Converter; convert and write ``path``."""
        with converting(self.name, "litert-torch convert", heads), \
                _env(LITERT_TORCH_SHOW_PROGRESS="n", **kwargs.pop("env", {})), _quiet():
            edge = build().convert(**kwargs)
            edge.export(str(path))

    def export_k(self, model, k, out_dir, quant: QuantSpec = FP32) -> ArtifactRecord:
        litert_torch = _import("litert_torch", "export")
        cfg = model.config
        example = {IMAGE: IOSpec.example(cfg)}
        vit = model.subnet(k).eval()
        Program = _modules()
        path = Path(out_dir) / self.per_k_filename(k)
        qc = quant_config(quant)
        self._convert(lambda: litert_torch.signature(self.per_k_signature, Program(vit).eval(), sample_kwargs=example),
                      path, k, **({"quant_config": qc} if qc is not None else {}))
        if quant.precision == "int8-static":
            with converting(self.name, "ai-edge-quantizer static int8", k), _quiet():
                quantize_static(path, quant, self.per_k_signature, IMAGE)
        extra: dict[str, Any] = {"signature": self.per_k_signature,
                                 "weight_params": sum(p.numel() for p in vit.parameters())}
        if quant.quantized:
            extra.update(precision=quant.precision, quantized_params=quantized_params(vit))
        return self.record(cfg, k, "per-k", extra=extra)

    def export_single(self, model, heads, out_dir, progress: Optional[ProgressFn], pool,
                      quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        if quant.quantized:  # export() refuses it first; never write an fp32 file under another precision
            raise UsageError(self.unsupported(quant.precision, "single") or f"no single {quant.precision} file")
        litert_torch = _import("litert_torch", "export")
        cfg = model.config
        Program = _modules()
        example = {IMAGE: IOSpec.example(cfg)}
        n_params = stored_params(model)

        def build():
            conv = litert_torch.Converter()
            for k in heads:
                conv.signature(self.entry_name(k), Program(model, k).eval(), sample_kwargs=example)
            return conv

        path = out_dir / self.single_filename
        self._convert(build, path, heads, lightweight_conversion=True, runtime_constant_folding=False,
                      env={"RESOURCE_CONSTANT_NUMEL_THRESHOLD": str(_RESOURCE_THRESHOLD_BYTES)})
        info = inspect_tflite(path)
        limit = SINGLE_WEIGHT_FACTOR * 4 * n_params + 65536
        if info["weight_bytes_total"] <= limit:
            if progress:
                for k in heads:
                    progress(f"tflite k={k}")
            return [self.record(cfg, k, "single", entry=self.entry_name(k),
                                extra={"signature": self.entry_name(k), "weight_params": n_params,
                                       "weights": "shared full-size buffers, sliced at run time"},
                                notes=[SINGLE_SPEED_NOTE])
                    for k in heads]
        path.unlink()
        note = (f"litert-torch {self.versions().get('litert-torch')} stored the weights of each signature separately "
                f"({info['weight_bytes_total']} bytes for {4 * n_params} bytes of parameters), so the single "
                "TFLite file was replaced by per-k files")
        records = self.export_per_k(model, heads, out_dir, progress, pool)
        for r in records:
            r.notes.append(note)
        return records

    # ---- runtime (validation runs the files with hydravit_edge.engines) ---------------
    def runtime_label(self) -> str:
        return f"ai-edge-litert {self.versions().get('ai-edge-litert')} (Interpreter, XNNPACK)"

    def _structure(self, path: Path, record: ArtifactRecord, cache: dict) -> ValidationResult:
        key = str(path)
        if key not in cache:
            try:
                cache[key] = inspect_tflite(path)
            except MissingDependencyError:
                raise
            except Exception as exc:
                cache[key] = str(exc)
        info = cache[key]
        if isinstance(info, str):
            return ValidationResult.structural(self.name, record.k, False, {"file": record.file}, info)
        sig_name = record.entry or record.extra.get("signature") or self.per_k_signature
        sig = info["signatures"].get(sig_name)
        details: dict[str, Any] = {"signature": sig_name, "signatures": sorted(info["signatures"]),
                                   "weight_bytes_total": info["weight_bytes_total"], "file_bytes": info["file_bytes"]}
        if sig is None:
            return ValidationResult.structural(self.name, record.k, False, details,
                                               f"signature '{sig_name}' missing (has {', '.join(sorted(info['signatures']))})")
        problems = []
        details.update(inputs=sig["inputs"], outputs=sig["outputs"], weight_bytes=sig["weight_bytes"])
        for want, got, what in ((record.inputs, sig["inputs"], "input"), (record.outputs, sig["outputs"], "output")):
            if [(t.name, list(t.shape)) for t in want] != [(g["name"], g["shape"]) for g in got]:
                problems.append(f"{what}s {got} != expected {[t.to_dict() for t in want]}")
        params = record.extra.get("weight_params")
        if params:
            need = 4 * params
            details["expected_weight_bytes"] = need
            details["weight_bytes_by_dtype"] = info["weight_bytes_by_dtype"]
            if info["weight_bytes_total"] > SINGLE_WEIGHT_FACTOR * need + 65536:
                problems.append(f"weights take {info['weight_bytes_total']} bytes, more than {SINGLE_WEIGHT_FACTOR}x "
                                f"the {need} bytes of the parameters (not stored once)")
            problems += _precision_problems(record.extra, info["weight_bytes_by_dtype"], info["weight_bytes_total"])
        return ValidationResult.structural(self.name, record.k, not problems, details, "; ".join(problems) or None)

    def validate(self, out_dir, records, reference: Reference, progress: Optional[ProgressFn] = None,
                 quant: QuantSpec = FP32, heldout: Optional[HeldOutRef] = None):
        """Structure (signatures, names, shapes, weight bytes and their data types) per k, then the runtime
        check (ai-edge-litert in its own process, vs PyTorch: max abs error, or the precision's rule)."""
        cache: dict[str, Any] = {}
        if self.missing("runtime"):
            structure = [ValidationResult.skipped(self.name, r.k, self.missing("runtime"), check="structure")
                         for r in records]
        else:
            structure = [self._structure(Path(out_dir) / r.file, r, cache) for r in records]
        return structure + super().validate(out_dir, records, reference, progress, quant, heldout)

    def describe(self, out_dir, records) -> dict[str, Any]:
        details: dict[str, Any] = {"delegate": "XNNPACK (ai-edge-litert default CPU delegate)", "files": {}}
        precision = next((r.extra.get("precision") for r in records if r.extra.get("precision")), None)
        if precision:
            details["precision"] = precision
            details["single_mode"] = SINGLE_QUANT_NOTE[2:]
        for f in sorted({r.file for r in records}):
            try:
                info = inspect_tflite(Path(out_dir) / f)
            except Exception as exc:
                details["files"][f] = {"error": str(exc)}
                continue
            entry = {"signatures": sorted(info["signatures"]), "weight_bytes": info["weight_bytes_total"],
                     "weight_bytes_by_dtype": info["weight_bytes_by_dtype"],
                     "weight_bytes_per_signature": {n: s["weight_bytes"] for n, s in info["signatures"].items()}}
            if len(info["signatures"]) > 1:
                entry["weight_bytes_without_sharing"] = sum(entry["weight_bytes_per_signature"].values())
            details["files"][f] = entry
        if any(r.mode == "single" for r in records):
            details["conversion"] = ("litert_torch.Converter with one signature per k; lightweight_conversion=True, "
                                     "runtime_constant_folding=False: weights are shared buffers sliced at run time")
            details["runtime_note"] = ("weights are sliced at run time, so XNNPACK runs the fully-connected layers with "
                                       "dynamic weights: slower than the per-k files on CPU")
            details["select_k"] = "interpreter.get_signature_runner(\"k<k>\")(image=...)[\"logits\"]"
        else:
            details["select_k"] = "one file per k; signature serving_default"
        return details
