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
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from hydravit_edge.errors import MissingDependencyError
from hydravit_edge.targets import target

from .base import Exporter, converting, stored_params
from .progress import ProgressFn
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


# =========================================================================== flatbuffer inspection

def inspect_tflite(path: Path) -> dict[str, Any]:
    """Signatures (inputs, outputs, subgraph), and weight bytes: per signature (buffers its
    subgraph references) and for the whole file (every buffer once).  Pure flatbuffer parsing."""
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
    return {"signatures": sigs, "weight_bytes_total": int(sum(buf_bytes)), "file_bytes": len(data)}


# =========================================================================== exporter

@register_exporter
class TFLiteExporter(Exporter):
    name = "tflite"
    export_requires = ("litert_torch", "ai_edge_litert")
    packages = ("litert-torch", "ai-edge-litert", "torch")
    entry_kind = "signature"
    tolerance = 1e-4
    precision = "fp32"
    per_k_signature = "serving_default"

    def entry_name(self, k: int) -> Optional[str]:
        return f"k{k}"

    def _convert(self, build, path: Path, heads, **kwargs) -> None:
        """``build()`` -> litert_torch Converter; convert and write ``path``."""
        with converting(self.name, "litert-torch convert", heads), \
                _env(LITERT_TORCH_SHOW_PROGRESS="n", **kwargs.pop("env", {})), _quiet():
            edge = build().convert(**kwargs)
            edge.export(str(path))

    def export_k(self, model, k, out_dir) -> ArtifactRecord:
        litert_torch = _import("litert_torch", "export")
        cfg = model.config
        example = {IMAGE: IOSpec.example(cfg)}
        vit = model.subnet(k).eval()
        Program = _modules()
        self._convert(lambda: litert_torch.signature(self.per_k_signature, Program(vit).eval(), sample_kwargs=example),
                      Path(out_dir) / self.per_k_filename(k), k)
        return self.record(cfg, k, "per-k", extra={"signature": self.per_k_signature,
                                                   "weight_params": sum(p.numel() for p in vit.parameters())})

    def export_single(self, model, heads, out_dir, progress: Optional[ProgressFn], pool) -> list[ArtifactRecord]:
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
            if info["weight_bytes_total"] > SINGLE_WEIGHT_FACTOR * need + 65536:
                problems.append(f"weights take {info['weight_bytes_total']} bytes, more than {SINGLE_WEIGHT_FACTOR}x "
                                f"the {need} bytes of the parameters (not stored once)")
            if info["weight_bytes_total"] < 0.9 * need:
                problems.append(f"the file holds {info['weight_bytes_total']} weight bytes, expected about {need} "
                                "(weights missing)")
        return ValidationResult.structural(self.name, record.k, not problems, details, "; ".join(problems) or None)

    def validate(self, out_dir, records, reference: Reference, progress: Optional[ProgressFn] = None):
        """Structure (signatures, names, shapes, weight bytes) per k, then the runtime check
        (ai-edge-litert in its own process, max abs error and top-1 vs PyTorch)."""
        cache: dict[str, Any] = {}
        if self.missing("runtime"):
            structure = [ValidationResult.skipped(self.name, r.k, self.missing("runtime"), check="structure")
                         for r in records]
        else:
            structure = [self._structure(Path(out_dir) / r.file, r, cache) for r in records]
        return structure + super().validate(out_dir, records, reference, progress)

    def describe(self, out_dir, records) -> dict[str, Any]:
        details: dict[str, Any] = {"delegate": "XNNPACK (ai-edge-litert default CPU delegate)", "files": {}}
        for f in sorted({r.file for r in records}):
            try:
                info = inspect_tflite(Path(out_dir) / f)
            except Exception as exc:
                details["files"][f] = {"error": str(exc)}
                continue
            entry = {"signatures": sorted(info["signatures"]), "weight_bytes": info["weight_bytes_total"],
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
