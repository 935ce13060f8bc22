"""A small battery-aware runtime for Linux edge devices (Raspberry Pi, Jetson, laptops).

>>> from hydravit_edge.runtime import Runtime
>>> rt = Runtime("exports/digits-single", lut="lut.json")   # loads the artifact once
>>> out = rt.predict(images)            # k chosen by the policy from battery/thermal state
>>> out.k, out.labels, out.latency_ms
>>> rt.predict(images, heads=3)         # or a fixed k; same session, no reload

It loads ONE artifact of an export directory (the single artifact holding every k, else
the per-k files) with its engine (:mod:`hydravit_edge.engines`: onnxruntime, ExecuTorch or
LiteRT), reads the per-device lookup table (the
policy thresholds and per-k p90 latency, ``hydravit-edge lut build``), reads the battery,
charging, low-power and thermal state from ``/sys`` (:mod:`hydravit_edge.battery`; unknown
where absent) and picks k per call through :mod:`hydravit_edge.policy`, with hysteresis.

Dependencies: numpy, pydantic (the manifest and LUT models, :mod:`hydravit_edge.contract`) and the
chosen runtime.  This module never imports PyTorch (ExecuTorch's own Python bindings do, when an
ExecuTorch artifact is opened).
"""

from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .contract.manifest import Manifest, ManifestError, find_export_dir
from .engines import get_engine
from .errors import UsageError
from .targets import python_runtimes
from .transform import EvalTransform

__all__ = ["Runtime", "Prediction", "Manifest", "ManifestError", "find_export_dir", "RUNTIME_BACKENDS"]

#: Backends the runtime can use, in order of preference when none is named.
RUNTIME_BACKENDS = python_runtimes()


def _is_image(x: Any) -> bool:
    """A path or a PIL image (anything the evaluation transform reads as one image)."""
    if isinstance(x, (str, os.PathLike)):
        return True
    return type(x).__module__.startswith("PIL.")


def _uint8_images(x: np.ndarray) -> list[np.ndarray]:
    """A uint8 image or batch (HxW, HxWxC, CxHxW, NxHxW, NxHxWxC, NxCxHxW) as a list of HxW(xC) images."""
    channels = (1, 3, 4)
    if x.ndim == 2:
        return [x]
    if x.ndim == 3:
        if x.shape[-1] in channels:
            return [x]
        if x.shape[0] in channels:
            return [x.transpose(1, 2, 0)]
        return list(x)  # N grey images
    if x.ndim == 4:
        return list(x if x.shape[-1] in channels else x.transpose(0, 2, 3, 1))
    raise UsageError(f"uint8 images must be 2-D, 3-D or 4-D, got shape {tuple(x.shape)}")


# =========================================================================== runtime

@dataclass
class Prediction:
    """The result of one :meth:`Runtime.predict` call."""

    k: int
    logits: np.ndarray
    indices: np.ndarray
    labels: Optional[list[str]]
    latency_ms: float
    switched: bool
    #: the policy's :class:`~hydravit_edge.policy.Decision` (None when ``heads`` was given)
    decision: Optional[Any] = None
    #: the power state the decision used (battery, charging, low_power, thermal, budget_ms)
    power: Optional[dict] = None
    #: ms this call spent opening an artifact (per-k files: the first call at a k not open); 0 otherwise
    load_ms: float = 0.0

    @property
    def reason(self) -> str:
        return self.decision.reason if self.decision is not None else "k given by the caller"


PowerSource = Callable[[], Any]


