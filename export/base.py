"""The exporter interface, the target registry and the validation records.

Every deployment target (ONNX, ExecuTorch, Core ML, TFLite) is ONE class derived from
:class:`Exporter` and registered with :func:`register_exporter`.  The ``export`` and
``validate`` commands, the Python API (:mod:`hydravit_edge.export.api`) and the benchmark
harness only ever iterate :func:`exporters` / call :func:`get_exporter`; nothing outside a
target's own module knows anything target-specific.

How a target plugs in
=====================

1. Create ``export/<target>.py`` (installed as ``hydravit_edge.export.<target>``) and add its
   row to :data:`hydravit_edge.targets.TARGETS` (order = order in tables and in ``--target all``).
   At module level import only the standard library, ``numpy`` and this module: the optional
   dependency is imported inside methods, so the class registers (and can say what is
   missing) even where the dependency is not installed::

       from .base import ArtifactRecord, Exporter, TensorSpec, register_exporter

       @register_exporter
       class TFLiteExporter(Exporter):
           name = "tflite"                    # --target value, manifest key, output subdir
           title = "TFLite (LiteRT)"
           suffix = ".tflite"                 # per-k files are k3.tflite ...; single: hydravit.tflite
           extra = "tflite"                   # pip extra that installs the dependencies
           export_requires = ("litert_torch",)        # modules needed to export
           runtime_requires = ("ai_edge_litert",)     # modules needed to run/validate
           packages = ("litert-torch", "ai-edge-litert", "torch")  # versions go to the manifest
           entry_kind = "signature"           # what selects k inside a single artifact
           tolerance = 1e-4                   # max |logit error| vs PyTorch (fp32)

2. ``export(model, heads, out_dir, mode, progress=None, pool=None) -> list[ArtifactRecord]``

   * ``model``: a :class:`~hydravit_edge.HydraViT` in eval mode (do not modify it; use
     ``model.subnet(k)`` for per-k, ``model.forward_heads(x, k)`` / ``model(x, heads=k)`` for
     single artifacts).  ``heads``: sorted tuple of head counts, already checked.
   * ``out_dir``: an existing, empty directory (``<staging>/<name>``) inside a temporary
     staging directory.  Write every file the target produces below it and nothing
     elsewhere; the framework renames the whole staging directory into place after export
     AND validation succeeded, or deletes it, so a failure never leaves half-written output.
     Use :meth:`Exporter.per_k_filename` / :attr:`Exporter.single_filename` for the names.
   * ``mode``: ``"single"`` (one artifact with every k, weights stored once, k chosen at run
     time) or ``"per-k"`` (one file per k from ``model.subnet(k)``).  A target that cannot
     do ``single`` (e.g. a converter that duplicates shared weights) may fall back to per-k
     files: return per-k records (``mode="per-k"``) and put the reason into each record's
     ``notes``; the manifest and the table show it.  Raise :class:`ExportError` (or any
     ``HydraEdgeError``) with a user-facing message when export fails.
   * Return one :class:`ArtifactRecord` per k, with ``file`` RELATIVE to ``out_dir``
     (``"k3.onnx"``, ``"hydravit.pte"``; a directory such as ``"hydravit.mlpackage"`` is
     fine), ``entry`` = method / function / signature name for single artifacts (``None``
     when the file holds one graph), input/output :class:`TensorSpec` lists.  Sizes and
     sha256 are computed by the framework (directories get a tree hash), never by targets.
   * ``progress(description)``: call it once per k exported (optional).
   * ``pool``: an :class:`~.parallel.ExportPool` (``--jobs``) holding the same model, narrowed
     to ``max(heads)``; ``None`` when called directly (use ``ExportPool(model, 1)``).  Per-k
     work that is slow and independent goes through ``pool.map(fn, heads, progress)``, which
     runs the picklable ``fn(model, k)`` in worker processes.  The simplest use: implement
     ``export_k(model, k, out_dir) -> ArtifactRecord`` (write one per-k file) and return
     ``self.export_per_k(model, heads, out_dir, progress, pool)`` for ``mode="per-k"``.
     A target whose single artifact is assembled from per-k pieces (ONNX's per-k graphs,
     ExecuTorch's separately lowered methods) maps the pieces and assembles them here.

3. Running the artifacts is not the exporter's job: the runtime layer
   (:mod:`hydravit_edge.engines`) has one engine per runtime of :data:`hydravit_edge.targets.RUNTIMES`,
   and the target's ``runtime`` names it.  The default :meth:`Exporter.validate` runs every record
   there, in a separate process that never runs PyTorch (:func:`run_in_runner`), exactly as a
   deployment (the Python runtime, ``bench``) opens the files.  A new runtime is a new engine.

4. ``validate(out_dir, records, reference, progress=None) -> list[ValidationResult]``.
   The default implementation (use it unless you cannot run the artifact here) returns
   one ``check="runtime"`` result per record, comparing the engine's output with
   ``reference.logits[k]`` (= ``model(x, heads=k)`` in PyTorch) through :func:`compare`:
   max abs error <= ``tolerance`` and top-1 agreement on the batch.  A target that cannot
   run here (Core ML on Linux) overrides ``validate`` and returns, per k:

   * ``ValidationResult.skipped(self.name, k, "needs macOS")`` for ``check="runtime"`` --
     never a "passed" it did not earn;
   * additional results with other ``check`` names for what it DID verify, e.g.
     ``check="structure"`` (functions, input/output names and shapes, weight size:
     ``ValidationResult.structural(name, k, ok, details, reason)``) and
     ``check="source-program"`` (the traced/exported PyTorch program it converted, run with
     :func:`compare` against the reference).
   A failed or errored result makes ``export``/``validate`` exit non-zero.
   :meth:`Exporter.runtime_skip_reason` returning a string (e.g. ``"needs macOS"``) makes
   the default ``validate`` report that skip for every k without launching the runtime.

5. ``describe(out_dir, records) -> dict``: target-specific facts for the manifest
   (``targets.<name>.details``), e.g. opset, delegate, deployment target, weight dedup.
   JSON-serialisable.  The default returns ``{}``; versions come from :meth:`versions`.

Optional dependencies: :meth:`Exporter.missing` returns ``None`` or a message naming the
extra (``pip install 'hydravit-edge[tflite]'``); :meth:`Exporter.require` raises
:class:`~hydravit_edge.errors.MissingDependencyError` with it.  ``--target all`` skips targets
whose export dependencies are missing and says so; naming such a target explicitly is an
error.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import importlib.util
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Optional, Sequence

import numpy as np

from hydravit_edge.engines.runner import run_isolated
from hydravit_edge.errors import MissingDependencyError
from hydravit_edge.targets import MODES

from .errors import ExportError, ValidationError
from .parallel import ExportPool, ProgressFn, per_k_task
from .registry import _REGISTRY, TARGET_MODULES, exporter_names, exporters, get_exporter, register_exporter  # noqa: F401

__all__ = [
    "MODES", "TARGET_MODULES", "Exporter", "ArtifactRecord", "TensorSpec", "ValidationResult", "Status",
    "Reference", "ExportError", "ValidationError", "register_exporter", "get_exporter", "exporters",
    "exporter_names", "compare", "path_size", "path_sha256", "ProgressFn",
]

# =========================================================================== records

@dataclass
class TensorSpec:
    """A named input/output of an artifact.  ``shape`` entries are ints or symbolic names."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(d["name"], list(d["shape"]), d.get("dtype", "float32"), d.get("description", ""))


