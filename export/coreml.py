"""Core ML target: per-k ML programs and one multifunction package with every k.

Per-k (``coreml/k<k>.mlpackage``)
    ``torch.export`` of ``model.subnet(k)`` (the plain timm ViT) converted by coremltools to an
    ML program (fp32, iOS 16 / macOS 13), input ``image`` float32 ``[1, 3, H, W]``, output
    ``logits`` float32 ``[1, classes]``.

Single (``coreml/hydravit.mlpackage``)
    One multifunction ML program (iOS 18 / macOS 15) with one function per k (``k3``, ...;
    the default function is the largest k).  Function k is ``model.forward_heads(image, k)``:
    every weight it uses is a ``slice_by_index`` of the FULL parameter, and all functions
    reference the same full-size constants, which ``save_multifunction`` deduplicates, so the
    weights are stored once.  Select k in Swift with ``MLModelConfiguration.functionName =
    "k3"`` (Python: ``ct.models.MLModel(path, function_name="k3")``).

    coremltools' ``const_elimination`` pass would fold every ``slice(const)`` into a new
    per-k constant (the per-k weights differ, so deduplication finds nothing and the package
    stores ~4.5x).  The conversion therefore replaces that pass with
    ``hydravit_edge::const_elimination_keep_weight_slices`` (:mod:`.coreml_mil`): the same
    pass, except that slices of float constants (and what is computed from them) stay in the
    program.  Everything
    else (fp32->fp16 casts of the full constants, shape arithmetic) is still folded.  Core ML
    compiles the package on the device, where such constant subgraphs can be evaluated once
    at load time.

Precisions
    ``fp16``: ``ct.convert(..., compute_precision=ct.precision.FLOAT16)``: every constant (the full
    ones of a single package too) is stored as float16 and the program computes in float16;
    ``image`` and ``logits`` stay float32.  ``int8``: the fp16 program's weights quantized by
    ``coremltools.optimize.coreml.linear_quantize_weights`` (``OpLinearQuantizerConfig(mode=
    "linear_symmetric", granularity="per_channel", dtype="int8")``): each weight of more than
    :data:`INT8_WEIGHT_THRESHOLD` elements becomes int8 data with one float16 scale per output
    channel, dequantized by a ``constexpr_blockwise_shift_scale`` op (iOS 18) /
    ``constexpr_affine_dequantize`` (iOS 16); activations stay float16 (Core ML has no dynamic
    activation quantization).  In a single package the FULL weights are quantized once per output
    channel and each function slices k out of the dequantized tensor: every k is a cut of one set
    of int8 values and scales, stored once.  ``int8-static`` is not offered (:data:`STATIC_INT8_NOTE`).

Validation on Linux (Core ML cannot run here): per k a ``structure`` check (the function,
input/output names, shapes and types, every weight blob readable, weight bytes against the
parameter count) and a ``source-program`` check (the exact ``torch.export`` program that was
converted, run in PyTorch, against ``model(x, heads=k)``); the ``runtime`` check reads
"skipped: needs macOS".  On macOS the runtime check runs ``MLModel.predict`` on the CPU.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hydravit_edge.targets import MODES

from .base import Exporter, converting, stored_params
from .coreml_mil import coremltools_quietly as _coremltools
from .coreml_mil import quiet as _quiet
from .coreml_mil import shared_weights_pipeline
from .progress import ProgressFn
from .quantize import FP32, HeldOutRef, QuantSpec, judge
from .records import ArtifactRecord, Reference, ValidationResult
from .registry import register_exporter
from .specs import IOSpec
from .validation import compare, run_in_runner

#: weights of a single package may exceed the k=max subnetwork's parameters by at most this factor.
SINGLE_WEIGHT_FACTOR = 1.10
_WEIGHTS = Path("Data") / "com.apple.CoreML" / "weights"
#: int8: weights with more elements are quantized (coremltools' default; smaller ones stay float16)
INT8_WEIGHT_THRESHOLD = 2048
#: why Core ML has no int8-static (the error of --precision int8-static and the docs)
STATIC_INT8_NOTE = (": Core ML's activation quantization (coremltools.optimize.coreml.linear_quantize_activations) "
                    "calibrates by running the model's predictions, which need macOS (Core ML does not run on "
                    "Linux), and its results could not be validated here either; --precision int8 gives int8 "
                    "weights with float16 activations")
#: MIL data types of weight blobs: (BlobReader method, bytes per value, name)
_BLOB_TYPES = {10: ("read_fp16_data", 2, "float16"), 11: ("read_float_data", 4, "float32"),
               23: ("read_int32_data", 4, "int32"), 21: ("read_int8_data", 1, "int8"),
               31: ("read_uint8_data", 1, "uint8")}


# =========================================================================== model helpers

def _programs():
    """nn.Module wrappers with input ``image`` and output ``logits`` (built lazily: torch is heavy)."""
    import torch

    class Subnet(torch.nn.Module):
        def __init__(self, vit):
            super().__init__()
            self.vit = vit

        def forward(self, image):
            return self.vit(image)

    class Heads(torch.nn.Module):
        def __init__(self, model, k: int):
            super().__init__()
            self.model = model
            self.k = int(k)

        def forward(self, image):
            return self.model.forward_heads(image, self.k)

    return Subnet, Heads


def _export_program(module, example, k: int):
    """``torch.export`` (non-strict) of k's program in the inference ATen dialect coremltools converts."""
    import torch

    with converting("coreml", "torch.export", k):
        with torch.no_grad():
            ep = torch.export.export(module.eval(), (example,), strict=False)
        return ep.run_decompositions({})


