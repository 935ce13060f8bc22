"""The battery/thermal policy that picks a (k, precision) option from a device's lookup-table rows.

The candidates are options: a head count k at a precision, with its p90 latency and, where
measured, top-1 accuracy (:mod:`hydravit_edge.policy_options`).  The old table form
``{k: p90_ms}`` is every k at fp32 without accuracy, and then every rule below is the k-only
rule it always was.  When the LUT marks rows ``frontier`` (``hydravit-edge lut build`` does:
no other row of the entry is at least as fast and as accurate), only frontier rows are
candidates; the caps are computed over every row.  **Rank** ("more accurate"): the highest
top-1 when every candidate has one, else the largest k; ties: lower p90, then the precision
order fp32, fp16, int8, int8-static (other names after, alphabetically), then larger k.

Every threshold is a field of the LUT's ``policy`` section (defaults in :data:`DEFAULT_POLICY`):

1. Caps.  Each active condition caps k at ``fraction x k_max`` over the distinct k of the
   options (the largest k not above it; the smallest k is always allowed):

   * low-power mode: ``low_power_max_k_fraction`` (default 0: the smallest k);
   * thermal state ``nominal|fair|serious|critical``: ``thermal_max_k_fraction[state]``
     (default 1, 1, 0.5, 0: critical means the smallest k);
   * charging: ``charging_max_k_fraction`` (default 1); otherwise the battery band: the first
     of ``battery_bands`` (sorted by ``min_percent``, highest first) with
     ``battery >= min_percent`` gives ``max_k_fraction`` (default >= 50 %: 1, >= 20 %: 0.5,
     below: 0.25).  An unknown battery level counts as ``unknown_battery_percent`` (default
     100: boards without a battery run on mains).

   The tightest cap ``cap_k`` wins; on a tie the first of low-power, thermal, battery is
   reported.  The cap is also a latency: ``cap_ms`` = the largest p90 among the options with
   k = cap_k.  Allowed: the candidates with k <= cap_k, and those with a larger k whose p90 is
   measured (> 0) and <= cap_ms (a faster precision of a larger k costs no more than the
   cap's k).  (Should none be allowed -- only when a memory budget left out the row that
   dominated the cap's rows -- the candidates of the smallest candidate k are.)
2. Budget.  Among the allowed options, those whose p90 is within the budget (``budget_ms``,
   overridable per call; ``null`` = no budget): the highest-ranked.  When none fits, the
   smallest allowed k at its fastest precision (ties: the precision order).
3. Hysteresis.  Given the previous option, the choice only RISES (to a higher-ranked option)
   when the battery is at least ``hysteresis_percent`` above the band edge that allows it:
   with ``now = choice(battery)`` ranked above the previous one and
   ``low = choice(battery - hysteresis)``, the result is the higher-ranked of ``low`` and the
   previous option (the previous one only while it is allowed by the caps and within the
   budget), never above ``now``.  It drops at once.  Not applied while charging or when the
   battery level is unknown.  A previous option that is not a candidate is ignored.
4. Switch cost.  Given which options are materialised now (``materialized``: their sessions
   are built) and the seconds since the last cold switch (``cold_switch_age_s``), the choice
   does not RISE onto an option that is not materialised while the last cold switch was less
   than ``cold_switch_min_interval_s`` ago (default 30 s; 0: off): it stays on the previous
   option when that one is materialised, allowed by the caps and within the budget.  Building a
   session costs a second or more and its memory, so a policy that flaps between bands must
   not rebuild each time.  It drops at once.  Without ``materialized`` (every option
   resident, or unknown) the rule does not apply.

The previous option and the entries of ``materialized`` are ``k`` (k at fp32 where the table
has it, else k's first precision in the order above), ``"k@precision"`` or
``{"k": k, "precision": p}``.

The memory budget: a LUT device entry with ``memory_budget_mb`` leaves out the rows whose
steady ``rss_anon_mb`` exceeds it (the smallest k's rows always stay), before the rules above.

The result names the option (``k``, ``precision``) and what limited it (``limit``): ``none``,
``battery``, ``thermal``, ``low_power`` (the cap: cap_k below the largest k), ``budget`` (the
budget left out a higher-ranked allowed option, or none fits), ``hysteresis`` or
``switch_cost``; its ``reason`` names the precision when the options have several.  The Kotlin
(``android_demo/policy``) and Swift (``ios_demo/HydraPolicy``) ports implement the same rule;
``tests/policy_vectors.json`` holds the cases all three pass.

No torch, no numpy: the runtime and the apps' logic depend on this alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .errors import UsageError
from .policy_options import (
    PRECISION_ORDER, OptionRef, PolicyError, PolicyOption, Ranking, as_options, default_latency, parse_ref, resolve_ref,
)

__all__ = [
    "THERMAL_STATES", "LIMITS", "DEFAULT_POLICY", "PolicyError", "PolicyConfig", "Band", "PolicyInput",
    "Decision", "decide", "PolicyState", "parse_battery", "cap_for_fraction", "PolicyOption", "PRECISION_ORDER",
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

#: What the policy takes as its table: {k: p90_ms}, {(k, precision): p90_ms} or PolicyOption items.
Candidates = Union[Mapping[Any, float], Iterable[PolicyOption]]


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

    ``materialized``: the options whose sessions are built now (None: every option resident, or
    unknown), each ``k``, ``"k@precision"``, ``{"k": k, "precision": p}`` or ``(k, precision)``
    (a bare k: module docstring); :meth:`checked` makes them ``(k, precision or None)`` pairs.
    ``cold_switch_age_s``: seconds since the last cold switch (None: none yet).  Rule 4.
    """

    battery: Optional[float] = None
    charging: bool = False
    low_power: bool = False
    thermal: Optional[str] = None
    budget_ms: Optional[float] = None
    materialized: Optional[tuple[Any, ...]] = None
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
            refs = None if isinstance(mat, (str, bytes, Mapping)) else [parse_ref(m) for m in mat]
            if refs is None or None in refs:
                raise PolicyError("invalid_switch_state", "materialized must be a list of head counts k, 'k@precision' "
                                                          f"or {{k, precision}} objects, got {mat!r}")
            mat = tuple(sorted(set(refs), key=lambda r: (r[0], r[1] or "")))
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
    precision: str = "fp32"
    top1: Optional[float] = None
    #: the cap in latency: the largest p90 among the options with k = cap_k
    cap_ms: Optional[float] = None

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.k, "precision": self.precision, "limit": self.limit, "reason": self.reason,
                "cap_k": self.cap_k, "cap_ms": self.cap_ms, "band": self.band,
                "battery_percent": self.battery_percent, "budget_ms": self.budget_ms, "p90_ms": self.p90_ms,
                "top1": self.top1, "fits_budget": self.fits_budget, "held": self.held}


