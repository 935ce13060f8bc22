"""Core ML: ``.mlpackage`` programs, one function per k in a single package, run by coremltools' predict.

Core ML runs on Apple platforms only: on macOS this engine runs the packages (CPU only, as the
validation compares fp32 logits); elsewhere :meth:`CoreMLEngine.missing` says so and nothing is
imported.  On iPhones the iOS demo app runs them (its reports name this backend).
"""

from __future__ import annotations

import platform
import sys
from typing import Any, Mapping, Optional

import numpy as np

from .base import Engine, EngineError, Session, first_line, register_engine


class CoreMLSession(Session):
    """One ``MLModel`` per k (a multifunction package loads one function per model)."""

    def __init__(self, engine, path, records):
        super().__init__(engine, path, records)
        import coremltools as ct

        self._ct = ct
        self.models: dict[int, Any] = {}

    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        ct = self._ct
        try:
            self.models[k] = ct.models.MLModel(str(self.path), function_name=record.get("entry"),
                                               compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as exc:
            raise EngineError(f"{self.path}: Core ML cannot load k={k} ({first_line(exc)})") from None

    def max_batch(self, k):
        return 1  # the packages take one image per prediction

    def feed(self, k, x):
        return {"image": np.ascontiguousarray(x, dtype=np.float32)}

    def call(self, k, feed):
        return self.models[k].predict(feed)["logits"]

    def to_numpy(self, out):
        return np.asarray(out, dtype=np.float32).reshape(1, -1)


@register_engine
class CoreMLEngine(Engine):
    name = "coreml"
    runtime_imports = ("coremltools",)

    def missing(self) -> Optional[str]:
        if sys.platform != "darwin":
            return (f"the coreml backend runs Core ML packages on macOS only (this is {platform.system()}); "
                    "on iPhones the iOS demo app runs them")
        return super().missing()

    def _open(self, path, records, *, threads, device, details):
        return CoreMLSession(self, path, records)