def compute_precision(ct, quant: QuantSpec):
    """coremltools' compute precision of ``quant``: float16 for fp16 and int8 (int8 weights over fp16), else float32."""
    return ct.precision.FLOAT32 if quant.precision == "fp32" else ct.precision.FLOAT16


def quantize_weights(ml, quant: QuantSpec):
    """int8: ``linear_quantize_weights`` of the converted model (symmetric, per output channel); else ``ml``."""
    if not quant.precision.startswith("int8"):
        return ml
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=INT8_WEIGHT_THRESHOLD))
    return cto.linear_quantize_weights(ml, config)


def int8_params(module) -> int:
    """Parameters of ``module`` that :func:`quantize_weights` makes int8 (more than the threshold's elements)."""
    return sum(p.numel() for p in module.parameters() if p.numel() > INT8_WEIGHT_THRESHOLD)


# =========================================================================== package inspection

def _feature(desc) -> dict[str, Any]:
    t = desc.type.WhichOneof("Type")
    if t != "multiArrayType":
        return {"name": desc.name, "type": t}
    arr = desc.type.multiArrayType
    dtypes = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}
    return {"name": desc.name, "shape": [int(s) for s in arr.shape], "dtype": dtypes.get(arr.dataType, str(arr.dataType))}


def _const_blobs(block, out: dict) -> None:
    """Every weight blob of ``block``: ``const`` values and the inputs of ``constexpr_*`` ops (int8 data, scales)."""
    def add(v) -> None:
        if v.WhichOneof("value") != "blobFileValue":
            return
        tt = v.type.tensorType
        shape = tuple(int(d.constant.size) for d in tt.dimensions)
        out[(v.blobFileValue.fileName.split("/")[-1], int(v.blobFileValue.offset))] = (int(tt.dataType), shape)

    for op in block.operations:
        for b in op.blocks:
            _const_blobs(b, out)
        if op.type == "const" and "val" in op.attributes:
            add(op.attributes["val"])
        elif op.type.startswith("constexpr_"):
            for arg in op.inputs.values():
                for a in arg.arguments:
                    if a.WhichOneof("binding") == "value":
                        add(a.value)
            for v in op.attributes.values():  # iOS 16/17 constexpr ops keep their data as attributes
                add(v)


