"""User-facing errors.

Every error a user can act on (a bad path, a corrupt checkpoint, a head count the
model does not have, a missing optional dependency) is raised as a
:class:`HydraEdgeError`.  The CLI prints its message in one line and exits with
``exit_code``; Python callers can catch it like any other exception.
"""

from __future__ import annotations

import functools


class HydraEdgeError(Exception):
    """An error with a message meant for the user; the CLI prints it without a traceback."""

    exit_code = 1


class UsageError(HydraEdgeError, ValueError):
    """Bad command-line or API arguments (exit code 2, like argparse/click usage errors)."""

    exit_code = 2


class CheckpointError(HydraEdgeError):
    """A checkpoint file that cannot be read or does not fit the model."""


class NotFoundError(UsageError):
    """A file or directory the user named does not exist: a usage error (exit 2) in every command."""


@functools.lru_cache(maxsize=None)
def _not_found_class(base: type) -> type:
    if issubclass(base, NotFoundError):
        return base
    return type(f"{base.__name__}NotFound", (base, NotFoundError), {"exit_code": NotFoundError.exit_code,
                                                                     "__module__": base.__module__})


def not_found(base: type, message: str) -> HydraEdgeError:
    """``base(message)`` that is also a :class:`NotFoundError` (callers catching ``base`` still catch it)."""
    return _not_found_class(base)(message)


class MissingDependencyError(HydraEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised with monkeypatch in tests
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}' ({exc}). "
            f"Install it with: pip install 'hydravit-edge[{extra}]'"
        ) from exc


#: top-level module -> the pip extra that installs it (the base install has numpy, onnxruntime,
#: pillow, typer, rich, pydantic and psutil: what running an exported model needs)
EXTRA_OF_MODULE = {
    "torch": "train", "torchvision": "train", "timm": "train", "safetensors": "train", "sklearn": "train",
    "onnx": "export", "onnxscript": "export", "coremltools": "export",
    "executorch": "executorch",
    "ai_edge_litert": "tflite", "litert_torch": "tflite", "tflite_runtime": "tflite",
    "matplotlib": "bench", "cpuinfo": "bench",
}


def missing_dependency(exc: ModuleNotFoundError) -> "MissingDependencyError | None":
    """The :class:`MissingDependencyError` (naming the extra) for a module an extra installs, else None."""
    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    err = MissingDependencyError(f"this needs the Python package '{root}', which the base install leaves out. "
                                 f"Install it with: pip install 'hydravit-edge[{extra}]'")
    err.__cause__ = exc
    return err
