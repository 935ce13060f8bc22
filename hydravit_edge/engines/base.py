"""The engine interface: :class:`Engine` (a runtime) opens an artifact as a :class:`Session`.

One registered class per runtime of :data:`hydravit_edge.targets.RUNTIMES`; its name, the
export target whose files it runs, the modules it needs and their pip extra come from that
table (``Engine.info``), so nothing here repeats it.

A session holds ONE artifact (a file from an export manifest, holding one k or every k) and the
manifest's artifact records of that file.  ``session.prepare(k)`` makes k's entry ready (nothing
for an ONNX graph whose ``heads`` input selects k, ``load_method`` for an ExecuTorch method, a
signature runner for LiteRT, a function for Core ML); ``session.run(k, x)`` runs it on a float32
NCHW batch (in chunks where the artifact has a static batch).  Switching k is a different ``run``
call on the same session: nothing is reloaded.  ``feed`` / ``timed`` are the benchmark's hooks:
the batch converted once to the runtime's native inputs, then timed calls of k's entry on it.

Standard library and numpy only at module level: importing the engines never imports a runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from hydravit_edge.errors import HydraEdgeError, MissingDependencyError, UsageError
from hydravit_edge.targets import RuntimeInfo, runtime, runtime_names

__all__ = ["Engine", "Session", "EngineError", "register_engine", "get_engine", "engines", "engine_names",
           "engine_for_target", "record_k", "heads_input_value", "static_batch", "check_file"]


class EngineError(HydraEdgeError):
    """An artifact that a runtime cannot open or run (message meant for the user)."""


# =========================================================================== records

def record_k(record: Mapping[str, Any]) -> int:
    return int(record["k"])


def heads_input_value(record: Mapping[str, Any]) -> int:
    """Value fed to a ``heads`` input for this record (``extra.heads_value``, default k)."""
    value = (record.get("extra") or {}).get("heads_value", record["k"])
    if isinstance(value, (list, tuple)):  # the ONNX exporter writes [k] (the input's shape is [1])
        value = value[0]
    return int(value)


def static_batch(record: Mapping[str, Any], input_name: Optional[str] = None) -> Optional[int]:
    """The image input's batch size when the record states a fixed number, else None (dynamic)."""
    for spec in record.get("inputs") or []:
        if input_name is None or spec.get("name") == input_name:
            shape = spec.get("shape") or []
            if len(shape) == 4:
                return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return None


def check_file(path: Path) -> None:
    if not Path(path).exists():
        raise EngineError(f"{path}: artifact file is missing (re-run `hydravit-edge export`)")


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


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

    def __init__(self, engine: "Engine", path: Optional[Path], records: Sequence[Mapping[str, Any]]):
        self.engine = engine
        self.path = Path(path) if path else Path("eager")
        self.records = {record_k(r): dict(r) for r in records}
        if not self.records:
            raise EngineError(f"{self.path}: no artifact entries to open")
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
        return static_batch(self.record(k), self.image_input)

    # ---- running ----------------------------------------------------------------------
    def run(self, k: int, x: np.ndarray) -> np.ndarray:
        """Logits ``[B, classes]`` of subnetwork k for the float32 NCHW batch ``x``.

        A batch that does not fit the artifact's static batch (the manifest's ``inputs`` shape: an int
        first dimension; ``"batch"`` is dynamic) is run in chunks of that size, the last one padded.
        """
        self.prepare(k)
        x = np.ascontiguousarray(x, dtype=np.float32)
        limit = self.max_batch(k)
        n = x.shape[0]
        if limit is None or n == limit:
            return self.to_numpy(self.call(k, self.feed(k, x)))
        parts = []
        for i in range(0, n, limit):
            chunk = x[i:i + limit]
            if chunk.shape[0] < limit:  # a static graph takes exactly its batch: pad, then drop the padding
                pad = np.zeros((limit - chunk.shape[0],) + chunk.shape[1:], dtype=chunk.dtype)
                parts.append(self.to_numpy(self.call(k, self.feed(k, np.concatenate([chunk, pad]))))[:chunk.shape[0]])
            else:
                parts.append(self.to_numpy(self.call(k, self.feed(k, chunk))))
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

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- to implement -----------------------------------------------------------------
    def _prepare(self, k: int, record: Mapping[str, Any]) -> None:
        pass

    def feed(self, k: int, x: np.ndarray) -> Any:
        raise NotImplementedError

    def call(self, k: int, feed: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, out: Any) -> np.ndarray:
        return np.asarray(out, dtype=np.float32)