def inspect_package(path: Path) -> dict[str, Any]:
    """Facts about an .mlpackage read without Core ML: functions with inputs/outputs, and per
    function the weight blobs it references (each one read back and size-checked).

    Returns ``{"spec_version", "default_function", "functions": {name: {"inputs", "outputs",
    "weight_bytes", "blobs"}}, "weight_bytes_total" (unique blobs), "weight_bytes_by_dtype" (unique
    blobs per data type: "float32", "float16", "int8", ...), "weight_file_bytes"}``;
    a single-function package reports its function as ``"main"``.  Raises ValueError on
    anything unreadable.
    """
    ct = _coremltools()
    from coremltools.libmilstoragepython import _BlobStorageReader as BlobReader

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise ValueError(f"{path.name} is not an .mlpackage (no Manifest.json)")
    try:
        with _quiet():
            spec = ct.utils.load_spec(str(path))
    except Exception as exc:
        raise ValueError(f"cannot read the model spec: {type(exc).__name__}: {exc}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path.name} is not an ML program")
    desc = spec.description
    funcs: dict[str, dict[str, Any]] = {}
    if len(desc.functions):
        for f in desc.functions:
            funcs[f.name] = {"inputs": [_feature(i) for i in f.input], "outputs": [_feature(o) for o in f.output]}
    else:
        funcs["main"] = {"inputs": [_feature(i) for i in desc.input], "outputs": [_feature(o) for o in desc.output]}
    readers: dict[str, Any] = {}
    sizes: dict[tuple[str, int], int] = {}
    dtypes: dict[tuple[str, int], str] = {}
    read = _BLOB_TYPES
    for name, fn in spec.mlProgram.functions.items():
        if name not in funcs:
            raise ValueError(f"program function '{name}' has no description")
        blobs: dict[tuple[str, int], tuple[int, tuple]] = {}
        for block in fn.block_specializations.values():
            _const_blobs(block, blobs)
        for key, (dtype, shape) in blobs.items():
            if key not in sizes:
                fname, offset = key
                wpath = path / _WEIGHTS / fname
                if dtype not in read:
                    raise ValueError(f"weight blob {fname}@{offset} has unexpected data type {dtype}")
                if fname not in readers:
                    if not wpath.is_file():
                        raise ValueError(f"weight file {fname} is missing")
                    readers[fname] = BlobReader(str(wpath))
                try:
                    data = getattr(readers[fname], read[dtype][0])(offset)
                except Exception as exc:  # the C++ reader raises ValueError/IndexError/RuntimeError
                    raise ValueError(f"weight blob {fname}@{offset} is unreadable ({type(exc).__name__}: {exc})") from None
                n = int(np.prod(shape)) if shape else 1
                if data.size != n:
                    raise ValueError(f"weight blob {fname}@{offset} holds {data.size} values, the program expects {n}")
                if dtype in (10, 11) and not np.all(np.isfinite(np.frombuffer(data.tobytes(), np.float16 if dtype == 10 else np.float32))):
                    raise ValueError(f"weight blob {fname}@{offset} contains non-finite values")
                sizes[key] = n * read[dtype][1]
                dtypes[key] = read[dtype][2]
        funcs[name]["weight_bytes"] = sum(sizes[k] for k in blobs)
        funcs[name]["blobs"] = len(blobs)
    for name, f in funcs.items():
        if "weight_bytes" not in f:
            raise ValueError(f"function '{name}' is described but has no program")
    wdir = path / _WEIGHTS
    return {
        "spec_version": int(spec.specificationVersion),
        "default_function": desc.defaultFunctionName or None,
        "functions": funcs,
        "weight_bytes_total": sum(sizes.values()),
        "weight_bytes_by_dtype": {t: sum(n for key, n in sizes.items() if dtypes[key] == t)
                                  for t in sorted(set(dtypes.values()))},
        "weight_file_bytes": sum(p.stat().st_size for p in wdir.glob("*") if p.is_file()) if wdir.is_dir() else 0,
    }