def cap_for_fraction(ks: Sequence[int], fraction: float) -> int:
    """Largest k in ``ks`` with ``k <= fraction * max(ks)``; the smallest k when none is."""
    limit = fraction * max(ks) + _EPS
    allowed = [k for k in ks if k <= limit]
    return max(allowed) if allowed else min(ks)


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class _Table:
    """Validated options of one decision: all of them (caps), the frontier candidates, their rank."""

    options: tuple[PolicyOption, ...]
    candidates: tuple[PolicyOption, ...]
    ranking: Ranking
    ks: tuple[int, ...]
    #: the options have several precisions: reasons name them
    several: bool

    def label(self, o: PolicyOption) -> str:
        return o.label(self.several)


def _table(candidates: Candidates) -> _Table:
    options = as_options(candidates)
    frontier = tuple(o for o in options if o.frontier)
    if not frontier:
        raise PolicyError("empty_table", "no row of this device's table is on its accuracy/latency frontier")
    return _Table(options, frontier, Ranking(frontier), tuple(sorted({o.k for o in options})),
                  len({o.precision for o in options}) > 1)


@dataclass(frozen=True)
class _Choice:
    decision: Decision
    option: PolicyOption
    #: the candidates the caps allow
    allowed: tuple[PolicyOption, ...]

    def eligible(self, o: PolicyOption) -> bool:
        """``o`` may be kept instead of this choice: allowed by the caps and within the budget."""
        budget = self.decision.budget_ms
        return o in self.allowed and (budget is None or o.p90_ms <= budget)

    def holding(self, o: PolicyOption, limit: str, reason: str) -> "_Choice":
        budget = self.decision.budget_ms
        d = dataclasses.replace(self.decision, k=o.k, precision=o.precision, top1=o.top1, p90_ms=o.p90_ms,
                                limit=limit, reason=reason, held=True,
                                fits_budget=None if budget is None else o.p90_ms <= budget)
        return _Choice(d, o, self.allowed)

    def explained(self, reason: str) -> "_Choice":
        return _Choice(dataclasses.replace(self.decision, reason=reason), self.option, self.allowed)


