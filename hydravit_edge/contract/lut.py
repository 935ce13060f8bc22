"""The per-device lookup table (``lut.json``): its model, its reader and the policy's use of it.

Per device (and per runtime configuration measured on it) the p90 latency, memory and accuracy
rows of each (k, precision) measured, each marked whether it is on the entry's
accuracy/latency frontier, plus a ``policy`` section holding the battery/thermal thresholds as data
(:data:`hydravit_edge.policy.DEFAULT_POLICY`).  Built from benchmark reports by
``hydravit-edge lut build`` (:mod:`hydravit_edge.bench.lut_build`); read here by the Python
runtime and ``hydravit-edge lut pick``, and by the Android/iOS apps' ports.  Schema:
``hydravit_edge/schemas/lut.schema.json`` (generated from :class:`Lut`).  Reading a LUT needs
neither torch nor numpy.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterable, Literal, Mapping, Optional

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from hydravit_edge.errors import HydraEdgeError, UsageError
from hydravit_edge.fileio import atomic_write_text
from hydravit_edge.policy import Decision, PolicyConfig, PolicyError, PolicyInput, PolicyOption, PolicyState, decide
from hydravit_edge.policy_options import default_latency, precision_rank, resolve_ref

from ._base import Document, Model, OpenModel, read_json

__all__ = ["Lut", "LutDevice", "LutDeviceEntry", "LutRow", "LutError", "UnknownDeviceError", "LUT_FORMAT",
           "LUT_SCHEMA_VERSION", "load_lut", "save_lut", "match_name", "row_precision"]

LUT_FORMAT = "hydravit-edge-lut"
LUT_SCHEMA_VERSION = 1


class LutError(HydraEdgeError):
    """A lookup table that is missing, unreadable or does not match its schema."""


class UnknownDeviceError(UsageError):
    """The LUT has no entry for the requested device (or backend)."""

    code = "unknown_device"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.").lower()


def match_name(wanted: str, names: Iterable[str]) -> Optional[str]:
    """The name in ``names`` that ``wanted`` refers to: exact, else case-insensitive, else by file-name slug."""
    names = list(names)
    if wanted in names:
        return wanted
    for n in names:
        if n.lower() == wanted.lower():
            return n
    for n in names:
        if _slug(n) == _slug(wanted):
            return n
    return None


# =========================================================================== model

Fraction = Annotated[float, Field(ge=0, le=1)]
Percent = Annotated[float, Field(ge=0, le=100)]
Budget = Optional[Annotated[float, Field(gt=0)]]
NonNeg = Optional[Annotated[float, Field(ge=0)]]
Count = Optional[Annotated[int, Field(ge=0)]]


class Band(Model):
    name: Annotated[str, Field(min_length=1)]
    min_percent: Percent
    max_k_fraction: Fraction


class ThermalCaps(Model):
    """Cap per thermal state (iOS ProcessInfo.ThermalState / Android PowerManager thermal status mapped to these four)."""

    nominal: Fraction
    fair: Fraction
    serious: Fraction
    critical: Fraction


class LutPolicy(Model):
    """The battery/thermal policy: every field (hydravit_edge.policy.DEFAULT_POLICY has the defaults)."""

    budget_ms: Budget
    """Default latency budget (p90, ms) per inference; null: no budget."""
    hysteresis_percent: Percent
    """k only rises once the battery is this far above the band edge that allows it."""
    unknown_battery_percent: Percent
    """Battery level assumed when it cannot be read (boards on mains power report none)."""
    charging_max_k_fraction: Fraction
    """Cap while charging, as a fraction of the largest k."""
    low_power_max_k_fraction: Fraction
    """Cap in low-power / power-save mode (0: the smallest k)."""
    battery_bands: Annotated[list[Band], Field(min_length=1)]
    """Bands by battery level when not charging: the first (highest) band with battery >= min_percent caps k at max_k_fraction x k_max. One band must start at 0."""
    thermal_max_k_fraction: ThermalCaps
    cold_switch_min_interval_s: Optional[Annotated[float, Field(ge=0)]] = None
    """k does not rise onto a k that is not materialised within this many seconds of the last cold switch (0: off; absent: 30)."""


class PolicyOverride(Model):
    """Per-device overrides: each field given replaces the table-wide one."""

    budget_ms: Budget = None
    hysteresis_percent: Optional[Percent] = None
    unknown_battery_percent: Optional[Percent] = None
    charging_max_k_fraction: Optional[Fraction] = None
    low_power_max_k_fraction: Optional[Fraction] = None
    battery_bands: Optional[Annotated[list[Band], Field(min_length=1)]] = None
    thermal_max_k_fraction: Optional[ThermalCaps] = None
    cold_switch_min_interval_s: Optional[Annotated[float, Field(ge=0)]] = None


class LutRow(Model):
    """One (k, precision) of one device configuration."""

    k: Annotated[int, Field(ge=1)]
    precision: Optional[Annotated[str, Field(min_length=1)]] = None
    """Numeric precision of this row's artifact (fp32, fp16, int8, int8-static); absent: the entry's precision, else fp32."""
    frontier: Optional[bool] = None
    """On the entry's accuracy/latency frontier: no other row is at least as fast (p90) and as accurate (top1; k when a row lacks top1) and better in one. A row marked false is not a policy candidate (absent: it is)."""
    p90_ms: Annotated[float, Field(gt=0)]
    """Latency the policy compares with the budget."""
    latency_basis: Literal["p90", "median", "throughput"]
    """Where p90_ms comes from: the report's p90, its median (no p90), or 1000/throughput (published figures without latency)."""
    median_ms: NonNeg = None
    min_ms: NonNeg = None
    throughput_per_s: NonNeg = None
    throughput_batch: Optional[Annotated[int, Field(ge=1)]] = None
    load_ms: NonNeg = None
    switch_ms: NonNeg = None
    """Warm switch: extra latency of the first run after switching to this k while it is materialised."""
    cold_switch_ms: NonNeg = None
    """Cold switch: making this k runnable when it is not (building its session, or opening its file)."""
    peak_rss_mb: NonNeg = None
    rss_anon_mb: NonNeg = None
    """Steady anonymous resident memory with this k active (what the memory budget counts)."""
    rss_file_mb: NonNeg = None
    """Steady file-backed resident memory with this k active (memory-mapped weights: pages the OS may drop)."""
    peak_switch_rss_mb: NonNeg = None
    paper_ram_mb: NonNeg = None
    file_bytes: Count = None
    params: Count = None
    macs: Count = None
    top1: Optional[Fraction] = None
    artifact: Optional[str] = None
    entry: Optional[str] = None