class Runtime:
    """One loaded artifact, a lookup table and the policy; ``predict`` picks k per call.

    Parameters
    ----------
    export_dir: an export directory (``manifest.json``).
    lut: a LUT path or a loaded :class:`hydravit_edge.contract.lut.Lut`; None: the policy's battery and
        thermal caps without a latency budget.
    device: the device name to look up in the LUT (default: this host's name, as ``bench`` writes it).
    backend: ``onnxruntime``, ``executorch`` or ``tflite``; default: the first of those whose
        artifacts the export holds and whose runtime is installed.
    mode: ``single`` (default: the one artifact that holds every k, loaded once) or ``per-k``: the
        file of each k, opened when that k is first needed; at most ``keep`` files stay open (the least
        recently used is closed), so switching to an open k is free and to another one costs a load
        (``Prediction.load_ms``).
    heads: the k to open first (default: the largest).
    power: a callable returning the power state (a :class:`hydravit_edge.battery.PowerState`,
        a :class:`hydravit_edge.policy.PolicyInput` or a dict of its fields); default reads
        ``/sys`` (``sys_root``) at most every ``power_interval_s`` seconds.
    budget_ms: latency budget overriding the LUT's policy.
    """

    def __init__(self, export_dir: str | os.PathLike, *, lut: Any = None, device: Optional[str] = None,
                 backend: Optional[str] = None, mode: str = "single", threads: Optional[int] = None,
                 power: Optional[PowerSource] = None, sys_root: str | os.PathLike = "/sys",
                 power_interval_s: float = 1.0, budget_ms: Optional[float] = None,
                 heads: Optional[int] = None, keep: int = 2):
        self.manifest = Manifest.load(export_dir)
        self.backend_name, self.target = self._pick_backend(backend)
        self.backend = get_engine(self.backend_name)
        files = self.manifest.files_by_artifact(self.target)
        if mode not in ("single", "per-k"):
            raise UsageError(f"mode must be 'single' or 'per-k', got {mode!r}")
        if keep < 1:
            raise UsageError(f"keep must be >= 1, got {keep}")
        multi = {f: recs for f, recs in files.items() if len(recs) > 1}
        if mode == "single" and multi:
            chosen = dict([max(multi.items(), key=lambda kv: len(kv[1]))])
        elif mode == "single" and len(files) > 1:
            raise ManifestError(
                f"{self.manifest.dir}: the {self.target} artifacts are one file per k; the runtime loads one "
                "artifact that holds every k (export with --mode single), or pass mode='per-k' to open the "
                "file of each k as it is needed")
        else:  # per-k: every file, opened when its k is first needed (at most ``keep`` open at a time)
            chosen = files
        #: k -> (file relative to the manifest, its records)
        self._file_of_k = {int(r["k"]): (f, recs) for f, recs in chosen.items() for r in recs}
        self.heads = sorted(self._file_of_k)
        self.mode = mode
        self.threads = threads
        self.keep = int(keep)
        self._details = self.manifest.details(self.target)
        self._sessions: "OrderedDict[str, Any]" = OrderedDict()  # file -> Session, least recently used first
        self.loads = 0  # artifacts opened by this runtime: 1 for a single artifact, switching k never reloads
        self.backend.preload()  # load_ms below is the artifact's, not the runtime module's import
        first = heads if heads is not None else self.heads[-1]
        if first not in self._file_of_k:
            raise UsageError(f"heads={first} is not in this export's {self.target} artifacts; they hold k in "
                             f"{self.heads}")
        t0 = time.perf_counter()
        self._session_for(first)
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.labels = self.manifest.labels
        self.mean = np.asarray(self.manifest.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(self.manifest.std, dtype=np.float32).reshape(1, -1, 1, 1)
        self.img_size = self.manifest.img_size
        self.in_chans = self.manifest.in_chans
        #: the model's evaluation transform, as the manifest states it
        self.transform = EvalTransform.from_spec(self.manifest.input, self.manifest.config)
        self.current_k: Optional[int] = None
        self._setup_policy(lut, device, budget_ms)
        self._power = power
        self._sys_root = sys_root
        self._power_interval = float(power_interval_s)
        self._power_cache: tuple[float, Any] | None = None

    # ---- sessions -----------------------------------------------------------------------
    @property
    def file(self) -> str:
        """The artifact file that ran last (relative to the manifest)."""
        return next(reversed(self._sessions))

    @property
    def session(self):
        """The :class:`~hydravit_edge.engines.Session` that ran last."""
        return self._sessions[self.file]

    def _session_for(self, k: int):
        """The open session holding k (opened now if needed; the least recently used beyond ``keep`` closed)."""
        file, records = self._file_of_k[k]
        session = self._sessions.get(file)
        if session is not None:
            self._sessions.move_to_end(file)
            return session
        session = self.backend.open(self.manifest.dir / file, records, threads=self.threads, details=self._details)
        self.loads += 1
        self._sessions[file] = session
        while len(self._sessions) > self.keep:
            _, old = self._sessions.popitem(last=False)
            old.close()
        return session

    # ---- setup ------------------------------------------------------------------------
    def _pick_backend(self, backend: Optional[str]) -> tuple[str, str]:
        if backend is not None:
            if backend not in RUNTIME_BACKENDS:
                raise UsageError(f"the runtime supports backends {', '.join(RUNTIME_BACKENDS)}, not '{backend}'")
            b = get_engine(backend)
            self.manifest.target(b.target)  # raises when the export lacks it
            b.require()
            return backend, b.target
        reasons = []
        for name in RUNTIME_BACKENDS:
            b = get_engine(name)
            if b.target not in self.manifest.target_names():
                continue
            missing = b.missing()
            if missing:
                reasons.append(missing)
                continue
            return name, b.target
        raise ManifestError(f"{self.manifest.dir}: no artifact the runtime can run here "
                            f"(it has {', '.join(self.manifest.target_names()) or 'none'}; runtime needs "
                            f"{'/'.join(RUNTIME_BACKENDS)} artifacts){'; ' + '; '.join(reasons) if reasons else ''}")

    def _setup_policy(self, lut: Any, device: Optional[str], budget_ms: Optional[float]) -> None:
        from .contract.lut import Lut, load_lut
        from .policy import PolicyConfig, PolicyState

        self.lut_device = None
        if lut is None:
            config = PolicyConfig.from_dict({"budget_ms": None})
            self.policy_state = PolicyState({k: 0.0 for k in self.heads}, config)
            self.policy_source = "no LUT: battery/thermal caps only, no latency budget"
            self.budget_ms = budget_ms
            return
        table = lut if isinstance(lut, Lut) else load_lut(lut)
        name = device or socket.gethostname()
        try:
            entry = table.device(name, self.backend_name)
        except UsageError:
            entry = table.device(name)  # another runtime's rows of this device: better than none
        self.lut_device = entry
        latency = {k: v for k, v in entry.latency.items() if k in self.heads}
        if not latency:
            raise UsageError(f"the LUT rows of device '{entry.name}' cover k {entry.ks}, the artifact holds "
                             f"{self.heads}: none in common")
        self.policy_state = PolicyState(latency, entry.policy)
        self.policy_source = f"LUT {table.path or ''} device {entry.label()}".replace("  ", " ")
        self.budget_ms = budget_ms

    # ---- power ------------------------------------------------------------------------
    def power_input(self, power: Any = None):
        """The :class:`~hydravit_edge.policy.PolicyInput` for ``power`` (or the current system state)."""
        from .battery import PowerState, read_power_state
        from .policy import PolicyInput

        if power is None:
            now = time.monotonic()
            if self._power_cache is not None and now - self._power_cache[0] < self._power_interval:
                power = self._power_cache[1]
            else:
                power = self._power() if self._power is not None else read_power_state(self._sys_root)
                self._power_cache = (now, power)
        if isinstance(power, PolicyInput):
            inp = power
        elif isinstance(power, PowerState):
            inp = power.as_policy_input()
        elif isinstance(power, Mapping):
            inp = PolicyInput.from_dict(dict(power))
        else:
            raise UsageError(f"power state must be a PowerState, PolicyInput or dict, got {type(power).__name__}")
        if self.budget_ms is not None and inp.budget_ms is None:
            inp = PolicyInput(inp.battery, inp.charging, inp.low_power, inp.thermal, self.budget_ms)
        return inp.checked()

    def choose(self, power: Any = None):
        """The policy's :class:`~hydravit_edge.policy.Decision` for ``power`` (updates the hysteresis state)."""
        return self.policy_state.update(self.power_input(power))

    # ---- inference --------------------------------------------------------------------
    def preprocess(self, images: Any, normalized: bool = False) -> np.ndarray:
        """Float32 NCHW, through the model's evaluation transform (the manifest's ``input`` spec).

        ``images``: image file paths, PIL images or ``uint8`` arrays (``HWC``/``NHWC``/``NCHW``,
        grey, RGB or RGBA, any size), alone or in a list: each is resized, centre-cropped and
        normalised as the model was evaluated.  A float array of the model's size (``NCHW``/``CHW``)
        is a pre-sized tensor in [0, 1] and is only normalised; ``normalized=True`` passes it through.
        """
        if _is_image(images) or (isinstance(images, (list, tuple)) and images and all(map(_is_image, images))):
            return self.transform.batch(list(images) if isinstance(images, (list, tuple)) else [images])
        x = np.asarray(images)
        if x.dtype == np.uint8:
            return self.transform.batch(_uint8_images(x))
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise UsageError(f"images must be 3-D (one image) or 4-D (a batch), got shape {tuple(x.shape)}")
        x = x.astype(np.float32, copy=False)
        if x.shape[1:] != (self.in_chans, self.img_size, self.img_size):
            raise UsageError(f"a float tensor must be {self.in_chans}x{self.img_size}x{self.img_size} (NCHW, "
                             f"pre-sized); got {tuple(x.shape[1:])}. Pass uint8 images, PIL images or paths "
                             "to have them resized and cropped")
        if not normalized:
            x = (x - self.mean) / self.std
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, images: Any, heads: Optional[int] = None, *, power: Any = None,
                normalized: bool = False) -> Prediction:
        """Classify ``images`` with subnetwork ``heads`` (None: the policy picks k now).

        Switching k reuses the loaded session: no artifact is reloaded.
        """
        decision = state = None
        if heads is None:
            inp = self.power_input(power)
            decision = self.policy_state.update(inp)
            state = {"battery": inp.battery, "charging": inp.charging, "low_power": inp.low_power,
                     "thermal": inp.thermal, "budget_ms": inp.budget_ms}
            k = decision.k
        else:
            if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)):
                raise UsageError(f"heads must be an integer, got {heads!r}")
            k = int(heads)
            if k not in self.heads:
                raise UsageError(f"heads={k} is not in this artifact; it holds k in {self.heads}")
        x = self.preprocess(images, normalized)
        switched = self.current_k is not None and k != self.current_k
        loads = self.loads
        t0 = time.perf_counter()
        session = self._session_for(k)
        t1 = time.perf_counter()
        logits = session.run(k, x)
        latency = (time.perf_counter() - t1) * 1e3
        self.current_k = k
        idx = logits.argmax(-1)
        names = [self.labels[i] for i in idx] if self.labels else None
        return Prediction(k=k, logits=logits, indices=idx, labels=names, latency_ms=latency, switched=switched,
                          decision=decision, power=state,
                          load_ms=(t1 - t0) * 1e3 if self.loads > loads else 0.0)

    def describe(self) -> dict:
        return {"export": str(self.manifest.dir), "file": self.file, "backend": self.backend_name,
                "heads": self.heads, "load_ms": round(self.load_ms, 3), "policy": self.policy_source}

    def close(self) -> None:
        while self._sessions:
            self._sessions.popitem()[1].close()