def _choose(table: _Table, policy: PolicyConfig, inp: PolicyInput, percent: float, budget: Optional[float]) -> _Choice:
    """Rules 1 and 2 at battery level ``percent``."""
    ks = list(table.ks)
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
    cap_ms = max(o.p90_ms for o in table.options if o.k == cap_k)
    allowed = tuple(o for o in table.candidates if o.k <= cap_k or 0 < o.p90_ms <= cap_ms)
    if not allowed:
        k0 = min(o.k for o in table.candidates)
        allowed = tuple(o for o in table.candidates if o.k == k0)
    if table.several and cap_k < k_max:
        why.append(f"a larger k is allowed at a p90 within k={cap_k}'s {cap_ms:.3g} ms")
    top = table.ranking.best(allowed)
    label = table.label
    if budget is None:
        pick, fits = top, None
        why.append("no latency budget")
    else:
        fitting = [o for o in allowed if o.p90_ms <= budget]
        if fitting:
            pick, fits = table.ranking.best(fitting), True
            if pick != top:
                limit = "budget"
                why.append(f"{label(top)} p90 {top.p90_ms:.3g} ms exceeds the {_fmt(budget)} ms budget")
            why.append(f"{label(pick)} p90 {pick.p90_ms:.3g} ms fits the {_fmt(budget)} ms budget")
        else:
            pick, fits, limit = Ranking.smallest_fastest(allowed), False, "budget"
            what, how = ("option", " at its fastest precision") if table.several else ("k", "")
            why.append(f"no {what} fits the {_fmt(budget)} ms budget ({label(pick)} p90 {pick.p90_ms:.3g} ms): "
                       f"using the smallest k{how}")
    if table.several and budget is None:
        why.append(f"{label(pick)} ranks highest")
    d = Decision(k=pick.k, precision=pick.precision, top1=pick.top1, limit=limit, reason="; ".join(why), cap_k=cap_k,
                 cap_ms=cap_ms, band=band_name, battery_percent=percent, budget_ms=budget, p90_ms=pick.p90_ms,
                 fits_budget=fits)
    return _Choice(d, pick, allowed)


def _ref_text(ref: OptionRef) -> str:
    return f"k={ref[0]}" + (f" {ref[1]}" if ref[1] is not None else "")


def decide(candidates: Candidates, policy: PolicyConfig, inputs: PolicyInput, previous: Any = None, *,
           previous_k: Optional[int] = None) -> Decision:
    """Pick an option from ``candidates`` (``{k: p90_ms}``, ``{(k, precision): p90_ms}`` or
    :class:`PolicyOption` items) under ``policy`` for ``inputs``; ``previous``: the option in use
    (``k``, ``"k@precision"``, ``{k, precision}``, a pair or an option; ``previous_k``: the old
    keyword for a k).  See the module docstring."""
    return _decide(_table(candidates), policy, inputs, previous if previous is not None else previous_k)