class LutDeviceEntry(Model):
    """The rows of one device on one runtime configuration (its precisions together: one row per (k, precision)); the first entry of a name is its default."""

    name: Annotated[str, Field(min_length=1)]
    """Device name as in its report (reports/<name>.json)."""
    description: Optional[str] = None
    source: Literal["measured", "published"]
    backend: Annotated[str, Field(min_length=1)]
    """Runtime of these rows (onnxruntime, executorch, tflite, coreml, torch)."""
    mode: Optional[Literal["single", "per-k", "eager"]] = None
    compute: Optional[str] = None
    precision: Optional[str] = None
    """The precision every row has (rows of several precisions: null, and each row names its own)."""
    materialize: Optional[Literal["lazy", "eager"]] = None
    """Single artifacts: how the rows' k were materialised (lazy: one k's session at a time; eager: every k in one session)."""
    memory_budget_mb: Optional[Annotated[float, Field(gt=0)]] = None
    """Most resident memory the runtime's materialised k may take together on this device (default: a quarter of its memory)."""
    artifact: Optional[str] = None
    """The single artifact all rows come from; null when rows name different files."""
    manifest_sha256: Optional[str] = None
    policy: Optional[PolicyOverride] = None
    rows: Annotated[list[LutRow], Field(min_length=1)]


class LutSource(Model):
    """A report the table was built from."""

    path: Optional[str] = None
    device: str
    source: Literal["measured", "published"]
    sha256: Optional[str] = None
    created: Optional[str] = None


class LutTool(OpenModel):
    name: Optional[str] = None
    version: Optional[str] = None


