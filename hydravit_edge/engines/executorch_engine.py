"""ExecuTorch: ``.pte`` programs (XNNPACK), one method per k; its runtime imported without the compiler.

ExecuTorch's Python runtime takes ``torch`` tensors, so opening a ``.pte`` imports torch (not
ExecuTorch's ahead-of-time compiler: :mod:`hydravit_edge.executorch_runtime`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .base import Engine, EngineError, Session, first_line, register_engine

#: the method of a per-k ``.pte`` (records without an ``entry``)
DEFAULT_METHOD = "forward"


class ExecuTorchSession(Session):
    def __init__(self, engine, path, records, threads):
        super().__init__(engine, path, records)
        import torch

        from hydravit_edge.executorch_runtime import import_runtime

        runtime = import_runtime()
        self._torch = torch
        if threads:
            try:
                from executorch.extension.pybindings import portable_lib

                portable_lib._unsafe_reset_threadpool(int(threads))  # XNNPACK's thread pool
            except (ImportError, AttributeError):
                pass
        try:
            self.program = runtime.Runtime.get().load_program(Path(path))
        except Exception as exc:
            raise EngineError(f"{path}: ExecuTorch cannot load it ({first_line(exc)})") from None
        self.methods: dict[int, Any] = {}

    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        name = record.get("entry") or DEFAULT_METHOD
        if name not in self.program.method_names:
            raise EngineError(f"{self.path}: no method '{name}' (it has {sorted(self.program.method_names)})")
        self.methods[k] = self.program.load_method(name)

    def feed(self, k, x):
        return (self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),)

    def call(self, k, feed):
        return self.methods[k].execute(feed)[0]

    def to_numpy(self, out):
        # a copy: the logits must not alias a buffer the runtime may reuse on the next call
        return out.detach().numpy().astype(np.float32, copy=True)


@register_engine
class ExecuTorchEngine(Engine):
    name = "executorch"
    runtime_imports = ("torch",)

    def preload(self) -> None:
        super().preload()
        from hydravit_edge.executorch_runtime import import_runtime

        import_runtime().Runtime.get()

    def compute_label(self, device, details=None):
        delegate = str((details or {}).get("delegate", "xnnpack") or "").lower()
        return "xnnpack" if "xnnpack" in delegate else device

    def _open(self, path, records, *, threads, device, details):
        return ExecuTorchSession(self, path, records, threads)