def _decide(table: _Table, policy: PolicyConfig, inputs: PolicyInput, previous: Any) -> Decision:
    inp = inputs.checked()
    ref = None if previous is None else parse_ref(previous)
    if previous is not None and ref is None:
        raise PolicyError("invalid_previous", f"the previous option must be k, 'k@precision' or {{k, precision}}, "
                                              f"got {previous!r}")
    prev = None if ref is None else resolve_ref(ref, table.candidates)
    c = _decide_power(table, policy, inp, ref, prev)
    mat, age, interval = inp.materialized, inp.cold_switch_age_s, policy.cold_switch_min_interval_s
    if mat is None or prev is None or interval <= 0 or age is None or age >= interval:
        return c.decision
    resident = {o.ref for o in (resolve_ref(r, table.candidates) for r in mat) if o is not None}
    if (prev.ref not in resident or c.option.ref in resident or not table.ranking.above(c.option, prev)
            or not c.eligible(prev)):
        return c.decision
    reason = (f"{c.decision.reason}; switch cost: {table.label(c.option)} is not materialised and the last cold "
              f"switch was {_fmt(round(age, 3))} s ago (< {_fmt(interval)} s): staying at {table.label(prev)}")
    return c.holding(prev, "switch_cost", reason).decision


def _decide_power(table: _Table, policy: PolicyConfig, inp: PolicyInput, ref: Optional[OptionRef],
                  prev: Optional[PolicyOption]) -> _Choice:
    """Rules 1-3 (caps, budget, hysteresis) for checked inputs; ``prev``: the previous option among the candidates."""
    budget = inp.budget_ms if inp.budget_ms is not None else policy.budget_ms
    unknown = inp.battery is None
    percent = policy.unknown_battery_percent if unknown else inp.battery
    now = _choose(table, policy, inp, percent, budget)
    prefix = "battery unknown, treated as " + _fmt(percent) + "%; " if unknown and not inp.charging else ""
    if ref is not None and prev is None:
        where = "is off the frontier" if resolve_ref(ref, table.options) is not None else "is not in the table"
        return now.explained(prefix + now.decision.reason + f"; previous {_ref_text(ref)} {where}, ignored")
    if (prev is None or unknown or inp.charging or policy.hysteresis_percent <= 0
            or not table.ranking.above(now.option, prev)):
        return now.explained(prefix + now.decision.reason)
    low = _choose(table, policy, inp, max(0.0, percent - policy.hysteresis_percent), budget).option
    held = prev if now.eligible(prev) and table.ranking.above(prev, low) else low
    if not table.ranking.above(now.option, held):
        return now.explained(prefix + now.decision.reason)
    reason = (f"{now.decision.reason}; hysteresis: staying at {table.label(held)} (previous {table.label(prev)}) "
              f"until the battery is {_fmt(policy.hysteresis_percent)}% above the band edge")
    return now.holding(held, "hysteresis", prefix + reason)


class PolicyState:
    """Stateful policy for a running app or runtime: remembers the previous option for hysteresis.

    >>> state = PolicyState({3: 4.1, 6: 9.8, 12: 31.0}, PolicyConfig())
    >>> state.update(PolicyInput(battery=35)).k
    6
    """

    def __init__(self, candidates: Candidates, policy: Optional[PolicyConfig] = None, previous: Any = None, *,
                 previous_k: Optional[int] = None):
        self._table = _table(candidates)
        self.policy = policy or PolicyConfig()
        #: the option in use (any form :func:`decide` accepts); each update sets ``(k, precision)``
        self.previous = previous if previous is not None else previous_k
        self.last: Optional[Decision] = None

    @property
    def options(self) -> tuple[PolicyOption, ...]:
        return self._table.options

    @property
    def latency(self) -> dict[int, float]:
        """k -> p90 ms of each k's default option (fp32, else its first precision): the old table form."""
        return default_latency(self._table.options)

    @property
    def previous_k(self) -> Optional[int]:
        ref = None if self.previous is None else parse_ref(self.previous)
        return None if ref is None else ref[0]

    @previous_k.setter
    def previous_k(self, k: Optional[int]) -> None:
        self.previous = k

    def update(self, inputs: PolicyInput) -> Decision:
        decision = _decide(self._table, self.policy, inputs, self.previous)
        self.previous = (decision.k, decision.precision)
        self.last = decision
        return decision

    def reset(self) -> None:
        self.previous = None
        self.last = None
