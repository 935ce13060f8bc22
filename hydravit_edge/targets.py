"""The one table of deployment targets and the runtimes that run them.

Every list of targets or runtimes in the toolkit is a lookup into :data:`TARGETS` (what
``hydravit-edge export`` writes) or :data:`RUNTIMES` (what ``bench`` rows, the LUT and the
Python runtime name in their ``backend`` field):

* the exporter registry loads ``TARGETS[i].module`` in table order (``--target all`` and
  every table follow it);
* a report row's ``backend`` is one of :func:`runtime_names` (the report schema's enum);
* the LUT prefers, among configurations of the same coverage, the runtime listed first;
* :class:`hydravit_edge.runtime.Runtime` picks the first of :func:`python_runtimes` whose
  artifacts the export holds and whose module is installed.

Plain data: this module imports nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["Target", "RuntimeInfo", "TARGETS", "RUNTIMES", "MODES", "ROW_MODES", "target", "target_names",
           "runtime", "runtime_names", "runtime_for_target", "python_runtimes", "preference"]

#: Export modes: one artifact holding every k, or one artifact per k.
MODES = ("single", "per-k")
#: A report row's ``mode``: the export modes, or eager PyTorch (no artifact).
ROW_MODES = MODES + ("eager",)


@dataclass(frozen=True)
class Target:
    """An export target: what ``hydravit-edge export --target NAME`` writes."""

    #: ``--target`` value, manifest ``targets`` key and output subdirectory.
    name: str
    title: str
    #: file suffix: per-k artifacts are ``k3<suffix>``, a single one ``hydravit<suffix>``.
    suffix: str
    #: the runtime (:data:`RUNTIMES` name) that runs its artifacts.
    runtime: str
    #: module defining (and registering) its exporter.
    module: str
    #: pip extra installing its dependencies (None: core dependencies).
    extra: Optional[str] = None
    #: export modes it can produce.
    modes: tuple[str, ...] = MODES


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime: the ``backend`` of benchmark rows and LUT entries."""

    name: str
    #: export target whose artifacts it runs; None: eager PyTorch (no artifact).
    target: Optional[str]
    #: modules it needs, and the pip extra installing them.
    modules: tuple[str, ...] = ()
    extra: Optional[str] = None
    #: ``hydravit-edge bench`` can run it on this kind of machine (Linux/macOS, Python).
    bench: bool = True
    #: :class:`hydravit_edge.runtime.Runtime` can load its artifacts.
    python_runtime: bool = False
    #: the platforms it runs on (None: everywhere Python runs); Core ML runs on Apple devices.
    platforms: Optional[tuple[str, ...]] = None


#: Export targets, in table order (``--target all``, tables, the manifest).
TARGETS: tuple[Target, ...] = (
    Target("onnx", "ONNX", ".onnx", "onnxruntime", "hydravit_edge.export.onnx"),
    Target("executorch", "ExecuTorch (XNNPACK)", ".pte", "executorch", "hydravit_edge.export.executorch"),
    Target("coreml", "Core ML", ".mlpackage", "coreml", "hydravit_edge.export.coreml"),
    Target("tflite", "TFLite (LiteRT)", ".tflite", "tflite", "hydravit_edge.export.tflite", extra="tflite"),
)

#: Runtimes, in order of preference (the LUT's tie-break, the Python runtime's default choice).
RUNTIMES: tuple[RuntimeInfo, ...] = (
    RuntimeInfo("onnxruntime", "onnx", ("onnxruntime",), python_runtime=True),
    RuntimeInfo("executorch", "executorch", ("executorch",), python_runtime=True),
    RuntimeInfo("tflite", "tflite", ("ai_edge_litert",), extra="tflite", python_runtime=True),
    # Core ML artifacts run in the iOS app (its reports name this backend), not in `bench` here.
    RuntimeInfo("coreml", "coreml", ("coremltools",), bench=False, platforms=("ios", "macos")),
    # eager PyTorch HydraViT: the paper's reference protocol (`bench --backend torch`)
    RuntimeInfo("torch", None, ("torch", "timm")),
)


def target_names() -> tuple[str, ...]:
    return tuple(t.name for t in TARGETS)


def runtime_names() -> tuple[str, ...]:
    return tuple(r.name for r in RUNTIMES)


def python_runtimes() -> tuple[str, ...]:
    """Runtimes :class:`hydravit_edge.runtime.Runtime` can use, in order of preference."""
    return tuple(r.name for r in RUNTIMES if r.python_runtime)


def target(name: str) -> Target:
    for t in TARGETS:
        if t.name == name:
            return t
    raise KeyError(f"unknown target '{name}'; known: {', '.join(target_names())}")


def runtime(name: str) -> RuntimeInfo:
    for r in RUNTIMES:
        if r.name == name:
            return r
    raise KeyError(f"unknown runtime '{name}'; known: {', '.join(runtime_names())}")


def runtime_for_target(name: str) -> Optional[RuntimeInfo]:
    """The runtime that runs artifacts of export target ``name`` (None when there is none)."""
    return next((r for r in RUNTIMES if r.target == name), None)


def preference(runtime_name: str) -> int:
    """Rank of a runtime in :data:`RUNTIMES` (unknown names last)."""
    names = runtime_names()
    return names.index(runtime_name) if runtime_name in names else len(names)
