"""Runtimes that run exported artifacts: one registered :class:`Backend` class per runtime.

The benchmark worker (:mod:`hydravit_edge.bench.worker`) and the Python runtime
(:mod:`hydravit_edge.runtime`) only ever call :func:`get_backend` / :func:`backends`; nothing
outside a backend's own class knows how its runtime is driven.

A backend opens ONE artifact (a file from an export manifest, holding one k or every k) as a
:class:`Session`.  ``session.prepare(k)`` makes k's entry ready (nothing for an ONNX graph
whose ``heads`` input selects k, ``load_method`` for an ExecuTorch method, a signature
runner for TFLite); ``session.run(k, x)`` runs it on a float32 NCHW batch.  Switching k is
a different ``run`` call on the same session: nothing is reloaded.

At module level this file imports the standard library and numpy only, so importing it
never pulls in PyTorch; each runtime is imported when a session is opened.  (ExecuTorch's
Python runtime takes ``torch`` tensors, so opening an ExecuTorch artifact imports torch;
onnxruntime and LiteRT sessions do not.)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from hydravit_edge.errors import HydraEdgeError, MissingDependencyError, UsageError

__all__ = ["Backend", "Session", "BackendError", "register_backend", "get_backend", "backends", "backend_names",
           "backend_for_target", "record_k", "heads_input_value"]


class BackendError(HydraEdgeError):
    """An artifact that a runtime cannot open or run (message meant for the user)."""


# =========================================================================== helpers

def record_k(record: Mapping[str, Any]) -> int:
    return int(record["k"])


def heads_input_value(record: Mapping[str, Any]) -> int:
    """Value fed to a ``heads`` input for this record (``extra.heads_value``, default k)."""
    value = (record.get("extra") or {}).get("heads_value", record["k"])
    if isinstance(value, (list, tuple)):  # the ONNX exporter writes [k] (the input's shape is [1])
        value = value[0]
    return int(value)


def _static_batch(record: Mapping[str, Any], input_name: Optional[str] = None) -> Optional[int]:
    """The image input's batch size when it is a fixed number, else None (dynamic)."""
    specs = record.get("inputs") or []
    for spec in specs:
        if input_name is None or spec.get("name") == input_name:
            shape = spec.get("shape") or []
            if len(shape) == 4:
                return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return None


_NP_DTYPES = {"int64": np.int64, "int32": np.int32, "float32": np.float32, "float16": np.float16,
              "bool": np.bool_, "uint8": np.uint8}


# =========================================================================== session

class Session:
    """One loaded artifact; k is chosen per call.

    Subclasses implement :meth:`_prepare` (make k's entry runnable, once), :meth:`feed`
    (numpy batch -> the runtime's native inputs), :meth:`call` (run; native outputs) and
    :meth:`to_numpy`.  :meth:`timed` may be overridden where wall-clock timing is wrong
    (CUDA: events and synchronisation).
    """

    #: the image input's name
    image_input = "image"

    def __init__(self, backend: "Backend", path: Path, records: Sequence[Mapping[str, Any]]):
        self.backend = backend
        self.path = Path(path)
        self.records = {record_k(r): dict(r) for r in records}
        if not self.records:
            raise BackendError(f"{path}: no artifact entries to open")
        self._ready: set[int] = set()

    # ---- k ----------------------------------------------------------------------------
    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(sorted(self.records))

    def record(self, k: int) -> dict:
        try:
            return self.records[int(k)]
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"k={k} is not in {self.path.name}; it holds k in {list(self.heads)}") from None

    def prepare(self, k: int) -> None:
        """Make k's entry runnable (idempotent)."""
        rec = self.record(k)
        if k not in self._ready:
            self._prepare(k, rec)
            self._ready.add(k)

    def is_prepared(self, k: int) -> bool:
        return k in self._ready

    def max_batch(self, k: int) -> Optional[int]:
        """Largest batch one call takes: the static batch of k's image input, None when dynamic."""
        return _static_batch(self.record(k), self.image_input)

    # ---- running ----------------------------------------------------------------------
    def run(self, k: int, x: np.ndarray) -> np.ndarray:
        """Logits ``[B, classes]`` of subnetwork k for the float32 NCHW batch ``x``.

        A batch larger than the artifact's static batch is run in chunks.
        """
        self.prepare(k)
        x = np.ascontiguousarray(x, dtype=np.float32)
        limit = self.max_batch(k)
        if limit is None or x.shape[0] <= limit:
            return self.to_numpy(self.call(k, self.feed(k, x)))
        parts = [self.to_numpy(self.call(k, self.feed(k, x[i:i + limit]))) for i in range(0, x.shape[0], limit)]
        return np.concatenate(parts, axis=0)

    def timed(self, k: int, feed: Any, n: int) -> list[float]:
        """Milliseconds of ``n`` consecutive calls of k's entry on the prepared ``feed``."""
        out = []
        call = self.call
        for _ in range(n):
            t0 = time.perf_counter()
            call(k, feed)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    def close(self) -> None:
        pass

    # ---- to implement -----------------------------------------------------------------
    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        pass

    def feed(self, k: int, x: np.ndarray) -> Any:
        raise NotImplementedError

    def call(self, k: int, feed: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, out: Any) -> np.ndarray:
        return np.asarray(out, dtype=np.float32)


