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
    ``hydravit_edge::const_elimination_keep_weight_slices``: the same pass, except that slices
    of float constants (and what is computed from them) stay in the program.  Everything
    else (fp32->fp16 casts of the full constants, shape arithmetic) is still folded.  Core ML
    compiles the package on the device, where such constant subgraphs can be evaluated once
    at load time.

Validation on Linux (Core ML cannot run here): per k a ``structure`` check (the function,
input/output names, shapes and types, every weight blob readable, weight bytes against the
parameter count) and a ``source-program`` check (the exact ``torch.export`` program that was
converted, run in PyTorch, against ``model(x, heads=k)``); the ``runtime`` check reads
"skipped: needs macOS".  On macOS the runtime check runs ``MLModel.predict`` on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import (ArtifactRecord, ExportError, Exporter, ProgressFn, Reference, TensorSpec, ValidationResult,
                   compare, register_exporter, run_in_runner)

#: weights of a single package may exceed the k=max subnetwork's parameters by at most this factor.
SINGLE_WEIGHT_FACTOR = 1.10
_PASS = "hydravit_edge::const_elimination_keep_weight_slices"
_WEIGHTS = Path("Data") / "com.apple.CoreML" / "weights"


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


def _export_program(module, example):
    """``torch.export`` (non-strict) in the inference ATen dialect coremltools converts."""
    import torch

    try:
        with torch.no_grad():
            ep = torch.export.export(module.eval(), (example,), strict=False)
        return ep.run_decompositions({})
    except Exception as exc:
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


@contextlib.contextmanager
def _quiet():
    """Silence coremltools' progress bars, version warnings and logging during conversion."""
    logger = logging.getLogger("coremltools")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old)


def _coremltools():
    """Import coremltools (quietly) and register this module's two coremltools extensions."""
    with _quiet():
        import coremltools as ct
        from coremltools.converters.mil.frontend.torch.ops import _get_inputs
        from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op
        from coremltools.converters.mil.mil import types
        from coremltools.converters.mil.mil.passes.defs.cleanup.const_elimination import const_elimination
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    # torch >= 2.6 leaves aten.alias nodes (e.g. a full-range slice) in exported programs;
    # coremltools 9.0 translates alias_copy but not alias.  Both are the identity.
    if _TORCH_OPS_REGISTRY.get_func("alias") is None:
        def alias(context, node):
            context.add(_get_inputs(context, node)[0], torch_name=node.name)

        register_torch_op(alias)

    if _PASS not in PASS_REGISTRY:
        slicers = {"slice_by_index", "slice_by_size"}

        def protect(block) -> None:
            """Mark slices of float constants, and everything computed from them, as not foldable."""
            kept: set = set()
            for op in block.operations:
                for b in op.blocks:
                    protect(b)
                hit = any(v in kept for v in op.get_flattened_inputs())
                if not hit and op.op_type in slicers:
                    x = op.x
                    hit = types.is_float(x.dtype) and x.val is not None and np.size(x.val) > 1
                if hit:
                    for o in op.outputs:
                        kept.add(o)
                        # const_elimination folds a var only when nonreplaceable_vars_upstream is empty
                        o.nonreplaceable_vars_upstream = set(o.nonreplaceable_vars_upstream) | {o}

        class const_elimination_keep_weight_slices(const_elimination):
            """``common::const_elimination`` that keeps slices of weights as ops (shared weights)."""

            def apply(self, prog):
                for f in prog.functions.values():
                    protect(f)
                    self._const_elimination_block(f)

        register_pass(namespace="hydravit_edge")(const_elimination_keep_weight_slices)
    return ct


def _shared_weights_pipeline(ct):
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.passes = [_PASS if p == "common::const_elimination" else p for p in pipeline.passes]
    return pipeline


# =========================================================================== package inspection

def _feature(desc) -> dict[str, Any]:
    t = desc.type.WhichOneof("Type")
    if t != "multiArrayType":
        return {"name": desc.name, "type": t}
    arr = desc.type.multiArrayType
    dtypes = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}
    return {"name": desc.name, "shape": [int(s) for s in arr.shape], "dtype": dtypes.get(arr.dataType, str(arr.dataType))}


