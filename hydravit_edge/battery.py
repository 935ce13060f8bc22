"""Power and thermal state of a Linux machine, for the policy (no torch, no numpy).

Reads ``/sys/class/power_supply`` (batteries: ``capacity`` or energy/charge counters and
``status``; mains/USB supplies: ``online``), ``/sys/class/thermal/thermal_zone*`` (temperature
and trip points) and ``/sys/firmware/acpi/platform_profile`` (``low-power``).  Whatever is
absent reads as unknown: a board without a battery gives ``battery_percent=None``, which the
policy maps to its ``unknown_battery_percent``.

Every reader takes ``root`` (default ``/sys``) so tests and other tools can point it at a copy.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["PowerState", "read_power_state", "read_battery", "read_thermal", "read_low_power", "THERMAL_LEVELS_C"]

#: Fallback thresholds (deg C) for zones without trip points: fair, serious, critical.
THERMAL_LEVELS_C = (70.0, 85.0, 95.0)

_ON_POWER_STATUS = {"charging", "full", "not charging"}


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> Optional[int]:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


@dataclass
class PowerState:
    """What the policy needs, as read from the system; ``None`` where unknown."""

    battery_percent: Optional[float] = None
    charging: Optional[bool] = None
    low_power: bool = False
    thermal: Optional[str] = None
    temperature_c: Optional[float] = None
    sources: list[str] = field(default_factory=list)

    def as_policy_input(self, budget_ms: Optional[float] = None):
        """A :class:`hydravit_edge.policy.PolicyInput` (unknown charging counts as not charging)."""
        from .policy import PolicyInput

        return PolicyInput(battery=self.battery_percent, charging=bool(self.charging), low_power=self.low_power,
                           thermal=self.thermal, budget_ms=budget_ms)

    def as_dict(self) -> dict:
        return asdict(self)


def read_battery(root: str | os.PathLike = "/sys") -> tuple[Optional[float], Optional[bool], list[str]]:
    """(percent, on external power, supplies read) from ``root/class/power_supply``.

    Peripheral batteries (``scope`` = Device, e.g. a mouse) are ignored.  Several system
    batteries combine by energy (or charge) when the counters exist, else by mean capacity.
    ``charging`` is True when a battery reports Charging/Full/Not charging or a mains/USB
    supply is online, False when batteries discharge, None when nothing says.
    """
    base = Path(root) / "class" / "power_supply"
    if not base.is_dir():
        return None, None, []
    percents, now_sum, full_sum, counters_ok = [], 0, 0, True
    on_power: Optional[bool] = None
    used = []
    for sup in sorted(base.iterdir()):
        kind = (_read(sup / "type") or "").lower()
        if kind == "battery":
            if (_read(sup / "scope") or "").lower() == "device" or _read_int(sup / "present") == 0:
                continue
            capacity = _read_int(sup / "capacity")
            now = _read_int(sup / "energy_now") if (sup / "energy_now").exists() else _read_int(sup / "charge_now")
            full = _read_int(sup / "energy_full") if (sup / "energy_full").exists() else _read_int(sup / "charge_full")
            if now is not None and full:
                now_sum += now
                full_sum += full
                if capacity is None:
                    capacity = round(100.0 * now / full, 1)
            else:
                counters_ok = False
            if capacity is not None:
                percents.append(float(min(100, max(0, capacity))))
            status = (_read(sup / "status") or "").lower()
            if status in _ON_POWER_STATUS:
                on_power = True
            elif status == "discharging" and on_power is None:
                on_power = False
            used.append(sup.name)
        elif kind in ("mains", "usb", "usb_c", "usb_pd", "wireless", "ups"):
            online = _read_int(sup / "online")
            if online == 1:
                on_power = True
            elif online == 0 and on_power is None:
                on_power = False
            used.append(sup.name)
    if not percents:
        return None, on_power, used
    if counters_ok and full_sum > 0 and len(percents) > 1:
        percent = round(100.0 * now_sum / full_sum, 1)
    else:
        percent = round(sum(percents) / len(percents), 1)
    return min(100.0, max(0.0, percent)), on_power, used


def _zone_level(zone: Path, temp_c: float) -> str:
    trips: dict[str, float] = {}
    for p in zone.glob("trip_point_*_type"):
        kind = (_read(p) or "").lower()
        t = _read_int(p.with_name(p.name.replace("_type", "_temp")))
        if kind and t is not None and t > 0:
            trips[kind] = min(trips.get(kind, t / 1000.0), t / 1000.0)
    hot = min((trips[k] for k in ("hot", "critical") if k in trips), default=None)
    passive = trips.get("passive")
    if hot is None and passive is None:
        fair, serious, critical = THERMAL_LEVELS_C
    else:
        critical = hot if hot is not None else passive + 15.0
        serious = passive if passive is not None else critical - 10.0
        fair = serious - 10.0
    if temp_c >= critical:
        return "critical"
    if temp_c >= serious:
        return "serious"
    if temp_c >= fair:
        return "fair"
    return "nominal"


_ORDER = ("nominal", "fair", "serious", "critical")


def read_thermal(root: str | os.PathLike = "/sys") -> tuple[Optional[str], Optional[float]]:
    """(state, hottest zone temperature in deg C) from ``root/class/thermal``; (None, None) if no zone reads.

    A zone is ``critical`` at or above its hot/critical trip point, ``serious`` at or above its
    passive trip point (where the kernel starts throttling), ``fair`` within 10 deg C below that;
    zones without trip points use :data:`THERMAL_LEVELS_C`.  The worst zone wins.
    """
    base = Path(root) / "class" / "thermal"
    if not base.is_dir():
        return None, None
    worst, hottest = None, None
    for zone in sorted(base.glob("thermal_zone*")):
        milli = _read_int(zone / "temp")
        if milli is None:
            continue
        temp = milli / 1000.0
        if not -50.0 < temp < 200.0:  # unreadable sensors report nonsense
            continue
        level = _zone_level(zone, temp)
        hottest = temp if hottest is None else max(hottest, temp)
        if worst is None or _ORDER.index(level) > _ORDER.index(worst):
            worst = level
    return worst, hottest


def read_low_power(root: str | os.PathLike = "/sys") -> bool:
    """True when the ACPI platform profile is ``low-power`` (laptops with power-profiles-daemon)."""
    return (_read(Path(root) / "firmware" / "acpi" / "platform_profile") or "").lower() == "low-power"


def read_power_state(root: str | os.PathLike = "/sys") -> PowerState:
    """Battery, charging, low-power and thermal state of this machine (unknown parts are None)."""
    percent, charging, supplies = read_battery(root)
    thermal, temp = read_thermal(root)
    sources = [f"power_supply/{s}" for s in supplies]
    if temp is not None:
        sources.append("thermal")
    return PowerState(battery_percent=percent, charging=charging, low_power=read_low_power(root),
                      thermal=thermal, temperature_c=temp, sources=sources)