class Lut(Document):
    """Per-device latency/memory/accuracy rows, one per (k, precision), each marked on or off the accuracy/latency frontier, built from benchmark reports by `hydravit-edge lut build`, plus the battery/thermal policy as data. Read by the Python runtime, `hydravit-edge lut pick`, and the Android/iOS demo apps (bundled as an asset). A device may have several entries (one per backend/mode/compute configuration); the first entry of a name is its default."""

    model_config = ConfigDict(title="hydravit-edge lookup table (lut.json)")
    error: ClassVar[type[HydraEdgeError]] = LutError
    what: ClassVar[str] = "lookup table"

    format: Literal["hydravit-edge-lut"]
    schema_version: Literal[1]
    created: Optional[str] = None
    tool: Optional[LutTool] = None
    sources: Optional[list[LutSource]] = None
    """The reports the table was built from."""
    policy: LutPolicy
    devices: Annotated[list[LutDeviceEntry], Field(min_length=1)]

    _path: Optional[Path] = PrivateAttr(default=None)

    @classmethod
    def identify(cls, data: Any, where: str) -> None:
        if data.get("format") != LUT_FORMAT:
            if "rows" in data and "device" in data:
                raise LutError(f"{where}: this is a benchmark report, not a lookup table; "
                               f"build one with `hydravit-edge lut build {where} --out lut.json`")
            raise LutError(f"{where}: not a hydravit-edge lookup table (format is {data.get('format')!r}, "
                           f"expected '{LUT_FORMAT}')")
        if data.get("schema_version") != LUT_SCHEMA_VERSION:
            raise LutError(f"{where}: LUT schema_version {data.get('schema_version')!r} is not supported; this "
                           f"hydravit-edge reads {LUT_SCHEMA_VERSION} (rebuild it with `hydravit-edge lut build`)")

    @model_validator(mode="after")
    def _policy_rules(self) -> "Lut":
        """The rules the schema cannot state: the policy's (bands, one starting at 0), one row per (k, precision), a frontier."""
        try:
            base = self.policy.model_dump()
            PolicyConfig.from_dict(base)
            for i, dev in enumerate(self.devices):
                if dev.policy is not None:
                    PolicyConfig.from_dict({**base, **dev.policy.model_dump(exclude_unset=True)})
                refs = [(r.k, row_precision(dev, r)) for r in dev.rows]
                twice = sorted({f"{k}@{p}" for k, p in refs if refs.count((k, p)) > 1})
                if twice:
                    raise ValueError(f"devices[{i}] ('{dev.name}') lists a k twice at one precision: {', '.join(twice)}")
                if all(r.frontier is False for r in dev.rows):
                    raise ValueError(f"devices[{i}] ('{dev.name}') has no row on its frontier (every row frontier: false)")
        except PolicyError as exc:
            raise ValueError(str(exc)) from None
        return self

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lut":
        """Read and validate ``lut.json``."""
        path = Path(path)
        missing = (f"{path}: no such lookup table (build one with `hydravit-edge lut build reports/*.json "
                   f"--out {path}`)")
        lut = cls.check(read_json(path, "lookup table", LutError, missing=missing), str(path))
        lut._path = path
        return lut

    @property
    def path(self) -> Optional[Path]:
        """The file it was loaded from (None when validated from a dict)."""
        return self._path

    def with_path(self, path: str | os.PathLike) -> "Lut":
        self._path = Path(path)
        return self

    @property
    def policy_config(self) -> PolicyConfig:
        """The table-wide policy."""
        return PolicyConfig.from_dict(self.policy.model_dump())

    def device_names(self) -> list[str]:
        return list(dict.fromkeys(d.name for d in self.devices))

    def device(self, name: str, backend: Optional[str] = None) -> "LutDevice":
        """The entry for ``name`` (exact, case-insensitive or file-name match); the first one unless ``backend``.

        Raises :class:`UnknownDeviceError` naming the devices (or backends) the table has.
        """
        where = f"LUT {self.path}" if self.path else "the LUT"
        found = match_name(name, self.device_names())
        if found is None:
            raise UnknownDeviceError(f"{where} has no device '{name}'; it has: {', '.join(self.device_names())}")
        entries = [d for d in self.devices if d.name == found]
        if backend is not None:
            picked = [d for d in entries if d.backend == backend]
            if not picked:
                raise UnknownDeviceError(f"{where} has no '{backend}' rows for device '{found}'; it has: "
                                         f"{', '.join(sorted({d.backend for d in entries}))}")
            entries = picked
        entry = entries[0]
        over = entry.policy.model_dump(exclude_unset=True) if entry.policy is not None else {}
        return LutDevice(entry, PolicyConfig.from_dict({**self.policy.model_dump(), **over}))