# =========================================================================== engine

class Engine:
    """A runtime that runs artifacts of one export target (its row of :data:`~hydravit_edge.targets.RUNTIMES`)."""

    #: the runtime's name in :data:`hydravit_edge.targets.RUNTIMES` (``--backend``, report rows' ``backend``).
    name: ClassVar[str] = ""
    #: its row of the table (set by :func:`register_engine`).
    info: ClassVar[RuntimeInfo]
    #: ``--device`` values it supports (the first is the default).
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: the numeric precision it runs at (report rows' ``precision``).
    precision: ClassVar[str] = "fp32"
    #: modules a session imports when it opens an artifact (see :meth:`preload`).
    runtime_imports: ClassVar[tuple[str, ...]] = ()

    @property
    def target(self) -> Optional[str]:
        """Export target (manifest ``targets`` key) whose artifacts it runs; None: no artifact (eager)."""
        return self.info.target

    @property
    def modules(self) -> tuple[str, ...]:
        return self.info.modules

    @property
    def extra(self) -> Optional[str]:
        return self.info.extra

    def missing(self) -> Optional[str]:
        """None when the runtime can run here, else a message naming what to install."""
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

    def check_device(self, device: str) -> None:
        """Raise a user error when ``device`` cannot be used (unknown, or absent on this machine)."""
        if device not in self.devices:
            raise UsageError(f"--device {device} is not supported by the {self.name} backend "
                             f"(it runs on: {', '.join(self.devices)})")

    def compute_label(self, device: str, details: Mapping[str, Any] | None = None) -> str:
        """Where it runs (report rows' ``compute``)."""
        return device

    def open(self, path: Optional[Path], records: Sequence[Mapping[str, Any]], *, threads: Optional[int] = None,
             device: str = "cpu", details: Mapping[str, Any] | None = None) -> Session:
        """Load the artifact at ``path`` holding ``records`` (manifest artifact dicts of that one file).

        ``details``: the manifest's ``targets.<name>.details`` (the eager engine reads the model
        config from it); ``threads``: the runtime's thread count (None: its default).
        """
        self.require()
        self.check_device(device)
        if self.target is not None:
            check_file(Path(path))
        return self._open(Path(path) if path else None, records, threads=threads, device=device, details=details or {})

    def _open(self, path: Optional[Path], records: Sequence[Mapping[str, Any]], *, threads: Optional[int],
              device: str, details: Mapping[str, Any]) -> Session:
        raise NotImplementedError


# =========================================================================== registry

_REGISTRY: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: add an engine under ``cls.name``, a runtime of :data:`~hydravit_edge.targets.RUNTIMES`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    try:
        cls.info = runtime(cls.name)
    except KeyError as exc:
        raise TypeError(f"{cls.__name__}: {exc.args[0]} (add it to hydravit_edge.targets.RUNTIMES)") from None
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"engine '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def engine_names() -> list[str]:
    """Registered engines, in the order of :data:`~hydravit_edge.targets.RUNTIMES` (preference)."""
    order = runtime_names()
    return sorted(_REGISTRY, key=order.index)


def get_engine(name: str) -> Engine:
    cls = _REGISTRY.get(name)
    if cls is None:
        raise UsageError(f"unknown backend '{name}'; choose one of {', '.join(engine_names())}")
    return cls()


def engines() -> list[Engine]:
    return [get_engine(n) for n in engine_names()]


def engine_for_target(target: str) -> Optional[Engine]:
    """The engine that runs artifacts of export target ``target`` (None when there is none)."""
    for name in engine_names():
        if _REGISTRY[name].info.target == target:
            return get_engine(name)
    return None
