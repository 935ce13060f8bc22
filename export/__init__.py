"""Exporting HydraViT to ONNX, ExecuTorch, Core ML and TFLite, with validation (``hydravit_edge.export``).

>>> from hydravit_edge.export import export_model, validate_dir
>>> report = export_model(checkpoint="runs/digits/best.safetensors", heads="3..12", targets="onnx")
>>> validate_dir(report.out_dir).raise_for_failures()

The manifest an export writes is read with :meth:`hydravit_edge.contract.manifest.Manifest.load`.

Targets are registered exporter classes (:mod:`hydravit_edge.export.base`); the CLI commands
are ``hydravit-edge export``, ``hydravit-edge validate`` and ``hydravit-edge export-bench``.
"""

from .api import ExportReport, OutputExistsError, ValidationReport, export_model, find_checkpoint, validate_dir
from .base import (ArtifactRecord, Exporter, ExportError, TensorSpec, ValidationError, ValidationResult, exporter_names,
                   get_exporter, register_exporter)

__all__ = [
    "export_model", "validate_dir", "find_checkpoint", "ExportReport", "ValidationReport",
    "OutputExistsError", "Exporter", "ArtifactRecord", "TensorSpec", "ValidationResult", "ExportError",
    "ValidationError", "register_exporter", "get_exporter", "exporter_names",
]
