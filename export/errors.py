"""The export framework's errors (shared by the exporters, the worker pool and the API)."""

from __future__ import annotations

from hydravit_edge.errors import HydraEdgeError

__all__ = ["ExportError", "ValidationError"]


class ExportError(HydraEdgeError):
    """A target failed to produce its artifact (message meant for the user)."""


class ValidationError(HydraEdgeError):
    """An artifact does not reproduce PyTorch within tolerance, or could not be run."""
