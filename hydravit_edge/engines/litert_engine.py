"""LiteRT (``ai-edge-litert``): ``.tflite`` files, one signature per k in a single file."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import Engine, EngineError, Session, first_line, register_engine, static_batch


class LiteRTSession(Session):
    def __init__(self, engine, path, records, threads):
        super().__init__(engine, path, records)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interp = Interpreter(model_path=str(path), num_threads=int(threads) if threads else None)
        except Exception as exc:
            raise EngineError(f"{path}: LiteRT cannot load it ({first_line(exc)})") from None
        self.signatures = self.interp.get_signature_list()
        self.runners: dict[int, Any] = {}
        self.input_names: dict[int, str] = {}
        self.output_names: dict[int, str] = {}

    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        entry = record.get("entry") or (record.get("extra") or {}).get("signature")
        if entry is None and len(self.signatures) == 1:
            entry = next(iter(self.signatures))
        if entry is not None:
            if entry not in self.signatures:
                raise EngineError(f"{self.path}: no signature '{entry}' (it has {sorted(self.signatures)})")
            runner = self.interp.get_signature_runner(entry)
            ins = self.signatures[entry]["inputs"]
            self.input_names[k] = "image" if "image" in ins else ins[0]
            outs = self.signatures[entry]["outputs"]
            self.output_names[k] = "logits" if "logits" in outs else outs[0]
            self.runners[k] = runner
        else:
            self.interp.allocate_tensors()
            self.runners[k] = None

    def max_batch(self, k):
        self.prepare(k)
        if self.runners[k] is None:
            return int(self.interp.get_input_details()[0]["shape"][0])
        return static_batch(self.record(k), None)

    def feed(self, k, x):
        self.prepare(k)
        return np.ascontiguousarray(x, dtype=np.float32)

    def call(self, k, feed):
        runner = self.runners[k]
        if runner is not None:
            return runner(**{self.input_names[k]: feed})[self.output_names[k]]
        i = self.interp.get_input_details()[0]["index"]
        o = self.interp.get_output_details()[0]["index"]
        self.interp.set_tensor(i, feed)
        self.interp.invoke()
        return self.interp.get_tensor(o)

    def to_numpy(self, out):
        return np.array(out, dtype=np.float32)


@register_engine
class LiteRTEngine(Engine):
    name = "tflite"
    runtime_imports = ("ai_edge_litert.interpreter",)

    def _open(self, path, records, *, threads, device, details):
        return LiteRTSession(self, path, records, threads)
