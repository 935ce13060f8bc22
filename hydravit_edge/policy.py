"""The battery/thermal policy that picks a head count k from a device's lookup-table rows.

The rule, with every threshold a field of the LUT's ``policy`` section (defaults in
:data:`DEFAULT_POLICY`):

1. Caps.  Each active condition caps k at ``fraction x k_max`` (the largest available k not
   above it; the smallest available k is always allowed):

   * low-power mode: ``low_power_max_k_fraction`` (default 0: the smallest k);
   * thermal state ``nominal|fair|serious|critical``: ``thermal_max_k_fraction[state]``
     (default 1, 1, 0.5, 0: critical means the smallest k);
   * charging: ``charging_max_k_fraction`` (default 1); otherwise the battery band: the first
     of ``battery_bands`` (sorted by ``min_percent``, highest first) with
     ``battery >= min_percent`` gives ``max_k_fraction`` (default >= 50 %: 1, >= 20 %: 0.5,
     below: 0.25).  An unknown battery level counts as ``unknown_battery_percent`` (default
     100: boards without a battery run on mains).

   The tightest cap wins; on a tie the first of low-power, thermal, battery is reported.
2. Budget.  Among the k up to the cap, the largest whose p90 latency is within the budget
   (``budget_ms``, overridable per call; ``null`` = no budget).  When none fits, the
   smallest k.
3. Hysteresis.  Given the previous k, k only rises when the battery is at least
   ``hysteresis_percent`` above the band edge that allows it:
   ``k = max(choice(battery - hysteresis), min(previous_k, choice(battery)))``.  It drops at
   once.  Not applied while charging or when the battery level is unknown.

4. Switch cost.  Given which k are materialised now (``materialized``: their sessions are
   built) and the seconds since the last cold switch (``cold_switch_age_s``), k does not RISE
   onto a k that is not materialised while the last cold switch was less than
   ``cold_switch_min_interval_s`` ago (default 30 s; 0: off): building a k costs a second or
   more and its memory, so a policy that flaps between bands must not rebuild each time.  It
   drops at once (a drop answers the battery, the heat or the budget).  Without
   ``materialized`` (every k resident, or unknown) the rule does not apply.

The memory budget: a LUT device entry with ``memory_budget_mb`` leaves out the k whose steady
``rss_anon_mb`` exceeds it (the smallest k always stays), before the rules above.

The result names what limited k (``limit``): ``none`` (the largest k), ``battery``,
``thermal``, ``low_power``, ``budget``, ``hysteresis`` or ``switch_cost``.  The Kotlin
(``android_demo/policy``) and Swift (``ios_demo/HydraPolicy``) ports implement the same
rule; ``tests/policy_vectors.json`` holds the cases all three pass.

No torch, no numpy: the runtime and the apps' logic depend on this alone.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .errors import UsageError

__all__ = [
    "THERMAL_STATES", "LIMITS", "DEFAULT_POLICY", "PolicyError", "PolicyConfig", "Band", "PolicyInput",
    "Decision", "decide", "PolicyState", "parse_battery", "cap_for_fraction",
]

THERMAL_STATES = ("nominal", "fair", "serious", "critical")
LIMITS = ("none", "battery", "thermal", "low_power", "budget", "hysteresis", "switch_cost")

#: Policy defaults written into every LUT (``hydravit-edge lut build``).
DEFAULT_POLICY: dict[str, Any] = {
    "budget_ms": 33.0,
    "hysteresis_percent": 5.0,
    "unknown_battery_percent": 100.0,
    "charging_max_k_fraction": 1.0,
    "low_power_max_k_fraction": 0.0,
    "battery_bands": [
        {"name": "high", "min_percent": 50.0, "max_k_fraction": 1.0},
        {"name": "medium", "min_percent": 20.0, "max_k_fraction": 0.5},
        {"name": "low", "min_percent": 0.0, "max_k_fraction": 0.25},
    ],
    "thermal_max_k_fraction": {"nominal": 1.0, "fair": 1.0, "serious": 0.5, "critical": 0.0},
    "cold_switch_min_interval_s": 30.0,
}

#: Slack when comparing ``k <= fraction * k_max`` (so 0.29 * 100 still allows k = 29).
_EPS = 1e-9


class PolicyError(UsageError):
    """Bad policy input or policy data.  ``code`` is shared with the Kotlin/Swift ports and the vectors:
    ``invalid_battery``, ``invalid_thermal``, ``invalid_budget``, ``invalid_policy``, ``empty_table``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _number(value: Any, what: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError("invalid_policy", f"policy field {what} must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise PolicyError("invalid_policy", f"policy field {what} must lie in [{lo}, {hi}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Band:
    name: str
    min_percent: float
    max_k_fraction: float


@dataclass(frozen=True)
class PolicyConfig:
    """A validated policy section.  Build it with :meth:`from_dict` (missing fields take the defaults)."""

    budget_ms: Optional[float] = DEFAULT_POLICY["budget_ms"]
    hysteresis_percent: float = DEFAULT_POLICY["hysteresis_percent"]
    unknown_battery_percent: float = DEFAULT_POLICY["unknown_battery_percent"]
    charging_max_k_fraction: float = DEFAULT_POLICY["charging_max_k_fraction"]
    low_power_max_k_fraction: float = DEFAULT_POLICY["low_power_max_k_fraction"]
    battery_bands: tuple[Band, ...] = tuple(Band(**b) for b in DEFAULT_POLICY["battery_bands"])
    thermal_max_k_fraction: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_POLICY["thermal_max_k_fraction"]))
    cold_switch_min_interval_s: float = DEFAULT_POLICY["cold_switch_min_interval_s"]

    FIELDS = tuple(DEFAULT_POLICY)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]] = None) -> "PolicyConfig":
        merged = copy.deepcopy(DEFAULT_POLICY)
        data = dict(data or {})
        unknown = sorted(set(data) - set(DEFAULT_POLICY))
        if unknown:
            raise PolicyError("invalid_policy", f"unknown policy field(s) {unknown}; known: {', '.join(DEFAULT_POLICY)}")
        merged.update(data)
        budget = merged["budget_ms"]
        if budget is not None:
            budget = _number(budget, "budget_ms")
            if budget <= 0:
                raise PolicyError("invalid_policy", f"policy field budget_ms must be > 0 or null, got {budget}")
        bands_in = merged["battery_bands"]
        if not isinstance(bands_in, list) or not bands_in:
            raise PolicyError("invalid_policy", "policy field battery_bands must be a non-empty list")
        bands = []
        for i, b in enumerate(bands_in):
            if not isinstance(b, Mapping) or set(b) != {"name", "min_percent", "max_k_fraction"}:
                raise PolicyError("invalid_policy",
                                  f"battery_bands[{i}] must have exactly name, min_percent, max_k_fraction; got {b!r}")
            if not isinstance(b["name"], str) or not b["name"]:
                raise PolicyError("invalid_policy", f"battery_bands[{i}].name must be a non-empty string")
            bands.append(Band(b["name"], _number(b["min_percent"], f"battery_bands[{i}].min_percent", 0, 100),
                              _number(b["max_k_fraction"], f"battery_bands[{i}].max_k_fraction", 0, 1)))
        bands.sort(key=lambda b: -b.min_percent)
        if len({b.min_percent for b in bands}) != len(bands) or len({b.name for b in bands}) != len(bands):
            raise PolicyError("invalid_policy", "battery_bands need distinct names and distinct min_percent values")
        if bands[-1].min_percent != 0:
            raise PolicyError("invalid_policy", "battery_bands need a band with min_percent 0 (so every level has a band)")
        thermal_in = merged["thermal_max_k_fraction"]
        if not isinstance(thermal_in, Mapping) or set(thermal_in) != set(THERMAL_STATES):
            raise PolicyError("invalid_policy", f"thermal_max_k_fraction needs exactly the keys {', '.join(THERMAL_STATES)}")
        thermal = {s: _number(thermal_in[s], f"thermal_max_k_fraction.{s}", 0, 1) for s in THERMAL_STATES}
        return cls(
            budget_ms=budget,
            hysteresis_percent=_number(merged["hysteresis_percent"], "hysteresis_percent", 0, 100),
            unknown_battery_percent=_number(merged["unknown_battery_percent"], "unknown_battery_percent", 0, 100),
            charging_max_k_fraction=_number(merged["charging_max_k_fraction"], "charging_max_k_fraction", 0, 1),
            low_power_max_k_fraction=_number(merged["low_power_max_k_fraction"], "low_power_max_k_fraction", 0, 1),
            battery_bands=tuple(bands),
            thermal_max_k_fraction=thermal,
            cold_switch_min_interval_s=_number(
                DEFAULT_POLICY["cold_switch_min_interval_s"] if merged["cold_switch_min_interval_s"] is None
                else merged["cold_switch_min_interval_s"], "cold_switch_min_interval_s", 0, None),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_ms": self.budget_ms,
            "hysteresis_percent": self.hysteresis_percent,
            "unknown_battery_percent": self.unknown_battery_percent,
            "charging_max_k_fraction": self.charging_max_k_fraction,
            "low_power_max_k_fraction": self.low_power_max_k_fraction,
            "battery_bands": [{"name": b.name, "min_percent": b.min_percent, "max_k_fraction": b.max_k_fraction}
                              for b in self.battery_bands],
            "thermal_max_k_fraction": dict(self.thermal_max_k_fraction),
            "cold_switch_min_interval_s": self.cold_switch_min_interval_s,
        }

    def band_for(self, percent: float) -> Band:
        for band in self.battery_bands:
            if percent >= band.min_percent:
                return band
        return self.battery_bands[-1]  # unreachable: the last band starts at 0