def expected_weight_bytes(extra: dict) -> int:
    """Bytes the weights of a record's package take (``extra``: ``weight_params``, ``precision``,
    ``int8_params``): 4 per parameter (fp32), 2 (fp16), 1 per int8 parameter and 2 for the rest (int8)."""
    params = int(extra["weight_params"])
    precision = extra.get("precision", "fp32")
    if precision == "fp16":
        return 2 * params
    if precision.startswith("int8"):
        n8 = int(extra.get("int8_params", 0))
        return n8 + 2 * (params - n8)
    return 4 * params


def precision_problems(extra: dict, by_dtype: dict[str, int]) -> list[str]:
    """What is wrong with the weights' data types for the record's precision (fp16: no float32
    weights; int8: the large weights are int8 data)."""
    precision = extra.get("precision", "fp32")
    if precision == "fp16" and by_dtype.get("float32"):
        return [f"{by_dtype['float32']} bytes of float32 weights in an fp16 package"]
    if precision.startswith("int8"):
        want = int(extra.get("int8_params", 0))
        got = by_dtype.get("int8", 0)
        if got < 0.9 * want:
            return [f"{got} bytes of int8 weights, expected about {want} (the weights over "
                    f"{INT8_WEIGHT_THRESHOLD} elements, quantized)"]
        if by_dtype.get("float32"):
            return [f"{by_dtype['float32']} bytes of float32 weights in an int8 package (expected int8 and float16)"]
    return []


# =========================================================================== exporter

