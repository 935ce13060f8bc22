"""ExecuTorch: ``.pte`` programs (XNNPACK), one method per k; its runtime imported without the compiler.

ExecuTorch's Python runtime takes ``torch`` tensors, so opening a ``.pte`` imports torch (not
ExecuTorch's ahead-of-time compiler: :mod:`hydravit_edge.executorch_runtime`).

Records with ``extra.lazy_data`` (single artifacts, :mod:`.ptd`): k's program is loaded with its
named data cut from the weights file.  A session opened on the weights file of an int8 single
artifact (``lazy_data.weights_format == "raw"``: a plain binary file, not a program) loads each k's
own program (``lazy_data.program``, method ``lazy_data.method``): one session that holds every k.
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
        self._runtime = runtime.Runtime.get()
        self.methods: dict[int, Any] = {}
        #: k -> its own program (lazy: loaded with the named data cut for k)
        self.programs: dict[int, Any] = {}
        self.program = None
        if not any((r.get("extra") or {}).get("lazy_data") for r in self.records.values()):
            try:
                self.program = self._runtime.load_program(Path(path))
            except Exception as exc:
                raise EngineError(f"{path}: ExecuTorch cannot load it ({first_line(exc)})") from None

    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        name = record.get("entry") or DEFAULT_METHOD
        program = self.program
        layout = (record.get("extra") or {}).get("lazy_data")
        if layout:
            path = self.path
            if layout.get("weights_format") == "raw" and self.path.name == layout.get("weights"):
                # the weights file is no program: k's own program runs (with its named data cut from it)
                path, name = self.path.parent / layout["program"], layout.get("method") or DEFAULT_METHOD
            program = self.programs[k] = self._load_with_data(layout, path)
        if name not in program.method_names:
            raise EngineError(f"{self.path}: no method '{name}' (it has {sorted(program.method_names)})")
        self.methods[k] = program.load_method(name)  # XNNPACK packs the weights here, once

    def _load_with_data(self, layout: Mapping[str, Any], path: Path):
        """k's program (``path``) with its named data: cut from the memory-mapped weights file
        (``hydravit.pte``, or an int8 artifact's raw weights) into a temporary .ptd, which is deleted
        once the method is loaded (XNNPACK has packed it then)."""
        import os
        import tempfile

        from .ptd import synthesize

        folder = self.path.parent
        weights = np.memmap(folder / layout["weights"], dtype=np.uint8, mode="r")
        try:
            data = synthesize(layout, (folder / layout["head"]).read_bytes(), weights)
        except ValueError as exc:
            raise EngineError(f"{path}: {exc}") from None
        del weights
        fd, tmp = tempfile.mkstemp(suffix=".ptd", prefix="hydravit-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            del data
            try:
                program = self._runtime.load_program(path, data_path=tmp)
            except Exception as exc:
                raise EngineError(f"{path}: ExecuTorch cannot load it with its named data ({first_line(exc)})") from None
            return _DeleteAfterLoad(program, tmp)
        except BaseException:
            os.unlink(tmp)
            raise

    def feed(self, k, x):
        return (self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),)

    def call(self, k, feed):
        return self.methods[k].execute(feed)[0]

    def to_numpy(self, out):
        # a copy: the logits must not alias a buffer the runtime may reuse on the next call
        return out.detach().numpy().astype(np.float32, copy=True)


class _DeleteAfterLoad:
    """A program whose temporary named-data file is deleted once its method has been loaded."""

    def __init__(self, program, tmp: str) -> None:
        self._program, self._tmp = program, tmp

    @property
    def method_names(self):
        return self._program.method_names

    def load_method(self, name: str):
        import os

        try:
            return self._program.load_method(name)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)


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