# =========================================================================== backend

class Backend:
    """A runtime that runs artifacts of one export target."""

    #: ``--backend`` value and the report rows' ``backend`` field.
    name: ClassVar[str] = ""
    #: export target (manifest ``targets`` key) whose artifacts it runs; None: no artifact (eager).
    target: ClassVar[Optional[str]] = None
    #: modules that must import for the runtime to work, and the pip extra installing them.
    modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[Optional[str]] = None
    #: ``--device`` values it supports (the first is the default).
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: the rows' ``precision``.
    precision: ClassVar[str] = "fp32"
    #: run it when ``bench`` is given no ``--backend``.
    default: ClassVar[bool] = True

    def missing(self) -> Optional[str]:
        """None when the runtime imports here, else a message naming what to install."""
        absent = [m for m in self.modules if importlib.util.find_spec(m.split(".")[0]) is None]
        if not absent:
            return None
        hint = f"pip install 'hydravit-edge[{self.extra}]'" if self.extra else "pip install hydravit-edge"
        return f"the {self.name} backend needs {', '.join(absent)}; install it with: {hint}"

    def require(self) -> None:
        msg = self.missing()
        if msg:
            raise MissingDependencyError(msg)

    def preload(self) -> None:
        """Import the runtime (so that a measured load time is the artifact's, not the import's)."""
        self.require()
        for mod in self.runtime_imports:
            importlib.import_module(mod)

    #: modules a session imports when it opens an artifact (see :meth:`preload`).
    runtime_imports: ClassVar[tuple[str, ...]] = ()

    def check_device(self, device: str) -> None:
        """Raise a user error when ``device`` cannot be used (unknown, or absent on this machine)."""
        if device not in self.devices:
            raise UsageError(f"--device {device} is not supported by the {self.name} backend "
                             f"(it runs on: {', '.join(self.devices)})")

    def compute_label(self, device: str, details: Mapping[str, Any] | None = None) -> str:
        """The rows' ``compute`` field (where it ran)."""
        return device

    def open(self, path: Path, records: Sequence[Mapping[str, Any]], *, threads: Optional[int] = None,
             device: str = "cpu", details: Mapping[str, Any] | None = None) -> Session:
        """Load the artifact at ``path`` holding ``records`` (manifest artifact dicts of one file)."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"backend '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    cls = _REGISTRY.get(name)
    if cls is None:
        raise UsageError(f"unknown backend '{name}'; choose one of {', '.join(_REGISTRY)}")
    return cls()


def backends() -> list[Backend]:
    return [cls() for cls in _REGISTRY.values()]


def backend_for_target(target: str) -> Optional[Backend]:
    """The backend that runs artifacts of export target ``target`` (None when there is none)."""
    for cls in _REGISTRY.values():
        if cls.target == target:
            return cls()
    return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BackendError(f"{path}: artifact file is missing (re-run `hydravit-edge export`)")


# =========================================================================== onnxruntime

class _OrtSession(Session):
    def __init__(self, backend, path, records, threads):
        super().__init__(backend, path, records)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"{path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0][:300]})") from None
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.image_input = next((n for n in self.inputs if n == "image"), next(iter(self.inputs)))
        self.output = self.sess.get_outputs()[0].name
        self._extra_inputs: dict[int, dict[str, np.ndarray]] = {}

    def _prepare(self, k, record):
        extra = {}
        for name, meta in self.inputs.items():
            if name == self.image_input:
                continue
            if name != "heads":
                raise BackendError(f"{self.path}: unexpected ONNX input '{name}' (known: image, heads)")
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


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    target = "onnx"
    modules = ("onnxruntime",)
    runtime_imports = ("onnxruntime",)

    def open(self, path, records, *, threads=None, device="cpu", details=None):
        self.require()
        self.check_device(device)
        _check_file(Path(path))
        return _OrtSession(self, Path(path), records, threads)


# =========================================================================== executorch

class _EtSession(Session):
    def __init__(self, backend, path, records, threads):
        super().__init__(backend, path, records)
        import torch  # executorch's Python runtime takes torch tensors

        from hydravit_edge.executorch_runtime import import_runtime

        runtime = import_runtime()
        self._torch = torch
        if threads:
            try:
                from executorch.extension.pybindings import portable_lib

                portable_lib._unsafe_reset_threadpool(int(threads))
            except (ImportError, AttributeError):
                pass
        try:
            self.program = runtime.Runtime.get().load_program(Path(path))
        except Exception as exc:
            raise BackendError(f"{path}: ExecuTorch cannot load it ({str(exc).strip()[:300]})") from None
        self.methods: dict[int, Any] = {}

    def _prepare(self, k, record):
        name = record.get("entry") or "forward"
        if name not in self.program.method_names:
            raise BackendError(f"{self.path}: no method '{name}' (it has {sorted(self.program.method_names)})")
        self.methods[k] = self.program.load_method(name)

    def feed(self, k, x):
        return (self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),)

    def call(self, k, feed):
        return self.methods[k].execute(feed)[0]

    def to_numpy(self, out):
        return out.detach().numpy().astype(np.float32, copy=False)


@register_backend
class ExecuTorchBackend(Backend):
    name = "executorch"
    target = "executorch"
    modules = ("executorch",)
    runtime_imports = ("torch",)

    def preload(self) -> None:
        super().preload()
        from hydravit_edge.executorch_runtime import import_runtime

        import_runtime().Runtime.get()  # without ExecuTorch's compiler: see hydravit_edge.executorch_runtime

    def compute_label(self, device, details=None):
        delegate = str((details or {}).get("delegate", "xnnpack") or "").lower()
        return "xnnpack" if "xnnpack" in delegate else device

    def open(self, path, records, *, threads=None, device="cpu", details=None):
        self.require()
        self.check_device(device)
        _check_file(Path(path))
        return _EtSession(self, Path(path), records, threads)


# =========================================================================== tflite

class _TfliteSession(Session):
    def __init__(self, backend, path, records, threads):
        super().__init__(backend, path, records)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interp = Interpreter(model_path=str(path), num_threads=int(threads) if threads else None)
        except Exception as exc:
            raise BackendError(f"{path}: LiteRT cannot load it ({str(exc).strip()[:300]})") from None
        self.signatures = self.interp.get_signature_list()
        self.runners: dict[int, Any] = {}
        self.input_names: dict[int, str] = {}
        self.output_names: dict[int, str] = {}

    def _prepare(self, k, record):
        entry = record.get("entry")
        if entry is None and len(self.signatures) == 1:
            entry = next(iter(self.signatures))
        if entry is not None:
            if entry not in self.signatures:
                raise BackendError(f"{self.path}: no signature '{entry}' (it has {sorted(self.signatures)})")
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
        return _static_batch(self.record(k), None)

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


@register_backend
class TfliteBackend(Backend):
    name = "tflite"
    target = "tflite"
    modules = ("ai_edge_litert",)
    runtime_imports = ("ai_edge_litert.interpreter",)
    extra = "tflite"

    def open(self, path, records, *, threads=None, device="cpu", details=None):
        self.require()
        self.check_device(device)
        _check_file(Path(path))
        return _TfliteSession(self, Path(path), records, threads)


# =========================================================================== torch (eager)

class _TorchSession(Session):
    """Eager PyTorch HydraViT; ``path`` is a checkpoint or None (random weights: latency only)."""

    def __init__(self, backend, path, records, threads, device, config):
        import torch

        from hydravit_edge.checkpoints import load_checkpoint
        from hydravit_edge.config import HydraConfig
        from hydravit_edge.model import HydraViT

        self.backend = backend
        self.path = Path(path) if path else Path("eager")
        self.records = {record_k(r): dict(r) for r in records}
        self._ready = set()
        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        cfg = HydraConfig.from_dict(dict(config)) if config is not None else None
        if path:
            model = load_checkpoint(path, cfg)
        else:
            torch.manual_seed(0)
            model = HydraViT(cfg)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.cuda = self.device.type == "cuda"

    def max_batch(self, k):
        return None

    def feed(self, k, x):
        return self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def call(self, k, feed):
        with self._torch.inference_mode():
            return self.model.forward_heads(feed, k)

    def to_numpy(self, out):
        return out.float().cpu().numpy()

    def timed(self, k, feed, n):
        if not self.cuda:
            return super().timed(k, feed, n)
        # the paper's protocol: CUDA events around each forward, synchronised
        torch = self._torch
        out = []
        with torch.inference_mode():
            for _ in range(n):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                self.model.forward_heads(feed, k)
                end.record()
                torch.cuda.synchronize()
                out.append(float(start.elapsed_time(end)))
        return out


@register_backend
class TorchBackend(Backend):
    name = "torch"
    target = None
    modules = ("torch", "timm")
    runtime_imports = ("torch", "timm", "hydravit_edge.model", "hydravit_edge.checkpoints")
    devices = ("cpu", "cuda")
    default = False

    def check_device(self, device):
        super().check_device(device)
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise HydraEdgeError(
                    "--device cuda: no CUDA GPU is available on this machine (torch.cuda.is_available() is False"
                    f"{'; torch is a CPU-only build' if torch.version.cuda is None else ''}); run the reference "
                    "protocol on a machine with an NVIDIA GPU, or use --device cpu")

    def compute_label(self, device, details=None):
        return device

    def gpu_name(self, device: str) -> Optional[str]:
        if device != "cuda":
            return None
        import torch

        return torch.cuda.get_device_name(0)

    def open(self, path, records, *, threads=None, device="cpu", details=None):
        self.require()
        self.check_device(device)
        config = (details or {}).get("config")
        return _TorchSession(self, path, records, threads, device, config)


def env_threads(threads: Optional[int]) -> dict[str, str]:
    """Environment for a worker process pinned to ``threads`` threads (OpenMP, MKL)."""
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env