@register_exporter
class CoreMLExporter(Exporter):
    name = "coreml"
    export_requires = ("coremltools",)  # a core dependency (the table's extra is None)
    packages = ("coremltools", "torch")
    entry_kind = "function"
    #: tolerance of the source-program check (PyTorch fp32 vs PyTorch fp32: only op-order noise).
    tolerance = 1e-4
    #: tolerance of real predictions (macOS, CPU only): Core ML's fused CPU kernels (layer norm,
    #: GELU, attention) are not bit-identical to PyTorch's; not measurable on Linux.
    runtime_tolerance = 1e-3
    per_k_target = "iOS16"   # ML program with fp32 weights: iOS 16 / macOS 13
    single_target = "iOS18"  # multifunction packages: iOS 18 / macOS 15
    #: fp16 and int8 weights in both modes (see the module docstring); no int8-static
    precisions = {"fp32": MODES, "fp16": MODES, "int8": MODES}
    precision_notes = {"int8-static": STATIC_INT8_NOTE}

    def __init__(self) -> None:
        self._sources: dict[tuple[str, int], Any] = {}  # (artifact file, k) -> torch.export program

    def entry_name(self, k: int) -> Optional[str]:
        return f"k{k}"

    def quantization_info(self, quant: QuantSpec) -> Optional[dict[str, Any]]:
        if not quant.quantized:
            return None
        if quant.precision == "fp16":
            return {"tool": "coremltools.convert(compute_precision=ct.precision.FLOAT16)",
                    "scheme": "float16 weights and compute; float32 image and logits"}
        return {"tool": "coremltools.optimize.coreml.linear_quantize_weights (over a FLOAT16 conversion)",
                "scheme": ("OpLinearQuantizerConfig(mode='linear_symmetric', granularity='per_channel', dtype='int8', "
                           f"weight_threshold={INT8_WEIGHT_THRESHOLD}): int8 weights, one float16 scale per output "
                           "channel, dequantized by constexpr ops; single package: the full weights quantized once, "
                           "each function slicing k out of them; per-k: each k quantized from its own weights"),
                # the framework's default words say dynamic int8 activations; Core ML has none
                "activations": "float16 (weight-only int8: Core ML has no dynamic activation quantization)"}

    def _convert(self, ct, program, cfg, target: str, k: int, pipeline=None, quant: QuantSpec = FP32):
        """coremltools' conversion of one torch.export ``program`` to an ML program, I/O as :attr:`io` says,
        at ``quant``'s precision (:func:`compute_precision`, :func:`quantize_weights`)."""
        with converting(self.name, "coremltools convert", k), _quiet():
            ml = ct.convert(
                program, source="pytorch", convert_to="mlprogram",
                inputs=[ct.TensorType(name=t.name, shape=tuple(t.shape), dtype=np.float32) for t in self.io.inputs(cfg)],
                outputs=[ct.TensorType(name=t.name, dtype=np.float32) for t in self.io.outputs(cfg)],
                minimum_deployment_target=getattr(ct.target, target),
                compute_precision=compute_precision(ct, quant),
                pass_pipeline=pipeline, skip_model_load=True)
        with converting(self.name, "coremltools linear_quantize_weights", k), _quiet():
            return quantize_weights(ml, quant)

    @staticmethod
    def _precision_extra(module, quant: QuantSpec) -> dict[str, Any]:
        """What the structure check needs to know of ``quant`` (kept in the record, so that
        ``validate DIR`` checks the same)."""
        if not quant.quantized:
            return {}
        extra: dict[str, Any] = {"precision": quant.precision}
        if quant.precision.startswith("int8"):
            extra["int8_params"] = int8_params(module)
        return extra

    def export_k(self, model, k, out_dir, quant: QuantSpec = FP32) -> ArtifactRecord:
        ct = _coremltools()
        cfg = model.config
        Subnet, _ = _programs()
        vit = model.subnet(k).eval()
        program = _export_program(Subnet(vit), IOSpec.example(cfg), k)
        ml = self._convert(ct, program, cfg, self.per_k_target, k, quant=quant)
        fname = self.per_k_filename(k)
        with converting(self.name, "MLModel.save", k), _quiet():
            ml.save(str(Path(out_dir) / fname))
        self._sources[(fname, k)] = program
        return self.record(cfg, k, "per-k", extra={"deployment_target": self.per_k_target,
                                                   "weight_params": sum(p.numel() for p in vit.parameters()),
                                                   **self._precision_extra(vit, quant)})

    def export_per_k(self, model, heads, out_dir, progress: Optional[ProgressFn] = None, pool=None,
                     quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        """:meth:`export_k` for every k in this process: the source programs kept for validation
        (``self._sources``) live here."""
        self._sources.clear()
        records = []
        for k in heads:
            records.append(self.export_k(model, k, out_dir, quant))
            if progress:
                progress(f"coreml k={k}")
        return records

    def export_single(self, model, heads, out_dir, progress: Optional[ProgressFn], pool,
                      quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        ct = _coremltools()
        cfg = model.config
        _, Heads = _programs()
        example = IOSpec.example(cfg)
        n_params = stored_params(model)
        pipeline = shared_weights_pipeline(ct)
        fname = self.single_filename
        self._sources.clear()
        with tempfile.TemporaryDirectory(prefix="hydravit-coreml-") as tmp:
            desc = ct.utils.MultiFunctionDescriptor()
            for k in heads:
                program = _export_program(Heads(model, k), example, k)
                ml = self._convert(ct, program, cfg, self.single_target, k, pipeline, quant)
                part = Path(tmp) / f"k{k}.mlpackage"
                with converting(self.name, "MLModel.save", k), _quiet():
                    ml.save(str(part))
                del ml
                desc.add_function(str(part), src_function_name="main", target_function_name=self.entry_name(k))
                self._sources[(fname, k)] = program
                if progress:
                    progress(f"coreml k={k}")
            desc.default_function_name = self.entry_name(max(heads))
            with converting(self.name, "coremltools save_multifunction", heads), _quiet():
                ct.utils.save_multifunction(desc, str(out_dir / fname))
        extra = self._precision_extra(model, quant)
        if "int8_params" in extra and model.head_k is not None:  # the unused shared head is not stored
            n = model.head.weight.numel()
            extra["int8_params"] -= n if n > INT8_WEIGHT_THRESHOLD else 0
        return [self.record(cfg, k, "single", entry=self.entry_name(k),
                            extra={"deployment_target": self.single_target, "function_name": self.entry_name(k),
                                   "weight_params": n_params, **extra})
                for k in heads]

    # ---- validation -------------------------------------------------------------------
    def runtime_skip_reason(self) -> Optional[str]:
        if sys.platform != "darwin":
            return "needs macOS"
        return self.missing("runtime")

    def _structure(self, path: Path, record: ArtifactRecord, cache: dict) -> ValidationResult:
        key = str(path)
        if key not in cache:
            try:
                cache[key] = inspect_package(path)
            except Exception as exc:
                cache[key] = str(exc)
        info = cache[key]
        if isinstance(info, str):
            return ValidationResult.structural(self.name, record.k, False, {"file": record.file}, info)
        fname = record.entry or "main"
        problems = []
        fn = info["functions"].get(fname)
        details: dict[str, Any] = {"function": fname, "functions": sorted(info["functions"]),
                                   "spec_version": info["spec_version"], "weight_file_bytes": info["weight_file_bytes"],
                                   "weight_bytes_total": info["weight_bytes_total"]}
        if fn is None:
            return ValidationResult.structural(self.name, record.k, False, details,
                                               f"function '{fname}' missing (has {', '.join(sorted(info['functions']))})")
        details.update(inputs=fn["inputs"], outputs=fn["outputs"], weight_bytes=fn["weight_bytes"])
        for want, got, what in ((record.inputs, fn["inputs"], "input"), (record.outputs, fn["outputs"], "output")):
            if [(t.name, list(t.shape), t.dtype) for t in want] != [(g["name"], g.get("shape"), g.get("dtype")) for g in got]:
                problems.append(f"{what}s {got} != expected {[t.to_dict() for t in want]}")
        if record.mode == "single" and info["spec_version"] < 9:
            problems.append(f"specification version {info['spec_version']} < 9 (multifunction needs iOS 18)")
        # weights: every parameter of the subnetwork present, stored once, at the record's precision
        params = record.extra.get("weight_params")
        if params is not None:
            need = expected_weight_bytes(record.extra)
            details["expected_weight_bytes"] = need
            details["weight_bytes_by_dtype"] = info["weight_bytes_by_dtype"]
            problems += precision_problems(record.extra, info["weight_bytes_by_dtype"])
            # tiny tensors (norm/bias of small models) may be stored inline in the program
            if fn["weight_bytes"] > SINGLE_WEIGHT_FACTOR * need + 4096 or info["weight_bytes_total"] > SINGLE_WEIGHT_FACTOR * need + 4096:
                problems.append(f"weights take {info['weight_bytes_total']} bytes, more than {SINGLE_WEIGHT_FACTOR}x "
                                f"the {need} bytes of the parameters (not stored once)")
            if fn["weight_bytes"] < 0.9 * need:
                problems.append(f"function '{fname}' references {fn['weight_bytes']} weight bytes, "
                                f"expected about {need} (weights missing)")
        return ValidationResult.structural(self.name, record.k, not problems, details, "; ".join(problems) or None)

    def _runtime_skip(self, record: ArtifactRecord) -> Optional[str]:
        reason = self.runtime_skip_reason()
        if reason:
            return reason
        need = 15 if record.mode == "single" else 13  # iOS 18 / iOS 16 deployment targets
        version = platform.mac_ver()[0]
        major = int(version.split(".")[0]) if version else 0
        return None if major >= need else f"needs macOS {need} or newer (this is {version or 'unknown'})"

    def validate(self, out_dir, records, reference: Reference, progress: Optional[ProgressFn] = None,
                 quant: QuantSpec = FP32, heldout: Optional[HeldOutRef] = None):
        """Per k: ``structure``, ``source-program`` and ``runtime`` (macOS only, else skipped).

        The structure check knows the precision from the record (weight data types and bytes); the
        source program is the fp32 ``torch.export`` program that was converted; the runtime check of
        a quantized package is :func:`~.quantize.judge`."""
        import torch

        out_dir = Path(out_dir)
        results: list[ValidationResult] = []
        cache: dict[str, Any] = {}
        skips = {r.k: self._runtime_skip(r) for r in records}
        runnable = [r for r in records if not skips[r.k]]
        inputs = reference.inputs
        if quant.quantized and heldout is not None:
            inputs = np.concatenate([reference.inputs, heldout.images.astype(np.float32)])
        n_ref = reference.batch
        runtime = run_in_runner(self.name, out_dir, runnable, inputs, timeout=self.validation_timeout) \
            if runnable else {}
        tol = None if quant.quantized else self.runtime_tolerance
        label = f"coremltools {self.versions().get('coremltools')} (Core ML, CPU)"
        for r in records:
            results.append(self._structure(out_dir / r.file, r, cache))
            src = self._sources.get((Path(r.file).name, r.k))
            if src is None:
                results.append(ValidationResult.skipped(
                    self.name, r.k, "the PyTorch program is only at hand right after export", check="source-program"))
            elif r.k not in reference.logits:
                results.append(ValidationResult.error(self.name, r.k, f"no reference logits for k={r.k}", check="source-program"))
            else:
                fn = src.module()
                with torch.no_grad():
                    got = np.concatenate([fn(torch.from_numpy(x[None].copy())).numpy() for x in reference.inputs])
                results.append(compare(self.name, r.k, got, reference.logits[r.k], self.tolerance,
                                       check="source-program", runtime=f"torch {torch.__version__} (torch.export program)"))
            if skips[r.k]:
                results.append(ValidationResult.skipped(self.name, r.k, skips[r.k], tolerance=tol))
            else:
                got = runtime.get(r.k)
                if isinstance(got, str) or got is None:
                    results.append(ValidationResult.error(self.name, r.k, got or "no output", runtime=label))
                elif r.k not in reference.logits:
                    results.append(ValidationResult.error(self.name, r.k, f"no reference logits for k={r.k}", runtime=label))
                elif quant.quantized:
                    results.append(judge(self.name, r.k, quant.precision, got[:n_ref], reference.logits[r.k],
                                         got[n_ref:] if heldout is not None else None, heldout, runtime=label))
                else:
                    results.append(compare(self.name, r.k, got, reference.logits[r.k], self.runtime_tolerance, runtime=label))
            if progress:
                progress(f"{self.name} k={r.k}")
        return results

    def describe(self, out_dir, records) -> dict[str, Any]:
        out_dir = Path(out_dir)
        precision = next((r.extra.get("precision") for r in records if r.extra.get("precision")), "fp32")
        details: dict[str, Any] = {"compute_precision": "float32" if precision == "fp32" else "float16",
                                   "weights": {"fp32": "float32", "fp16": "float16"}.get(precision,
                                                                                         "int8 (per channel)"),
                                   "packages": {}}
        for f in sorted({r.file for r in records}):
            try:
                info = inspect_package(out_dir / f)
            except Exception as exc:
                details["packages"][f] = {"error": str(exc)}
                continue
            per_fn = {n: v["weight_bytes"] for n, v in info["functions"].items()}
            entry = {"spec_version": info["spec_version"], "default_function": info["default_function"],
                     "functions": sorted(info["functions"]), "weight_file_bytes": info["weight_file_bytes"],
                     "weight_bytes_unique": info["weight_bytes_total"],
                     "weight_bytes_by_dtype": info["weight_bytes_by_dtype"],
                     "weight_bytes_per_function": per_fn}
            if len(per_fn) > 1:
                entry["weight_bytes_without_dedup"] = sum(per_fn.values())
                entry["deduplication"] = "functions reference the same full-size constants and slice them in the program"
            details["packages"][f] = entry
        mode = {r.mode for r in records}
        details["deployment_target"] = self.single_target if "single" in mode else self.per_k_target
        details["select_k"] = ("MLModelConfiguration.functionName = \"k<k>\" (Swift); "
                               "ct.models.MLModel(path, function_name=\"k<k>\") (Python)") if "single" in mode else None
        return details