def _const_blobs(block, out: dict) -> None:
    for op in block.operations:
        for b in op.blocks:
            _const_blobs(b, out)
        if op.type != "const" or "val" not in op.attributes:
            continue
        v = op.attributes["val"]
        if v.WhichOneof("value") != "blobFileValue":
            continue
        tt = v.type.tensorType
        shape = tuple(int(d.constant.size) for d in tt.dimensions)
        out[(v.blobFileValue.fileName.split("/")[-1], int(v.blobFileValue.offset))] = (int(tt.dataType), shape)


def inspect_package(path: Path) -> dict[str, Any]:
    """Facts about an .mlpackage read without Core ML: functions with inputs/outputs, and per
    function the weight blobs it references (each one read back and size-checked).

    Returns ``{"spec_version", "default_function", "functions": {name: {"inputs", "outputs",
    "weight_bytes", "blobs"}}, "weight_bytes_total" (unique blobs), "weight_file_bytes"}``;
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
    read = {10: ("read_fp16_data", 2), 11: ("read_float_data", 4), 23: ("read_int32_data", 4)}
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
                if dtype != 23 and not np.all(np.isfinite(np.frombuffer(data.tobytes(), np.float16 if dtype == 10 else np.float32))):
                    raise ValueError(f"weight blob {fname}@{offset} contains non-finite values")
                sizes[key] = n * read[dtype][1]
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
        "weight_file_bytes": sum(p.stat().st_size for p in wdir.glob("*") if p.is_file()) if wdir.is_dir() else 0,
    }


# =========================================================================== exporter

@register_exporter
class CoreMLExporter(Exporter):
    name = "coreml"
    title = "Core ML"
    suffix = ".mlpackage"
    extra = None  # coremltools is a core dependency
    export_requires = ("coremltools",)
    runtime_requires = ("coremltools",)
    packages = ("coremltools", "torch")
    entry_kind = "function"
    #: tolerance of the source-program check (PyTorch fp32 vs PyTorch fp32: only op-order noise).
    tolerance = 1e-4
    precision = "fp32"
    #: tolerance of real predictions (macOS, CPU only): Core ML's fused CPU kernels (layer norm,
    #: GELU, attention) are not bit-identical to PyTorch's; not measurable on Linux.
    runtime_tolerance = 1e-3
    per_k_target = "iOS16"   # ML program with fp32 weights: iOS 16 / macOS 13
    single_target = "iOS18"  # multifunction packages: iOS 18 / macOS 15

    def __init__(self) -> None:
        self._sources: dict[tuple[str, int], Any] = {}  # (artifact file, k) -> torch.export program

    def entry_name(self, k: int) -> Optional[str]:
        return f"k{k}"

    def _specs(self, cfg):
        return ([TensorSpec("image", [1, cfg.in_chans, cfg.img_size, cfg.img_size], "float32", "normalised RGB image, NCHW")],
                [TensorSpec("logits", [1, cfg.num_classes], "float32", "class scores (pre-softmax)")])

    def _convert(self, ct, program, cfg, target: str, pipeline=None):
        try:
            with _quiet():
                return ct.convert(
                    program, source="pytorch", convert_to="mlprogram",
                    inputs=[ct.TensorType(name="image", shape=(1, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)],
                    outputs=[ct.TensorType(name="logits", dtype=np.float32)],
                    minimum_deployment_target=getattr(ct.target, target),
                    compute_precision=ct.precision.FLOAT32,
                    pass_pipeline=pipeline, skip_model_load=True)
        except Exception as exc:
            raise ExportError(f"coremltools conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc

    def export(self, model, heads, out_dir, mode, progress: Optional[ProgressFn] = None, pool=None) -> list[ArtifactRecord]:
        # serial: the source programs kept for validation (self._sources) live in this process
        self.require("export")
        import torch

        ct = _coremltools()
        cfg = model.config
        out_dir = Path(out_dir)
        Subnet, Heads = _programs()
        example = torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size)
        inputs, outputs = self._specs(cfg)
        self._sources.clear()
        records = []
        if mode == "per-k":
            for k in heads:
                vit = model.subnet(k).eval()
                program = _export_program(Subnet(vit), example)
                ml = self._convert(ct, program, cfg, self.per_k_target)
                fname = self.per_k_filename(k)
                with _quiet():
                    ml.save(str(out_dir / fname))
                self._sources[(fname, k)] = program
                records.append(ArtifactRecord(k, fname, None, "graph", "per-k", inputs, outputs,
                                              extra={"deployment_target": self.per_k_target,
                                                     "weight_params": sum(p.numel() for p in vit.parameters())}))
                if progress:
                    progress(f"coreml k={k}")
            return records

        narrowed = model.narrow(max(heads))
        n_params = sum(p.numel() for p in narrowed.parameters())
        if narrowed.head_k is not None:  # the shared `head` is unused when every k has its own classifier
            n_params -= narrowed.head.weight.numel() + narrowed.head.bias.numel()
        pipeline = _shared_weights_pipeline(ct)
        fname = self.single_filename
        with tempfile.TemporaryDirectory(prefix="hydravit-coreml-") as tmp:
            desc = ct.utils.MultiFunctionDescriptor()
            for k in heads:
                program = _export_program(Heads(narrowed, k), example)
                ml = self._convert(ct, program, cfg, self.single_target, pipeline)
                part = Path(tmp) / f"k{k}.mlpackage"
                with _quiet():
                    ml.save(str(part))
                del ml
                desc.add_function(str(part), src_function_name="main", target_function_name=self.entry_name(k))
                self._sources[(fname, k)] = program
                if progress:
                    progress(f"coreml k={k}")
            desc.default_function_name = self.entry_name(max(heads))
            try:
                with _quiet():
                    ct.utils.save_multifunction(desc, str(out_dir / fname))
            except Exception as exc:
                raise ExportError(f"coremltools save_multifunction failed: {type(exc).__name__}: {exc}") from exc
        for k in heads:
            records.append(ArtifactRecord(k, fname, self.entry_name(k), "function", "single", inputs, outputs,
                                          extra={"deployment_target": self.single_target,
                                                 "function_name": self.entry_name(k), "weight_params": n_params}))
        return records

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
        # weights: every parameter of the subnetwork present, stored once (fp32)
        params = record.extra.get("weight_params")
        if params is not None:
            need = 4 * params
            details["expected_weight_bytes"] = need
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

    def validate(self, out_dir, records, reference: Reference, progress: Optional[ProgressFn] = None):
        """Per k: ``structure``, ``source-program`` and ``runtime`` (macOS only, else skipped)."""
        import torch

        out_dir = Path(out_dir)
        results: list[ValidationResult] = []
        cache: dict[str, Any] = {}
        skips = {r.k: self._runtime_skip(r) for r in records}
        runnable = [r for r in records if not skips[r.k]]
        runtime = run_in_runner(self.name, out_dir, runnable, reference.inputs, timeout=self.validation_timeout) \
            if runnable else {}
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
                results.append(ValidationResult.skipped(self.name, r.k, skips[r.k], tolerance=self.runtime_tolerance))
            else:
                got = runtime.get(r.k)
                if isinstance(got, str) or got is None:
                    results.append(ValidationResult.error(self.name, r.k, got or "no output", runtime=label))
                elif r.k not in reference.logits:
                    results.append(ValidationResult.error(self.name, r.k, f"no reference logits for k={r.k}", runtime=label))
                else:
                    results.append(compare(self.name, r.k, got, reference.logits[r.k], self.runtime_tolerance, runtime=label))
            if progress:
                progress(f"{self.name} k={r.k}")
        return results

    def describe(self, out_dir, records) -> dict[str, Any]:
        out_dir = Path(out_dir)
        details: dict[str, Any] = {"compute_precision": "float32", "packages": {}}
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