def parse_battery(value: Any) -> Optional[float]:
    """A battery level from user input: a number in 0..100, or None / "unknown" / "" for unknown."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower().rstrip("%")
        if text in ("", "unknown", "none", "null", "?"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise PolicyError("invalid_battery", f"battery must be a percentage 0..100 or 'unknown', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError("invalid_battery", f"battery must be a percentage 0..100 or 'unknown', got {value!r}")
    if not 0 <= value <= 100:
        raise PolicyError("invalid_battery", f"battery {value:g}% is outside 0..100")
    return float(value)


@dataclass(frozen=True)
class PolicyInput:
    """Power state for one decision.  ``battery`` None means unknown; ``budget_ms`` None uses the policy's.

    ``materialized``: the k whose sessions are built now (None: every k resident, or unknown);
    ``cold_switch_age_s``: seconds since the last cold switch (None: none yet).  Rule 4.
    """

    battery: Optional[float] = None
    charging: bool = False
    low_power: bool = False
    thermal: Optional[str] = None
    budget_ms: Optional[float] = None
    materialized: Optional[tuple[int, ...]] = None
    cold_switch_age_s: Optional[float] = None

    def checked(self) -> "PolicyInput":
        battery = parse_battery(self.battery)
        thermal = self.thermal
        if thermal is not None:
            if not isinstance(thermal, str) or thermal.strip().lower() not in THERMAL_STATES:
                raise PolicyError("invalid_thermal",
                                  f"thermal state must be one of {', '.join(THERMAL_STATES)}, got {thermal!r}")
            thermal = thermal.strip().lower()
        budget = self.budget_ms
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
                raise PolicyError("invalid_budget", f"latency budget must be a number of milliseconds > 0, got {budget!r}")
            budget = float(budget)
        mat = self.materialized
        if mat is not None:
            if isinstance(mat, (str, bytes)) or not all(isinstance(k, int) and not isinstance(k, bool) for k in mat):
                raise PolicyError("invalid_switch_state", f"materialized must be a list of head counts, got {mat!r}")
            mat = tuple(sorted(set(mat)))
        age = self.cold_switch_age_s
        if age is not None:
            if isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(age) or age < 0:
                raise PolicyError("invalid_switch_state", f"cold_switch_age_s must be a number of seconds >= 0, got {age!r}")
            age = float(age)
        return PolicyInput(battery, bool(self.charging), bool(self.low_power), thermal, budget, mat, age)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PolicyInput":
        """From the vectors' / apps' JSON form: battery, charging, low_power, thermal, budget_ms (all optional)."""
        unknown = set(d) - {"battery", "charging", "low_power", "thermal", "budget_ms", "materialized",
                            "cold_switch_age_s"}
        if unknown:
            raise UsageError(f"unknown policy input field(s) {sorted(unknown)}")
        mat = d.get("materialized")
        return cls(d.get("battery"), bool(d.get("charging", False)), bool(d.get("low_power", False)),
                   d.get("thermal"), d.get("budget_ms"), tuple(mat) if isinstance(mat, list) else mat,
                   d.get("cold_switch_age_s"))


@dataclass(frozen=True)
class Decision:
    k: int
    limit: str
    reason: str
    cap_k: int
    band: Optional[str]
    battery_percent: float
    budget_ms: Optional[float]
    p90_ms: float
    fits_budget: Optional[bool]
    held: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.k, "limit": self.limit, "reason": self.reason, "cap_k": self.cap_k, "band": self.band,
                "battery_percent": self.battery_percent, "budget_ms": self.budget_ms, "p90_ms": self.p90_ms,
                "fits_budget": self.fits_budget, "held": self.held}


def cap_for_fraction(ks: Sequence[int], fraction: float) -> int:
    """Largest k in ``ks`` with ``k <= fraction * max(ks)``; the smallest k when none is."""
    limit = fraction * max(ks) + _EPS
    allowed = [k for k in ks if k <= limit]
    return max(allowed) if allowed else min(ks)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _choose(latency: Mapping[int, float], policy: PolicyConfig, inp: PolicyInput, percent: float,
            budget: Optional[float]) -> Decision:
    ks = sorted(latency)
    k_max = ks[-1]
    caps: list[tuple[int, str, str]] = []
    if inp.low_power:
        f = policy.low_power_max_k_fraction
        caps.append((cap_for_fraction(ks, f), "low_power", f"low-power mode allows k <= {_fmt(f)} x {k_max}"))
    if inp.thermal is not None:
        f = policy.thermal_max_k_fraction[inp.thermal]
        caps.append((cap_for_fraction(ks, f), "thermal", f"thermal state '{inp.thermal}' allows k <= {_fmt(f)} x {k_max}"))
    if inp.charging:
        band_name = "charging"
        f = policy.charging_max_k_fraction
        caps.append((cap_for_fraction(ks, f), "battery", f"charging allows k <= {_fmt(f)} x {k_max}"))
    else:
        band = policy.band_for(percent)
        band_name = band.name
        caps.append((cap_for_fraction(ks, band.max_k_fraction), "battery",
                     f"battery {_fmt(percent)}% is in band '{band.name}' (>= {_fmt(band.min_percent)}%), "
                     f"which allows k <= {_fmt(band.max_k_fraction)} x {k_max}"))
    cap_k, limit, why = k_max, "none", []
    for c, code, text in caps:
        if c < cap_k:
            cap_k, limit = c, code
        why.append(f"{text} -> {c}")
    allowed = [k for k in ks if k <= cap_k]
    if budget is None:
        k, fits = cap_k, None
        why.append("no latency budget")
    else:
        fitting = [k for k in allowed if latency[k] <= budget]
        if fitting:
            k, fits = max(fitting), True
            if k < cap_k:
                limit = "budget"
                why.append(f"k={cap_k} p90 {latency[cap_k]:.3g} ms exceeds the {_fmt(budget)} ms budget")
            why.append(f"k={k} p90 {latency[k]:.3g} ms fits the {_fmt(budget)} ms budget")
        else:
            k, fits, limit = ks[0], False, "budget"
            why.append(f"no k fits the {_fmt(budget)} ms budget (k={ks[0]} p90 {latency[ks[0]]:.3g} ms): using the smallest k")
    return Decision(k=k, limit=limit, reason="; ".join(why), cap_k=cap_k, band=band_name, battery_percent=percent,
                    budget_ms=budget, p90_ms=latency[k], fits_budget=fits)


def decide(latency: Mapping[int, float], policy: PolicyConfig, inputs: PolicyInput,
           previous_k: Optional[int] = None) -> Decision:
    """Pick k from ``latency`` (k -> p90 ms) under ``policy`` for ``inputs``; see the module docstring."""
    if not latency:
        raise PolicyError("empty_table", "the lookup table has no rows for this device")
    inp = inputs.checked()
    d = _decide_power(latency, policy, inp, previous_k)
    mat, age = inp.materialized, inp.cold_switch_age_s
    if (mat is None or previous_k is None or previous_k not in latency or previous_k not in mat or d.k in mat
            or d.k <= previous_k or policy.cold_switch_min_interval_s <= 0 or age is None
            or age >= policy.cold_switch_min_interval_s):
        return d
    reason = (f"{d.reason}; switch cost: k={d.k} is not materialised and the last cold switch was "
              f"{_fmt(round(age, 3))} s ago (< {_fmt(policy.cold_switch_min_interval_s)} s): staying at k={previous_k}")
    fits = None if d.budget_ms is None else latency[previous_k] <= d.budget_ms
    return Decision(k=previous_k, limit="switch_cost", reason=reason, cap_k=d.cap_k, band=d.band,
                    battery_percent=d.battery_percent, budget_ms=d.budget_ms, p90_ms=latency[previous_k],
                    fits_budget=fits, held=True)


def _decide_power(latency: Mapping[int, float], policy: PolicyConfig, inp: PolicyInput,
                  previous_k: Optional[int]) -> Decision:
    """Rules 1-3 (caps, budget, hysteresis) for checked inputs."""
    budget = inp.budget_ms if inp.budget_ms is not None else policy.budget_ms
    unknown = inp.battery is None
    percent = policy.unknown_battery_percent if unknown else inp.battery
    now = _choose(latency, policy, inp, percent, budget)
    prefix = "battery unknown, treated as " + _fmt(percent) + "%; " if unknown and not inp.charging else ""
    if previous_k is not None and previous_k not in latency:
        return Decision(**{**now.as_dict(), "reason": prefix + now.reason + f"; previous k={previous_k} is not in the table, ignored"})
    if previous_k is None or unknown or inp.charging or policy.hysteresis_percent <= 0 or previous_k >= now.k:
        return Decision(**{**now.as_dict(), "reason": prefix + now.reason})
    conservative = _choose(latency, policy, inp, max(0.0, percent - policy.hysteresis_percent), budget)
    k = max(conservative.k, min(previous_k, now.k))
    if k == now.k:
        return Decision(**{**now.as_dict(), "reason": prefix + now.reason})
    reason = (f"{now.reason}; hysteresis: staying at k={k} (previous k={previous_k}) until the battery is "
              f"{_fmt(policy.hysteresis_percent)}% above the band edge")
    fits = None if budget is None else latency[k] <= budget
    return Decision(k=k, limit="hysteresis", reason=prefix + reason, cap_k=now.cap_k, band=now.band,
                    battery_percent=percent, budget_ms=budget, p90_ms=latency[k], fits_budget=fits, held=True)


class PolicyState:
    """Stateful policy for a running app or runtime: remembers the previous k for hysteresis.

    >>> state = PolicyState({3: 4.1, 6: 9.8, 12: 31.0}, PolicyConfig())
    >>> state.update(PolicyInput(battery=35)).k
    6
    """

    def __init__(self, latency: Mapping[int, float], policy: Optional[PolicyConfig] = None,
                 previous_k: Optional[int] = None):
        if not latency:
            raise PolicyError("empty_table", "the lookup table has no rows for this device")
        self.latency = {int(k): float(v) for k, v in latency.items()}
        self.policy = policy or PolicyConfig()
        self.previous_k = previous_k
        self.last: Optional[Decision] = None

    def update(self, inputs: PolicyInput) -> Decision:
        decision = decide(self.latency, self.policy, inputs, self.previous_k)
        self.previous_k = decision.k
        self.last = decision
        return decision

    def reset(self) -> None:
        self.previous_k = None
        self.last = None