# =========================================================================== policy use

@dataclass
class LutDevice:
    """One device entry of a LUT with its effective policy."""

    entry: LutDeviceEntry
    policy: PolicyConfig

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def backend(self) -> str:
        return self.entry.backend

    @property
    def memory_budget_mb(self) -> Optional[float]:
        return self.entry.memory_budget_mb

    @property
    def rows(self) -> list[LutRow]:
        return self.entry.rows

    @property
    def ks(self) -> list[int]:
        return sorted({r.k for r in self.rows})

    @property
    def precisions(self) -> list[str]:
        """The precisions of the entry's rows, in the precision order."""
        return sorted({row_precision(self.entry, r) for r in self.rows}, key=precision_rank)

    @property
    def options(self) -> list[PolicyOption]:
        """The rows as the policy's options: those that fit the entry's memory budget (steady
        ``rss_anon_mb`` within ``memory_budget_mb``; the smallest k's rows always stay), each a
        candidate unless the LUT marks it off the frontier (``frontier: false``)."""
        budget = self.entry.memory_budget_mb
        smallest = min(r.k for r in self.rows)
        return [PolicyOption(r.k, row_precision(self.entry, r), r.p90_ms, r.top1, r.macs, r.frontier is not False)
                for r in self.rows
                if budget is None or r.rss_anon_mb is None or r.rss_anon_mb <= budget or r.k == smallest]

    @property
    def latency(self) -> dict[int, float]:
        """k -> p90 ms of each k's default row (fp32 where the entry has it, else its first precision)
        among :attr:`options`: the single-precision view (the runtime runs one precision)."""
        return default_latency(self.options)

    def latency_at(self, precision: str) -> dict[int, float]:
        """k -> p90 ms of the rows at ``precision`` among :attr:`options` (a runtime running that precision)."""
        return {o.k: o.p90_ms for o in self.options if o.precision == precision}

    def row(self, k: int, precision: Optional[str] = None) -> LutRow:
        """The row of k at ``precision`` (None: fp32 where there is one, else k's first precision)."""
        options = [PolicyOption(r.k, row_precision(self.entry, r), r.p90_ms) for r in self.rows]
        found = resolve_ref((k, precision), options)
        if found is None:
            at = f" at {precision}" if precision else ""
            raise UsageError(f"device '{self.name}' has no k={k}{at} in the LUT; it has k {self.ks} at "
                             f"{', '.join(self.precisions)}")
        return next(r for r in self.rows if r.k == k and row_precision(self.entry, r) == found.precision)

    def decide(self, inputs: PolicyInput, previous: Any = None) -> Decision:
        """The policy's decision over :attr:`options`; ``previous``: the option in use (k, "k@precision" ...)."""
        return decide(self.options, self.policy, inputs, previous)

    def state(self, previous: Any = None) -> PolicyState:
        """A :class:`PolicyState` (remembers the previous option for hysteresis) for this device."""
        return PolicyState(self.options, self.policy, previous)

    def label(self) -> str:
        bits = [self.backend] + [b for b in (self.entry.mode, self.entry.compute) if b] + ["+".join(self.precisions)]
        return f"{self.name} ({', '.join(bits)}, {self.entry.source})"


def row_precision(entry: LutDeviceEntry, row: LutRow) -> str:
    """A row's precision: its own, else its entry's, else fp32."""
    return row.precision or entry.precision or "fp32"


def load_lut(path: str | os.PathLike) -> Lut:
    """Read and validate ``lut.json`` (:meth:`Lut.load`)."""
    return Lut.load(path)


def save_lut(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate a LUT (a dict) and write it atomically."""
    Lut.check(dict(data), where=str(path))
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
