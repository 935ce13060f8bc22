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

import dataclasses
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .contract.manifest import Manifest, ManifestError, find_export_dir
from .engines import get_engine
from .errors import UsageError
from .materialize import SessionCache, default_budget_bytes
from .targets import python_runtimes
from .inputs import to_batch
from .transform import EvalTransform

__all__ = ["Runtime", "Prediction", "Manifest", "ManifestError", "find_export_dir", "RUNTIME_BACKENDS"]

#: Backends the runtime can use, in order of preference when none is named.
RUNTIME_BACKENDS = python_runtimes()


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
    #: ms this call waited while k was built (materialised); 0 when it was ready
    load_ms: float = 0.0
    #: whether this call waited for a build
    waited: bool = False
    #: the k being built in the background for the policy (this call ran ``k`` meanwhile), else None
    building: Optional[int] = None
    #: the k the policy (or the caller) asked for; differs from ``k`` while it is being built
    wanted: Optional[int] = None
    #: the precision of the artifact that ran (fp32, fp16, int8, int8-static)
    precision: str = "fp32"

    @property
    def reason(self) -> str:
        return self.decision.reason if self.decision is not None else "k given by the caller"


PowerSource = Callable[[], Any]


class Runtime:
    """One export, a lookup table and the policy; ``predict`` picks k per call.

    Parameters
    ----------
    export_dir: an export directory (``manifest.json``).
    lut: a LUT path or a loaded :class:`hydravit_edge.contract.lut.Lut`; None: the policy's battery and
        thermal caps without a latency budget.
    device: the device name to look up in the LUT (default: this host's name, as ``bench`` writes it).
    backend: ``onnxruntime``, ``executorch`` or ``tflite``; default: the first of those whose
        artifacts the export holds and whose runtime is installed.
    mode: ``single`` (default: the artifact that holds every k) or ``per-k``: the file of each k.
    materialize: how a single artifact's k become runnable.  ``lazy`` (default): one session per k,
        built when that k is needed from the weights the artifact stores once (ONNX: the graph of
        k over the memory-mapped full weights, ``hydravit.k<k>.onnx``), so one k costs what its
        per-k file costs; ``eager``: one session holding every k (switching is instant, memory is
        the sum of every k).  A single artifact without per-k graphs (ExecuTorch, TFLite, an
        older ONNX export) is eager (``materialize_note`` says why).  Per-k files are lazy.
    memory_budget_mb: most resident memory the materialised k may take together (measured when
        each is built); least recently used k are closed first.  Default: the LUT device's
        ``memory_budget_mb``, else a quarter of this machine's memory.
    keep: at most this many materialised k (None: as many as the budget holds).
    background: with the policy choosing k (``heads=None``), build a k that is not materialised in
        a background thread while ``predict`` keeps serving the current k (default True); an
        explicit ``heads=k`` builds and waits.
    prefetch: after the policy switched k, build in the background the k it picks one battery band
        lower (when it fits the budget next to the current k).
    heads: the k to materialise first (default: the largest).
    power: a callable returning the power state (a :class:`hydravit_edge.battery.PowerState`,
        a :class:`hydravit_edge.policy.PolicyInput` or a dict of its fields); default reads
        ``/sys`` (``sys_root``) at most every ``power_interval_s`` seconds.
    budget_ms: latency budget overriding the LUT's policy.
    precision: the artifacts to run: ``fp32`` (default), ``fp16``, ``int8`` or ``int8-static`` (the
        export's ``<target>-<precision>`` entry, ``hydravit-edge export --precision``).
    """

    def __init__(self, export_dir: str | os.PathLike, *, lut: Any = None, device: Optional[str] = None,
                 backend: Optional[str] = None, mode: str = "single", materialize: str = "lazy",
                 memory_budget_mb: Optional[float] = None, keep: Optional[int] = None, background: bool = True,
                 prefetch: bool = True, threads: Optional[int] = None,
                 power: Optional[PowerSource] = None, sys_root: str | os.PathLike = "/sys",
                 power_interval_s: float = 1.0, budget_ms: Optional[float] = None,
                 heads: Optional[int] = None, precision: Optional[str] = None):
        from .precision import get_precision

        self.manifest = Manifest.load(export_dir)
        wanted = None if precision in (None, "all") else get_precision(precision).name
        #: precision -> manifest entry key of the backend's target (fp32 first)
        self.backend_name, self.keys = self._pick_backend(backend, wanted)
        self.precisions = list(self.keys)
        #: the precision of an explicit ``heads=k`` (fp32 where the export has it)
        self.precision = self.precisions[0]
        self.target = self.keys[self.precision]
        self.backend = get_engine(self.backend_name)
        if mode not in ("single", "per-k"):
            raise UsageError(f"mode must be 'single' or 'per-k', got {mode!r}")
        if materialize not in ("lazy", "eager"):
            raise UsageError(f"materialize must be 'lazy' or 'eager', got {materialize!r}")
        self.mode = mode
        #: (k, precision) -> (unit: the file a session opens, relative to the manifest; its records)
        self._unit_of: dict[tuple[int, str], tuple[str, list]] = {}
        modes, notes = set(), []
        for prec, key in self.keys.items():
            units, how, note = self._units(mode, materialize, key)
            self._unit_of.update({(k, prec): u for k, u in units.items()})
            modes.add(how)
            notes += [note] if note else []
        self.materialize = "lazy" if modes == {"lazy"} else "eager"
        self.materialize_note = "; ".join(notes) or None
        self.heads = sorted({k for k, _ in self._unit_of})
        #: unit -> (its records, its precision)
        self._unit_info = {u: (recs, p) for (k, p), (u, recs) in self._unit_of.items()}
        self.threads = threads
        self.background = bool(background)
        self.prefetch = bool(prefetch)
        self._details = {p: self.manifest.details(key) for p, key in self.keys.items()}
        self._setup_policy(lut, device, budget_ms)
        budget = memory_budget_mb
        if budget is None and self.lut_device is not None:
            budget = getattr(self.lut_device, "memory_budget_mb", None)
        if budget is not None and budget <= 0:
            raise UsageError(f"memory_budget_mb must be > 0, got {budget}")
        self.memory_budget_mb = float(budget) if budget is not None else default_budget_bytes() / 2**20
        self.cache = SessionCache(self._open_unit, self._estimate, budget_bytes=int(self.memory_budget_mb * 2**20),
                                  keep=keep)
        self.backend.preload()  # load_ms below is the artifact's, not the runtime module's import
        first = self._first_option(heads)
        built = self.cache.build(self._unit_of[first][0])
        self.load_ms = built.build_ms
        self.labels = self.manifest.labels
        self.mean = np.asarray(self.manifest.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(self.manifest.std, dtype=np.float32).reshape(1, -1, 1, 1)
        self.img_size = self.manifest.img_size
        self.in_chans = self.manifest.in_chans
        #: the model's evaluation transform, as the manifest states it
        self.transform = EvalTransform.from_spec(self.manifest.input, self.manifest.config)
        #: the (k, precision) that ran last, or was materialised first
        self.current: tuple[int, str] = first
        self._served_first = False
        self._cold_switch_at: Optional[float] = None  # when the policy last had a k built (rule 4)
        self._power = power
        self._sys_root = sys_root
        self._power_interval = float(power_interval_s)
        self._power_cache: tuple[float, Any] | None = None

    # ---- units ------------------------------------------------------------------------
    def _first_option(self, heads: Optional[int]) -> tuple[int, str]:
        """The option to materialise first: with a LUT and no ``heads``, the policy's pick for an
        unknown power state (so the first calls do not run a stand-in while it builds); else
        ``heads`` (default: the largest k) at fp32 where the export has it."""
        if heads is None and self.lut_device is not None:
            from .policy import PolicyInput, decide

            try:
                d = decide(self.policy_state.options, self.policy_state.policy, PolicyInput(budget_ms=self.budget_ms))
            except UsageError:
                d = None
            if d is not None and (d.k, d.precision) in self._unit_of:
                return (d.k, d.precision)
        k = heads if heads is not None else self.heads[-1]
        if k not in self.heads:
            raise UsageError(f"heads={k} is not in this export's {self.target} artifacts; they hold k in "
                             f"{self.heads}")
        return (k, self.precision) if (k, self.precision) in self._unit_of else next(
            o for o in self._unit_of if o[0] == k)

    @property
    def current_k(self) -> int:
        return self.current[0]

    @property
    def current_precision(self) -> str:
        return self.current[1]

    def _units(self, mode: str, materialize: str, key: str) -> tuple[dict[int, tuple[str, list]], str, Optional[str]]:
        files = self.manifest.files_by_artifact(key)
        multi = {f: recs for f, recs in files.items() if len(recs) > 1}
        if mode == "per-k":
            return {int(r["k"]): (f, [r]) for f, recs in files.items() for r in recs}, "lazy", None
        if multi:
            file, recs = max(multi.items(), key=lambda kv: len(kv[1]))
        elif len(files) == 1:
            file, recs = next(iter(files.items()))
        else:
            raise ManifestError(
                f"{self.manifest.dir}: the {key} artifacts are one file per k; the runtime loads one "
                "artifact that holds every k (export with --mode single), or pass mode='per-k' to open the "
                "file of each k as it is needed")
        lazy = self.manifest.lazy_graphs(key) if multi else None
        if materialize == "lazy" and lazy:
            return {k: (f, [rec]) for k, (f, rec) in lazy.items()}, "lazy", None
        note = None
        if materialize == "lazy":
            note = (f"the {key} single artifact has no graph per k: every k lives in one session "
                    "(eager); its per-k files are the way to hold one k in memory")
        return {int(r["k"]): (file, recs) for r in recs}, "eager", note

    def _open_unit(self, unit: str):
        records, prec = self._unit_info[unit]
        return self.backend.open(self.manifest.dir / unit, records, threads=self.threads, details=self._details[prec])

    def _estimate(self, unit: str) -> int:
        """Resident bytes of a unit before it was built: its ks' weight bytes (the slicing table's
        cut of each k, else the file), plus a quarter for activations and the runtime's own tables."""
        prec = self._unit_info[unit][1]
        ks = [k for (k, _), (f, _) in self._unit_of.items() if f == unit]
        table = self.manifest.slicing
        if table is not None and all(k in table.heads for k in ks):
            # float32 bytes of k's parameters, scaled to the precision's (int8 matrices, fp16 everything)
            weights = sum(_weight_bytes(table, k) for k in ks) * _BYTES_PER_FP32.get(prec, 1.0)
        else:
            weights = self.manifest.file_bytes(self.keys[prec], unit) or 0
        return int(weights * 1.25)

    @property
    def loads(self) -> int:
        """Sessions built by this runtime (eager: 1; switching among materialised k builds nothing)."""
        return self.cache.builds

    @property
    def file(self) -> str:
        """The unit (file) that ran last, or that the first k was materialised from."""
        return self._unit_of[self.current][0]

    @property
    def session(self):
        """The :class:`~hydravit_edge.engines.Session` of the current k."""
        return self.cache.get(self.file)

    @property
    def materialized(self) -> list[int]:
        """The k whose session is built now (at any precision)."""
        return sorted({k for k, _ in self.materialized_options})

    @property
    def materialized_options(self) -> list[tuple[int, str]]:
        """The (k, precision) whose session is built now."""
        units = set(self.cache.units)
        return sorted(o for o, (u, _) in self._unit_of.items() if u in units)

    def memory(self) -> dict:
        """The cache's view: budget, bytes attributed to materialised units, and this process's RSS."""
        from .memory import resident_bytes

        return {"budget_mb": self.memory_budget_mb, "used_mb": self.cache.used_bytes / 2**20,
                "materialized": self.materialized, "building": self._pending_ks(),
                **{k: v / 2**20 for k, v in resident_bytes().items()}}

    def _pending_ks(self) -> list[int]:
        pending = set(self.cache.pending())
        return sorted({k for (k, _), (u, _) in self._unit_of.items() if u in pending})

    # ---- setup ------------------------------------------------------------------------
    def _pick_backend(self, backend: Optional[str], precision: Optional[str]) -> tuple[str, dict[str, str]]:
        """(engine name, {precision: entry key}): the precisions of the backend's target in the export
        (``precision`` alone when given)."""
        def keys(target: str) -> dict[str, str]:
            if precision is None:
                return self.manifest.variants(target)
            return {precision: self.manifest.key_for(target, precision)}  # raises when the export lacks it

        if backend is not None:
            if backend not in RUNTIME_BACKENDS:
                raise UsageError(f"the runtime supports backends {', '.join(RUNTIME_BACKENDS)}, not '{backend}'")
            b = get_engine(backend)
            found = keys(b.target)
            if not found:
                self.manifest.target(b.target)  # raises naming what the export has
            b.require()
            return backend, found
        reasons = []
        for name in RUNTIME_BACKENDS:
            b = get_engine(name)
            variants = self.manifest.variants(b.target)
            if not variants or (precision is not None and precision not in variants):
                continue
            missing = b.missing()
            if missing:
                reasons.append(missing)
                continue
            return name, keys(b.target)
        what = f"{precision} " if precision else ""
        raise ManifestError(f"{self.manifest.dir}: no {what}artifact the runtime can run here "
                            f"(it has {', '.join(self.manifest.target_names()) or 'none'}; runtime needs "
                            f"{'/'.join(RUNTIME_BACKENDS)} artifacts){'; ' + '; '.join(reasons) if reasons else ''}")

    def _setup_policy(self, lut: Any, device: Optional[str], budget_ms: Optional[float]) -> None:
        from .contract.lut import Lut, load_lut
        from .policy import PolicyConfig, PolicyState

        self.lut_device = None
        if lut is None:
            config = PolicyConfig.from_dict({"budget_ms": None})
            self.policy_state = PolicyState({o: 0.0 for o in self._unit_of}, config)
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
        # the LUT's (k, precision) rows this runtime can run; with no row of its precisions, the k of
        # the LUT's own precision stand in for each of its k (said below)
        options = [o for o in entry.options if (o.k, o.precision) in self._unit_of]
        stand_in = not options
        if stand_in:
            options = {o: entry.latency[o[0]] for o in self._unit_of if o[0] in entry.latency}
        if not options:
            raise UsageError(f"the LUT rows of device '{entry.name}' cover k {entry.ks}, the artifact holds "
                             f"{self.heads}: none in common")
        self.policy_state = PolicyState(options, entry.policy)
        self.policy_source = f"LUT {table.path or ''} device {entry.label()}".replace("  ", " ")
        if stand_in:
            self.policy_source += (f" (no rows of its {'/'.join(self.precisions)} artifacts: the LUT's latencies "
                                   "per k stand in)")
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
        return to_batch(images, self.transform, self.in_chans, self.img_size, self.mean, self.std, normalized)

    def predict(self, images: Any, heads: Optional[int] = None, *, power: Any = None,
                normalized: bool = False, precision: Optional[str] = None) -> Prediction:
        """Classify ``images`` with subnetwork ``heads`` (None: the policy picks k and its precision now).

        A materialised (k, precision) runs at once.  ``heads=k`` (at ``precision``, default fp32 where
        the export has it) not materialised: built now (the call waits, ``Prediction.waited``).  The
        policy's choice not materialised: built in the background while this call (and the next ones)
        run the current one (``Prediction.building``); the first call after the build finished switches.
        """
        decision = state = None
        x = self.preprocess(images, normalized)
        waited_ms = 0.0
        building: Optional[int] = None
        if heads is None:
            inp = self.power_input(power)
            if self.materialize == "lazy":  # rule 4: no rising onto an unbuilt k right after a cold switch
                age = None if self._cold_switch_at is None else time.monotonic() - self._cold_switch_at
                built = tuple(f"{k}@{p}" for k, p in self.materialized_options)
                inp = dataclasses.replace(inp, materialized=built, cold_switch_age_s=age)
            decision = self.policy_state.update(inp)
            state = {"battery": inp.battery, "charging": inp.charging, "low_power": inp.low_power,
                     "thermal": inp.thermal, "budget_ms": inp.budget_ms}
            option, pending, waited_ms = self._policy_option((decision.k, decision.precision), inp)
            building = pending[0] if pending else None
        else:
            if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)):
                raise UsageError(f"heads must be an integer, got {heads!r}")
            k = int(heads)
            if k not in self.heads:
                raise UsageError(f"heads={k} is not in this artifact; it holds k in {self.heads}")
            prec = precision or self.precision
            if (k, prec) not in self._unit_of:
                raise UsageError(f"precision {prec} is not in this runtime's artifacts ({', '.join(self.precisions)})")
            option = (k, prec)
            waited_ms = self._materialize(option)
        k = option[0]
        unit = self._unit_of[option][0]
        switched = self._served_first and option != self.current
        self.cache.pinned = {unit}
        session = self.cache.get(unit)
        t1 = time.perf_counter()
        logits = session.run(k, x)
        latency = (time.perf_counter() - t1) * 1e3
        self.current = option
        self._served_first = True
        idx = logits.argmax(-1)
        names = [self.labels[i] for i in idx] if self.labels else None
        return Prediction(k=k, logits=logits, indices=idx, labels=names, latency_ms=latency, switched=switched,
                          decision=decision, power=state, load_ms=waited_ms, waited=waited_ms > 0,
                          building=building, wanted=decision.k if decision is not None else k, precision=option[1])

    def _materialize(self, option: tuple[int, str]) -> float:
        """Build ``option`` now unless materialised; returns the ms waited (0 when it was)."""
        unit = self._unit_of[option][0]
        if self.cache.ready(unit):
            return 0.0
        t0 = time.perf_counter()
        self.cache.pinned = set()  # nothing runs while this call waits: every other k may be closed for it
        self.cache.build(unit, keep=())  # pending background build of it: waits for that one
        return (time.perf_counter() - t0) * 1e3

    def _policy_option(self, wanted: tuple[int, str], inp) -> tuple[tuple[int, str], Optional[tuple[int, str]], float]:
        """(option to run now, option being built in the background or None, ms waited) for the policy's ``wanted``."""
        unit = self._unit_of[wanted][0]
        current = self.current
        if self.cache.ready(unit):
            if self.prefetch:
                self._prefetch(wanted, inp)
            return wanted, None, 0.0
        cur_unit = self._unit_of[current][0] if current is not None else None
        self._cold_switch_at = time.monotonic()
        if (not self.background or cur_unit is None or not self.cache.ready(cur_unit)
                or not self.cache.fits(unit, keep={cur_unit})):
            # nothing to serve meanwhile, or the budget holds one k: switch and wait
            return wanted, None, self._materialize(wanted)
        self.cache.build_async(unit, keep={cur_unit})
        return current, wanted, 0.0

    def _prefetch(self, option: tuple[int, str], inp) -> None:
        """Build (in the background) the option the policy picks one battery band below the current one."""
        from .policy import PolicyInput, decide

        if inp.battery is None or inp.charging:
            return
        band = self.policy_state.policy.band_for(inp.battery)
        if band.min_percent <= 0:
            return
        lower = PolicyInput(max(0.0, band.min_percent - 1.0), False, inp.low_power, inp.thermal, inp.budget_ms)
        d = decide(self.policy_state.options, self.policy_state.policy, lower)
        nxt = (d.k, d.precision)
        unit, cur_unit = self._unit_of[nxt][0], self._unit_of[option][0]
        if nxt != option and not self.cache.ready(unit) and not self.cache.pending() and self.cache.fits(unit, keep={cur_unit}):
            self.cache.build_async(unit, keep={cur_unit})

    def wait(self) -> None:
        """Wait for the background builds (tests, benchmarks)."""
        self.cache.wait()

    def describe(self) -> dict:
        return {"export": str(self.manifest.dir), "file": self.file, "backend": self.backend_name,
                "heads": self.heads, "precisions": self.precisions, "materialize": self.materialize, "memory_budget_mb": round(self.memory_budget_mb),
                "load_ms": round(self.load_ms, 3), "policy": self.policy_source, "note": self.materialize_note}

    def close(self) -> None:
        self.cache.close()


#: bytes of a precision's weights per float32 byte (int8: the matrices; biases and norms stay float32)
_BYTES_PER_FP32 = {"fp32": 1.0, "fp16": 0.5, "int8": 0.27, "int8-static": 0.27}


def _weight_bytes(table, k: int) -> int:
    """float32 bytes of subnetwork k's parameters, from the slicing table."""
    import math

    cuts = table.cuts(table.widths(k))
    total = 0
    for name in table.subnet_params(k).values():
        p = table.params[name]
        total += math.prod(cuts[p.rule].shape(p.shape))
    return 4 * total
