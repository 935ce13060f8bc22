"""onnxruntime: ``.onnx`` graphs (a per-k graph, or the single graph whose ``heads`` input selects k)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import Engine, EngineError, Session, first_line, heads_input_value, register_engine


class OnnxRuntimeSession(Session):
    def __init__(self, engine, path, records, threads):
        super().__init__(engine, path, records)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # Threads sleep when a run ends instead of spinning: with several sessions open (lazily
        # materialised k), the idle session's spinning threads took the cores from the next one.
        # Base model, k=3 after a k=12 run, 2 threads: 51.5 ms spinning, 20.8 ms not (steady 17-22 ms either way).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.image_input = next((n for n in self.inputs if n == "image"), next(iter(self.inputs)))
        self.output = self.sess.get_outputs()[0].name
        self._extra_inputs: dict[int, dict[str, np.ndarray]] = {}

    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        extra = {}
        for name, meta in self.inputs.items():
            if name == self.image_input:
                continue
            if name != "heads":
                raise EngineError(f"{self.path}: unexpected ONNX input '{name}' (known: image, heads)")
            dtype = np.int64 if "int64" in meta.type else np.int32 if "int32" in meta.type else np.float32
            shape = [d if isinstance(d, int) else 1 for d in meta.shape]
            extra[name] = np.full(shape, heads_input_value(record), dtype=dtype)
        self._extra_inputs[k] = extra

    def max_batch(self, k):
        dim = self.inputs[self.image_input].shape[0]
        return dim if isinstance(dim, int) and dim > 0 else None

    def feed(self, k, x):
        self.prepare(k)
        return {self.image_input: np.ascontiguousarray(x, dtype=np.float32), **self._extra_inputs[k]}

    def call(self, k, feed):
        return self.sess.run([self.output], feed)[0]


@register_engine
class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    runtime_imports = ("onnxruntime",)

    def _open(self, path, records, *, threads, device, details):
        return OnnxRuntimeSession(self, path, records, threads)
