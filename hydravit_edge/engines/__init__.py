"""The runtime layer: open an exported artifact and run subnetwork k on a numpy batch.

>>> from hydravit_edge.engines import get_engine
>>> session = get_engine("onnxruntime").open("exports/digits/onnx/hydravit.onnx", manifest.artifacts("onnx"))
>>> logits = session.run(3, images)      # float32 NCHW -> [B, classes]; another k: same session

One registered :class:`Engine` per runtime of :data:`hydravit_edge.targets.RUNTIMES`:

========================  ======================================================================
``onnxruntime``           ``.onnx`` (:mod:`.onnxruntime_engine`)
``executorch``            ``.pte``, XNNPACK, without ExecuTorch's compiler (:mod:`.executorch_engine`)
``tflite``                ``.tflite`` with LiteRT, ``ai-edge-litert`` (:mod:`.litert_engine`)
``coreml``                ``.mlpackage`` with coremltools, macOS only (:mod:`.coreml_engine`)
``torch``                 eager PyTorch HydraViT, no artifact (:mod:`.torch_engine`)
========================  ======================================================================

Everything that runs an artifact goes through here: the battery-aware runtime
(:mod:`hydravit_edge.runtime`), ``hydravit-edge predict``, export validation
(:mod:`.runner`, in a process of its own), the benchmark worker and ``export-bench``.
Importing this package imports numpy and the standard library only; a runtime is imported
when an artifact is opened.
"""

from __future__ import annotations

from . import coreml_engine, executorch_engine, litert_engine, onnxruntime_engine, torch_engine  # noqa: F401 (register)
from .base import (Engine, EngineError, Session, engine_for_target, engine_names, engines, get_engine, heads_input_value,
                   record_k, register_engine, static_batch)

__all__ = ["Engine", "Session", "EngineError", "register_engine", "get_engine", "engines", "engine_names",
           "engine_for_target", "record_k", "heads_input_value", "static_batch"]