@dataclass
class ArtifactRecord:
    """Where subnetwork ``k`` lives inside a target's output.

    ``file`` is relative to the target directory while exporting (``"k3.onnx"``) and relative
    to the manifest (``"onnx/k3.onnx"``) once recorded in the manifest.
    """

    k: int
    file: str
    #: method / function / signature selecting k inside a multi-k artifact; None: the file is one graph.
    entry: Optional[str] = None
    #: "graph" (file = one model), "graph+input" (one graph, k chosen by an input tensor),
    #: "method" (ExecuTorch), "function" (Core ML), "signature" (TFLite).
    entry_kind: str = "graph"
    mode: str = "per-k"
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    #: target-specific facts for this k (e.g. {"heads_value": 3} for the ONNX heads input).
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k, "file": self.file, "entry": self.entry, "entry_kind": self.entry_kind,
            "mode": self.mode, "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs], "extra": dict(self.extra), "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArtifactRecord":
        return cls(
            k=int(d["k"]), file=d["file"], entry=d.get("entry"), entry_kind=d.get("entry_kind", "graph"),
            mode=d.get("mode", "per-k"), inputs=[TensorSpec.from_dict(t) for t in d.get("inputs", [])],
            outputs=[TensorSpec.from_dict(t) for t in d.get("outputs", [])], extra=dict(d.get("extra", {})),
            notes=list(d.get("notes", [])),
        )


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass
class ValidationResult:
    """One check of one k of one target.

    ``check`` names what was checked: ``"runtime"`` (the artifact run in its own runtime vs
    PyTorch), ``"structure"`` (static inspection), ``"source-program"`` (the PyTorch program the
    artifact was converted from).  ``status`` is never ``passed`` for a check that did not run.
    """

    target: str
    k: int
    status: Status
    check: str = "runtime"
    max_abs_err: Optional[float] = None
    top1_agreement: Optional[float] = None
    tolerance: Optional[float] = None
    batch: Optional[int] = None
    reason: Optional[str] = None
    runtime: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True unless failed or errored (a skip is not a failure, and not a pass either)."""
        return self.status in (Status.PASSED, Status.SKIPPED)

    @classmethod
    def skipped(cls, target: str, k: int, reason: str, check: str = "runtime", **kw: Any) -> "ValidationResult":
        return cls(target, k, Status.SKIPPED, check=check, reason=reason, **kw)

    @classmethod
    def error(cls, target: str, k: int, reason: str, check: str = "runtime", **kw: Any) -> "ValidationResult":
        return cls(target, k, Status.ERROR, check=check, reason=reason, **kw)

    @classmethod
    def structural(cls, target: str, k: int, ok: bool, details: Mapping[str, Any] | None = None,
                   reason: Optional[str] = None) -> "ValidationResult":
        return cls(target, k, Status.PASSED if ok else Status.FAILED, check="structure",
                   reason=reason, details=dict(details or {}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ValidationResult":
        kw = dict(d)
        kw["status"] = Status(kw["status"])
        return cls(**kw)

    def summary(self) -> str:
        if self.status is Status.SKIPPED:
            return f"skipped: {self.reason}"
        if self.status is Status.ERROR:
            return f"error: {self.reason}"
        text = self.status.value
        if self.status is Status.FAILED and self.reason:
            text += f": {self.reason}"
        return text


@dataclass
class Reference:
    """Fixed inputs and PyTorch's logits ``model(x, heads=k)`` for every exported k.

    Stored as ``reference.npz`` next to the manifest (keys ``inputs`` and ``logits_k<k>``) so
    that ``hydravit-edge validate DIR`` and the demo apps can check artifacts without PyTorch.
    """

    inputs: np.ndarray
    logits: dict[int, np.ndarray]
    seed: int = 0

    FILE: ClassVar[str] = "reference.npz"

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[0])

    def save(self, path: Path) -> None:
        arrays = {"inputs": self.inputs.astype(np.float32), "seed": np.array(self.seed, dtype=np.int64)}
        arrays.update({f"logits_k{k}": v.astype(np.float32) for k, v in self.logits.items()})
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Reference":
        try:
            with np.load(path) as z:
                inputs = z["inputs"]
                logits = {int(n[len("logits_k"):]): z[n] for n in z.files if n.startswith("logits_k")}
                seed = int(z["seed"]) if "seed" in z.files else 0
        except (OSError, ValueError, KeyError) as exc:
            raise ValidationError(f"{path}: unreadable reference data ({exc})") from None
        return cls(inputs, logits, seed)


# =========================================================================== comparison

def compare(target: str, k: int, got: np.ndarray, ref: np.ndarray, tolerance: float, *,
            check: str = "runtime", runtime: Optional[str] = None) -> ValidationResult:
    """Compare logits ``got`` with PyTorch's ``ref``: max abs error and top-1 agreement.

    Passes when the max abs error is within ``tolerance``.  The top-1 agreement over the batch
    is reported; a changed top-1 class is named in the reason for samples whose reference top-2
    margin exceeds ``2 * tolerance`` (a near-tie may legitimately flip within tolerance, and
    with a margin above that a flip implies an error above tolerance).
    """
    got = np.asarray(got, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if got.shape != ref.shape:
        return ValidationResult(target, k, Status.FAILED, check=check, tolerance=tolerance, batch=int(ref.shape[0]),
                                runtime=runtime, reason=f"output shape {tuple(got.shape)} != expected {tuple(ref.shape)}")
    if not np.all(np.isfinite(got)):
        return ValidationResult(target, k, Status.FAILED, check=check, tolerance=tolerance, batch=int(ref.shape[0]),
                                runtime=runtime, reason="non-finite outputs")
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    top_got, top_ref = got.argmax(-1), ref.argmax(-1)
    agree = float(np.mean(top_got == top_ref)) if ref.shape[0] else 1.0
    if ref.shape[-1] > 1:
        part = np.sort(ref, axis=-1)
        decisive = (part[:, -1] - part[:, -2]) > 2 * tolerance
    else:
        decisive = np.ones(ref.shape[0], dtype=bool)
    flipped = int(np.sum((top_got != top_ref) & decisive))
    reasons = []
    if err > tolerance:
        reasons.append(f"max abs error {err:.3g} > tolerance {tolerance:g}")
    if flipped:
        reasons.append(f"top-1 differs on {flipped} of {ref.shape[0]} inputs")
    return ValidationResult(
        target, k, Status.FAILED if reasons else Status.PASSED, check=check, max_abs_err=err,
        top1_agreement=agree, tolerance=tolerance, batch=int(ref.shape[0]), runtime=runtime,
        reason="; ".join(reasons) or None,
    )


# =========================================================================== files

def path_size(path: Path) -> int:
    """Bytes of a file, or of every file below a directory (e.g. an .mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_sha256(path: Path) -> str:
    """sha256 of a file; for a directory, sha256 of the lines ``"<relative posix path>\\0<file sha256>\\n"``
    over its files in sorted order (documented in the manifest schema)."""
    path = Path(path)
    if not path.is_dir():
        return _file_sha256(path)
    h = hashlib.sha256()
    for p in sorted((q for q in path.rglob("*") if q.is_file()), key=lambda q: q.relative_to(path).as_posix()):
        h.update(f"{p.relative_to(path).as_posix()}\0{_file_sha256(p)}\n".encode())
    return h.hexdigest()


# =========================================================================== exporter

class Exporter:
    """Base class of a deployment target.  See the module docstring for the contract."""

    #: ``--target`` value, manifest key and output subdirectory.
    name: ClassVar[str] = ""
    #: human-readable name for tables.
    title: ClassVar[str] = ""
    #: artifact suffix: per-k files are ``k<k><suffix>``, the single artifact ``hydravit<suffix>``.
    suffix: ClassVar[str] = ""
    #: pip extra that installs this target's optional dependencies (None: core dependencies).
    extra: ClassVar[Optional[str]] = None
    #: modules needed to export / to run the artifacts.
    export_requires: ClassVar[tuple[str, ...]] = ()
    runtime_requires: ClassVar[tuple[str, ...]] = ()
    #: distributions whose versions are recorded in the manifest.
    packages: ClassVar[tuple[str, ...]] = ("torch",)
    #: modes this target can produce.
    modes: ClassVar[tuple[str, ...]] = MODES
    #: how k is selected inside a single artifact (see ArtifactRecord.entry_kind).
    entry_kind: ClassVar[str] = "graph"
    #: max abs logit error vs PyTorch that validation accepts, and the numeric precision.
    tolerance: ClassVar[float] = 1e-4
    precision: ClassVar[str] = "fp32"
    #: seconds the validation subprocess may take (all ks).
    validation_timeout: ClassVar[float] = 1800.0
    #: by default (no ``--jobs``), models with fewer parameters export in one process: below
    #: this size a worker's start-up costs more than the per-k work it takes over.
    parallel_min_params: ClassVar[int] = 20_000_000

    # ---- names ------------------------------------------------------------------------
    def per_k_filename(self, k: int) -> str:
        return f"k{k}{self.suffix}"

    @property
    def single_filename(self) -> str:
        return f"hydravit{self.suffix}"

    def entry_name(self, k: int) -> Optional[str]:
        """Name of k's entry in a single artifact (method/function/signature); None for graphs."""
        return None

    # ---- dependencies -----------------------------------------------------------------
    def missing(self, purpose: str = "export") -> Optional[str]:
        """None when the modules for ``purpose`` ("export" or "runtime") import, else a message."""
        mods = self.export_requires if purpose == "export" else self.runtime_requires
        absent = [m for m in mods if importlib.util.find_spec(m.split(".")[0]) is None]
        if not absent:
            return None
        hint = f"pip install 'hydravit-edge[{self.extra}]'" if self.extra else "pip install hydravit-edge"
        return f"{self.title or self.name} {purpose} needs {', '.join(absent)}; install it with: {hint}"

    def require(self, purpose: str = "export") -> None:
        msg = self.missing(purpose)
        if msg:
            raise MissingDependencyError(msg)

    def versions(self) -> dict[str, str]:
        out = {}
        for dist in self.packages:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
        return out

    # ---- the contract -----------------------------------------------------------------
    def export(self, model: Any, heads: Sequence[int], out_dir: Path, mode: str,
               progress: Optional[ProgressFn] = None, pool: Any = None) -> list[ArtifactRecord]:
        raise NotImplementedError

    def export_k(self, model: Any, k: int, out_dir: Path) -> ArtifactRecord:
        """Write the per-k file of k into ``out_dir`` and return its record (one unit of
        :meth:`export_per_k`; runs in a worker process when exporting in parallel)."""
        raise NotImplementedError(f"target {self.name} has no per-k export unit")

    def export_per_k(self, model: Any, heads: Sequence[int], out_dir: Path, progress: Optional[ProgressFn] = None,
                     pool: Any = None) -> list[ArtifactRecord]:
        """:meth:`export_k` for every k, spread over ``pool``'s workers (in this process without one)."""
        pool = pool if pool is not None else ExportPool(model, 1)
        done = pool.map(functools.partial(per_k_task, target=self.name, out_dir=str(out_dir)), heads, progress,
                        label=f"{self.name} k={{k}}")
        return [done[k] for k in heads]

    @staticmethod
    def single_pool(model: Any, heads: Sequence[int], pool: Any = None) -> tuple[Any, Any]:
        """``(pool, narrowed)`` for a single artifact: the pool (an in-process one without it) and
        the model narrowed to ``max(heads)`` that the pool holds (a subset stores only what it uses)."""
        if pool is None:
            pool = ExportPool(model.narrow(max(heads)), 1)
        return pool, pool.model

    def runtime_skip_reason(self) -> Optional[str]:
        """A reason the artifacts cannot run on this machine (e.g. "needs macOS"), else None."""
        return self.missing("runtime")

    def runtime_label(self) -> str:
        """Runtime and version shown in validation results, e.g. "onnxruntime 1.31.0"."""
        return ", ".join(f"{k} {v}" for k, v in self.versions().items() if k != "torch")

    def validate(self, out_dir: Path, records: Sequence[ArtifactRecord], reference: Reference,
                 progress: Optional[ProgressFn] = None) -> list[ValidationResult]:
        """Run every record in this target's runtime, in a subprocess, and compare with PyTorch."""
        reason = self.runtime_skip_reason()
        if reason:
            return [ValidationResult.skipped(self.name, r.k, reason, tolerance=self.tolerance) for r in records]
        outputs = run_in_runner(self.name, Path(out_dir), records, reference.inputs, timeout=self.validation_timeout)
        results = []
        label = self.runtime_label()
        for r in records:
            got = outputs.get(r.k)
            if isinstance(got, str):
                results.append(ValidationResult.error(self.name, r.k, got, tolerance=self.tolerance, runtime=label,
                                                      batch=reference.batch))
            elif r.k not in reference.logits:
                results.append(ValidationResult.error(self.name, r.k, f"no reference logits for k={r.k}"))
            else:
                results.append(compare(self.name, r.k, got, reference.logits[r.k], self.tolerance, runtime=label))
            if progress:
                progress(f"k={r.k}")
        return results

    def describe(self, out_dir: Path, records: Sequence[ArtifactRecord]) -> dict[str, Any]:
        return {}


# =========================================================================== runner

def run_in_runner(target: str, target_dir: Path, records: Iterable[ArtifactRecord], inputs: np.ndarray,
                  timeout: float = 1800.0) -> dict[int, np.ndarray | str]:
    """Run each record in ``target``'s engine (:mod:`hydravit_edge.engines`) in a fresh process.

    Returns ``{k: logits}``, or ``{k: "error text"}`` for a record that could not be run.
    """
    return run_isolated(target, Path(target_dir), [r.to_dict() for r in records], inputs, timeout=timeout)


def machine_info() -> dict[str, str]:
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()}
