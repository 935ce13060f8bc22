"""The exporter interface: one class per deployment target.

Every deployment target (ONNX, ExecuTorch, Core ML, TFLite) is ONE class derived from
:class:`Exporter` and registered with :func:`~.registry.register_exporter`.  The ``export`` and
``validate`` commands, the Python API (:mod:`hydravit_edge.export.api`) and the benchmark
harness only ever iterate :func:`~.registry.exporters` / call :func:`~.registry.get_exporter`;
nothing outside a target's own module knows anything target-specific.

How a target plugs in
=====================

1. Add its row to :data:`hydravit_edge.targets.TARGETS` (name, title, file suffix, runtime,
   module, pip extra, modes; the order is the order of tables and ``--target all``) and create
   ``export/<target>.py`` (installed as ``hydravit_edge.export.<target>``).  The class reads
   title, suffix, extra and modes from that row, and the modules its artifacts need to run from
   the runtime's row of :data:`~hydravit_edge.targets.RUNTIMES`.  At module level import only
   the standard library, ``numpy`` and this package: the optional dependency is imported inside
   methods, so the class registers (and can say what is missing) where it is not installed::

       @register_exporter
       class TFLiteExporter(Exporter):
           name = "tflite"                    # the row of hydravit_edge.targets.TARGETS
           export_requires = ("litert_torch",)        # modules needed to export
           packages = ("litert-torch", "ai-edge-litert", "torch")  # versions go to the manifest
           entry_kind = "signature"           # what selects k inside a single artifact
           io = IOSpec(batch=1)               # its inputs and outputs (:mod:`.specs`)
           tolerance = 1e-4                   # max |logit error| vs PyTorch (fp32)

2. The conversion.  :meth:`Exporter.export` narrows the model to ``max(heads)`` once (or takes
   the one the pool's workers hold, which :func:`~.api.export_model` narrowed) and hands that
   model to

   * ``export_k(model, k, out_dir) -> ArtifactRecord``: write the per-k file of k (from
     ``model.subnet(k)``).  It runs in a worker process with ``--jobs``, so it must not keep
     state on ``self``.
   * ``export_single(model, heads, out_dir, progress, pool) -> list[ArtifactRecord]``: one
     artifact holding every k, weights stored once, k chosen at run time
     (``model.forward_heads(x, k)``).  Slow independent per-k pieces go through
     ``pool.map(fn, heads, progress)`` (a picklable ``fn(model, k)``, run in the pool's
     workers: ONNX's per-k graphs, ExecuTorch's separately lowered methods) and are assembled
     here.  A target that cannot store the weights once may fall back to per-k files: return
     :meth:`export_per_k`'s records with the reason in each record's ``notes``.

   ``out_dir`` is an existing, empty directory (``<staging>/<name>``); write every file below it
   and nothing elsewhere (the framework renames the staging directory into place after export
   AND validation succeeded, or deletes it).  Records name files RELATIVE to ``out_dir``
   (:meth:`per_k_filename`, :attr:`single_filename`; a directory such as ``hydravit.mlpackage``
   is fine) and are built with :meth:`record`, which takes the inputs and outputs from ``io``.
   Sizes and sha256 are computed by the framework.  Run each converter call inside
   ``with converting(target, "<converter>", k):`` (:func:`converting`): its failure becomes the
   one :class:`ExportError` users see, naming the target, k and the converter's first line.

3. Running the artifacts is not the exporter's job: the runtime layer
   (:mod:`hydravit_edge.engines`) has one engine per runtime of :data:`hydravit_edge.targets.RUNTIMES`.
   The default :meth:`Exporter.validate` runs every record there, in a separate process that
   never runs PyTorch (:func:`~.validation.run_in_runner`), exactly as a deployment opens the
   files, and compares with ``reference.logits[k]`` (= ``model(x, heads=k)``) through
   :func:`~.validation.compare`: max abs error <= ``tolerance`` and top-1 agreement.  A target
   that cannot run here (Core ML on Linux) overrides ``validate`` and returns, per k,
   ``ValidationResult.skipped(name, k, "needs macOS")`` for ``check="runtime"`` -- never a
   "passed" it did not earn -- plus results with other ``check`` names for what it DID verify
   (``"structure"``: :meth:`ValidationResult.structural`; ``"source-program"``: the PyTorch
   program it converted).  A failed or errored result makes ``export``/``validate`` exit
   non-zero.  :meth:`Exporter.runtime_skip_reason` returning a string makes the default
   ``validate`` report that skip for every k without launching the runtime.

4. ``describe(out_dir, records) -> dict``: target-specific facts for the manifest
   (``targets.<name>.details``), e.g. opset, delegate, deployment target.  JSON-serialisable.

Optional dependencies: :meth:`Exporter.missing` returns ``None`` or a message naming the
extra (``pip install 'hydravit-edge[tflite]'``); :meth:`Exporter.require` raises
:class:`~hydravit_edge.errors.MissingDependencyError` with it.  ``--target all`` skips targets
whose export dependencies are missing and says so; naming such a target explicitly is an error.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import posixpath
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional, Sequence

import numpy as np

from hydravit_edge.errors import HydraEdgeError, MissingDependencyError, UsageError
from hydravit_edge.heads import format_heads
from hydravit_edge.targets import MODES, TARGETS, runtime_for_target

from .errors import ExportError
from .parallel import ExportPool, per_k_task
from .progress import ProgressFn
from .quantize import FP32, HeldOutRef, QuantSpec, judge
from .records import ArtifactRecord, Reference, ValidationResult
from .registry import register_exporter
from .specs import IOSpec
from .validation import compare, run_in_runner

__all__ = ["Exporter", "converting", "stored_params", "register_exporter"]


@contextlib.contextmanager
def converting(target: str, converter: str, heads: int | Sequence[int]) -> Iterator[None]:
    """Turn a converter's failure into the :class:`ExportError` users see.

    ``with converting("onnx", "torch.onnx.export", k): ...`` -- any exception in the block
    becomes ``ExportError("onnx k=3: torch.onnx.export failed: <Type>: <its first line>")``
    (the original is the ``__cause__``).  Errors that already speak to the user
    (:class:`~hydravit_edge.errors.HydraEdgeError`: an inner conversion step, a missing
    dependency) pass through unchanged.
    """
    try:
        yield
    except HydraEdgeError:
        raise
    except Exception as exc:
        ks = format_heads([heads] if isinstance(heads, int) else heads)
        lines = str(exc).strip().splitlines()
        raise ExportError(f"{target} k={ks}: {converter} failed: {type(exc).__name__}: "
                          f"{lines[0] if lines else ''}") from exc


def stored_params(model) -> int:
    """Parameters a single artifact of ``model`` (narrowed to its largest k) stores: all of them,
    less the shared classifier ``head`` when every k has its own (``head_k``) and ``head`` is unused."""
    n = sum(p.numel() for p in model.parameters())
    if model.head_k is not None:
        n -= model.head.weight.numel() + model.head.bias.numel()
    return n


class Exporter:
    """Base class of a deployment target.  See the module docstring for the contract."""

    #: ``--target`` value, manifest key and output subdirectory: a row of :data:`~hydravit_edge.targets.TARGETS`.
    name: ClassVar[str] = ""
    #: from the table row (a class outside the table sets them itself): human-readable name,
    #: artifact suffix (per-k files ``k<k><suffix>``, the single one ``hydravit<suffix>``), pip
    #: extra of the optional dependencies (None: core), the modes it can produce, and its runtime.
    title: ClassVar[str] = ""
    suffix: ClassVar[str] = ""
    extra: ClassVar[Optional[str]] = None
    modes: ClassVar[tuple[str, ...]] = MODES
    runtime: ClassVar[Optional[str]] = None
    #: modules needed to export / to run the artifacts (default: the runtime's modules).
    export_requires: ClassVar[tuple[str, ...]] = ()
    runtime_requires: ClassVar[tuple[str, ...]] = ()
    #: distributions whose versions are recorded in the manifest.
    packages: ClassVar[tuple[str, ...]] = ("torch",)
    #: how k is selected inside a single artifact (see ArtifactRecord.entry_kind).
    entry_kind: ClassVar[str] = "graph"
    #: the inputs and outputs of its artifacts.
    io: ClassVar[IOSpec] = IOSpec()
    #: max abs logit error vs PyTorch that validation accepts, and the numeric precision.
    tolerance: ClassVar[float] = 1e-4
    #: the precisions it exports (:data:`hydravit_edge.precision.PRECISIONS`) and the modes of each;
    #: a precision's own tools run inside ``export_k`` / ``export_single`` (``quant.precision``).
    precisions: ClassVar[dict[str, tuple[str, ...]]] = {"fp32": MODES}
    #: seconds the validation subprocess may take (all ks).
    validation_timeout: ClassVar[float] = 1800.0
    #: by default (no ``--jobs``), models with fewer parameters export in one process: below
    #: this size a worker's start-up costs more than the per-k work it takes over.
    parallel_min_params: ClassVar[int] = 20_000_000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = next((t for t in TARGETS if t.name == cls.__dict__.get("name")), None)
        if row is None:
            return
        for attr in ("title", "suffix", "extra", "modes", "runtime"):
            if attr not in cls.__dict__:
                setattr(cls, attr, getattr(row, attr))
        if "runtime_requires" not in cls.__dict__:
            rt = runtime_for_target(row.name)
            cls.runtime_requires = rt.modules if rt is not None else ()

    # ---- names ------------------------------------------------------------------------
    def per_k_filename(self, k: int) -> str:
        return f"k{k}{self.suffix}"

    @property
    def single_filename(self) -> str:
        return f"hydravit{self.suffix}"

    def entry_name(self, k: int) -> Optional[str]:
        """Name of k's entry in a single artifact (method/function/signature); None for graphs."""
        return None

    def record(self, cfg, k: int, mode: str, entry: Optional[str] = None, **kw: Any) -> ArtifactRecord:
        """The record of k: the per-k file or the single artifact, inputs and outputs from :attr:`io`.

        ``entry_kind`` is the target's for a single artifact or a named entry, ``"graph"`` for
        a per-k file that is one graph; ``kw`` (``extra``, ``notes``) goes to the record.
        """
        single = mode == "single"
        return ArtifactRecord(k, self.single_filename if single else self.per_k_filename(k), entry,
                              self.entry_kind if single or entry is not None else "graph", mode,
                              self.io.inputs(cfg, mode), self.io.outputs(cfg), **kw)

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

    # ---- precision ----------------------------------------------------------------------
    def unsupported(self, precision: str, mode: str) -> Optional[str]:
        """Why this target cannot export ``precision`` in ``mode`` (None: it can)."""
        modes = self.precisions.get(precision)
        if modes is None:
            return (f"{self.name} does not export {precision} (it exports "
                    f"{', '.join(self.precisions)}){self.precision_notes.get(precision, '')}")
        if mode not in modes:  # offered, but not in this mode: the note says why
            return f"{self.name} exports {precision} only as --mode {', '.join(modes)}{self.precision_notes.get(precision, '')}"
        return None

    #: why a precision is not offered, or not in every mode (appended to :meth:`unsupported`'s message)
    precision_notes: ClassVar[dict[str, str]] = {}

    def quantization_info(self, quant: QuantSpec) -> Optional[dict[str, Any]]:
        """The manifest's ``targets.<key>.quantization`` for ``quant`` (None for fp32): the target's
        tool and scheme; the framework adds the precision's words and the calibration images."""
        return None

    # ---- export -----------------------------------------------------------------------
    def export(self, model: Any, heads: Sequence[int], out_dir: Path, mode: str,
               progress: Optional[ProgressFn] = None, pool: Optional[ExportPool] = None,
               quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        """Write ``mode``'s artifacts of ``heads`` into ``out_dir`` and return one record per k.

        The model is narrowed to ``max(heads)`` once: ``pool`` (``--jobs``) holds it narrowed
        already, as its workers do; without a pool it is narrowed here.  That one model goes to
        :meth:`export_k` / :meth:`export_single`.
        """
        self.require("export")
        heads = tuple(heads)
        if pool is None:
            pool = ExportPool(model.narrow(max(heads)), 1)
        why = self.unsupported(quant.precision, mode)
        if why:
            raise UsageError(why)
        if mode == "per-k":
            return self.export_per_k(pool.model, heads, Path(out_dir), progress, pool, quant)
        return self.export_single(pool.model, heads, Path(out_dir), progress, pool, quant)

    def export_k(self, model: Any, k: int, out_dir: Path, quant: QuantSpec = FP32) -> ArtifactRecord:
        """Write the per-k file of k at ``quant.precision`` into ``out_dir`` and return its record (one
        unit of :meth:`export_per_k`; runs in a worker process when exporting in parallel)."""
        raise NotImplementedError(f"target {self.name} has no per-k export unit")

    def export_per_k(self, model: Any, heads: Sequence[int], out_dir: Path, progress: Optional[ProgressFn] = None,
                     pool: Optional[ExportPool] = None, quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        """:meth:`export_k` for every k, spread over ``pool``'s workers (in this process without one)."""
        pool = pool if pool is not None else ExportPool(model, 1)
        done = pool.map(functools.partial(per_k_task, target=self.name, out_dir=str(out_dir), quant=quant), heads,
                        progress, label=f"{self.name} k={{k}}")
        return [done[k] for k in heads]

    def export_single(self, model: Any, heads: Sequence[int], out_dir: Path, progress: Optional[ProgressFn],
                      pool: ExportPool, quant: QuantSpec = FP32) -> list[ArtifactRecord]:
        """One artifact holding every k of ``heads`` (``model`` is narrowed to ``max(heads)``)."""
        raise NotImplementedError(f"target {self.name} has no single-artifact export")

    # ---- validation -------------------------------------------------------------------
    def runtime_skip_reason(self) -> Optional[str]:
        """A reason the artifacts cannot run on this machine (e.g. "needs macOS"), else None."""
        return self.missing("runtime")

    def runtime_label(self) -> str:
        """Runtime and version shown in validation results, e.g. "onnxruntime 1.31.0"."""
        return ", ".join(f"{k} {v}" for k, v in self.versions().items() if k != "torch")

    def lazy_records(self, records: Sequence[ArtifactRecord]) -> list[ArtifactRecord]:
        """The graph / program of each k of a single artifact (``extra.lazy_graph``, named next to the
        single file) as a record of its own: one k, the image input only, what the runtime opens when it
        materialises k lazily (ONNX: the graph of k over the shared external weights; ExecuTorch: k's
        program, method ``extra.lazy_entry``, with the named data ``extra.lazy_data`` cut from the
        shared weights).  Empty for targets and exports without them."""
        out = []
        for r in records:
            extra = r.extra or {}
            if r.mode != "single" or not extra.get("lazy_graph"):
                continue
            entry = extra.get("lazy_entry")
            keep = {key: extra[key] for key in ("lazy_data", "external_data") if extra.get(key)}
            out.append(ArtifactRecord(r.k, posixpath.join(posixpath.dirname(r.file), extra["lazy_graph"]), entry,
                                      "method" if entry else "graph", "single",
                                      [i for i in r.inputs if i.name != "heads"], list(r.outputs), extra=keep))
        return out

    def validate(self, out_dir: Path, records: Sequence[ArtifactRecord], reference: Reference,
                 progress: Optional[ProgressFn] = None, quant: QuantSpec = FP32,
                 heldout: Optional[HeldOutRef] = None) -> list[ValidationResult]:
        """Every record in this target's runtime, in a subprocess, compared with PyTorch; then the
        single artifact's per-k graphs that lazy materialisation opens (:meth:`lazy_records`, ``check="lazy"``).

        fp32: max abs error <= :attr:`tolerance` on the reference inputs.  A quantized precision:
        :func:`~.quantize.judge` (top-1 on ``heldout`` vs PyTorch fp32 when given, else the relative
        logit error and top-1 agreement on the reference inputs)."""
        results = self.validate_records(out_dir, records, reference, progress, quant, heldout)
        lazy = self.lazy_records(records)
        if lazy:
            files = {rec.k: rec.file for rec in lazy}
            for r in self.validate_records(out_dir, lazy, reference, None, quant, heldout):
                r.check = "lazy"
                r.details["file"] = files.get(r.k)  # the per-k graph / program, not the single file
                results.append(r)
        return results

    def validate_records(self, out_dir: Path, records: Sequence[ArtifactRecord], reference: Reference,
                         progress: Optional[ProgressFn] = None, quant: QuantSpec = FP32,
                         heldout: Optional[HeldOutRef] = None) -> list[ValidationResult]:
        """Run every record in this target's runtime, in a subprocess, and compare with PyTorch."""
        reason = self.runtime_skip_reason()
        tol = self.tolerance if not quant.quantized else None
        if reason:
            return [ValidationResult.skipped(self.name, r.k, reason, tolerance=tol) for r in records]
        inputs = reference.inputs
        if quant.quantized and heldout is not None:
            inputs = np.concatenate([reference.inputs, heldout.images.astype(np.float32)])
        outputs = run_in_runner(self.name, Path(out_dir), records, inputs, timeout=self.validation_timeout)
        results = []
        label = self.runtime_label()
        n_ref = reference.batch
        for r in records:
            got = outputs.get(r.k)
            if isinstance(got, str):
                results.append(ValidationResult.error(self.name, r.k, got, tolerance=tol, runtime=label,
                                                      batch=reference.batch))
            elif r.k not in reference.logits:
                results.append(ValidationResult.error(self.name, r.k, f"no reference logits for k={r.k}"))
            elif quant.quantized:
                results.append(judge(self.name, r.k, quant.precision, got[:n_ref], reference.logits[r.k],
                                     got[n_ref:] if heldout is not None else None, heldout, runtime=label))
            else:
                results.append(compare(self.name, r.k, got, reference.logits[r.k], self.tolerance, runtime=label))
            if progress:
                progress(f"k={r.k}")
        return results

    def describe(self, out_dir: Path, records: Sequence[ArtifactRecord]) -> dict[str, Any]:
        return {}
