"""Exporting HydraViT to ONNX, ExecuTorch, Core ML and TFLite, with validation (``hydravit_edge.export``).

>>> from hydravit_edge.export import export_model, validate_dir
>>> report = export_model(checkpoint="runs/digits/best.safetensors", heads="3..12", targets="onnx")
>>> validate_dir(report.out_dir).raise_for_failures()

The manifest an export writes is read with :meth:`hydravit_edge.contract.manifest.Manifest.load`.

Layout: :mod:`.api` (``export_model``), one module per target (:mod:`.onnx`, :mod:`.executorch`,
:mod:`.coreml`, :mod:`.tflite`) on the exporter base (:mod:`.base`) and its input/output specs
(:mod:`.specs`), the target registry (:mod:`.registry`), the worker pool (:mod:`.parallel`),
records and validation (:mod:`.records`, :mod:`.validation`), the manifest (:mod:`.manifest_build`),
file hashes (:mod:`.hashing`) and atomic output (:mod:`.staging`).  The CLI commands are
``hydravit-edge export`` and ``hydravit-edge validate`` (:mod:`.cli`); the export benchmark
(``hydravit-edge export-bench``) lives with the benchmarks (``hydravit_edge.bench.export_bench``).
"""

from .api import ExportReport, export_model, find_checkpoint
from .base import Exporter, converting
from .errors import ExportError, ValidationError
from .records import ArtifactRecord, Reference, Status, TensorSpec, ValidationResult
from .registry import exporter_names, exporters, get_exporter, register_exporter
from .specs import IOSpec
from .staging import OutputExistsError
from .validation import ValidationReport, compare, validate_dir

__all__ = [
    "export_model", "validate_dir", "find_checkpoint", "ExportReport", "ValidationReport",
    "OutputExistsError", "Exporter", "ArtifactRecord", "TensorSpec", "ValidationResult", "ExportError",
    "ValidationError", "register_exporter", "get_exporter", "exporter_names", "exporters", "Reference", "Status",
    "compare", "converting", "IOSpec",
]
