"""Battery traces for the demo: CSV ``time_s, percent, charging, thermal`` (optionally ``low_power``),
read and checked by :func:`load_trace`; the default trace ships in ``bench/data``."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydravit_edge.errors import UsageError

__all__ = ["DEFAULT_TRACE", "Trace", "TraceError", "load_trace", "THERMAL_STATES"]

DEFAULT_TRACE = Path(__file__).resolve().parent / "data" / "battery_trace_default.csv"
THERMAL_STATES = ("nominal", "fair", "serious", "critical")
REQUIRED = ("time_s", "percent", "charging", "thermal")
_ALIASES = {"time": "time_s", "t": "time_s", "battery": "percent", "battery_percent": "percent", "level": "percent"}
_TRUE = {"1", "true", "yes", "y", "on", "charging"}
_FALSE = {"0", "false", "no", "n", "off", "discharging", ""}


class TraceError(UsageError):
    """A battery trace that cannot be used (message names the file, line and column)."""


@dataclass
class Trace:
    path: Path
    time_s: list[float]
    percent: list[float]
    charging: list[bool]
    thermal: list[str]
    low_power: list[bool]

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def duration_s(self) -> float:
        return self.time_s[-1] - self.time_s[0]

    def state_at(self, t: float) -> dict:
        """Battery interpolated linearly; charging/thermal/low-power from the last row at or before ``t``."""
        ts = self.time_s
        if t <= ts[0]:
            i = 0
            pct = self.percent[0]
        elif t >= ts[-1]:
            i = len(ts) - 1
            pct = self.percent[-1]
        else:
            import bisect

            i = bisect.bisect_right(ts, t) - 1
            t0, t1 = ts[i], ts[i + 1]
            w = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            pct = self.percent[i] + w * (self.percent[i + 1] - self.percent[i])
        return {"time_s": t, "percent": round(pct, 1), "charging": self.charging[i], "thermal": self.thermal[i],
                "low_power": self.low_power[i]}


def _bool(text: str, where: str, column: str) -> bool:
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise TraceError(f"{where}: {column} must be 0/1 or true/false, got {text!r}")


def load_trace(path: Optional[str | os.PathLike] = None) -> Trace:
    """Read and check a battery trace CSV (header row required)."""
    path = Path(path) if path is not None else DEFAULT_TRACE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such battery trace file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a CSV file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the battery trace ({exc})") from None
    reader = csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{path}: empty battery trace; expected a header row {','.join(REQUIRED)}") from None
    cols = [_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in header]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; a battery trace needs a header row "
                         f"{','.join(REQUIRED)} (optional: low_power); found: {','.join(h.strip() for h in header)}")
    idx = {c: cols.index(c) for c in cols}
    t, pct, chg, th, lp = [], [], [], [], []
    for n, row in enumerate(reader, start=2):
        where = f"{path}: row {n}"
        if len(row) < len(header):
            raise TraceError(f"{where}: {len(row)} values for {len(header)} columns")
        try:
            ti = float(row[idx["time_s"]])
            p = float(row[idx["percent"]])
        except ValueError:
            raise TraceError(f"{where}: time_s and percent must be numbers, got {row[idx['time_s']]!r}, "
                             f"{row[idx['percent']]!r}") from None
        if not math.isfinite(ti) or not math.isfinite(p):
            raise TraceError(f"{where}: time_s and percent must be finite numbers")
        if not 0.0 <= p <= 100.0:
            raise TraceError(f"{where}: battery percent {p:g} is outside 0..100")
        if t and ti < t[-1]:
            raise TraceError(f"{where}: time_s {ti:g} goes back in time (previous row {t[-1]:g}); rows must be in time order")
        thermal = row[idx["thermal"]].strip().lower() or "nominal"
        if thermal not in THERMAL_STATES:
            raise TraceError(f"{where}: thermal must be one of {', '.join(THERMAL_STATES)}, got {row[idx['thermal']]!r}")
        t.append(ti)
        pct.append(p)
        chg.append(_bool(row[idx["charging"]], where, "charging"))
        th.append(thermal)
        lp.append(_bool(row[idx["low_power"]], where, "low_power") if "low_power" in idx else False)
    if len(t) < 2:
        raise TraceError(f"{path}: a battery trace needs at least 2 rows, found {len(t)}")
    if t[-1] == t[0]:
        raise TraceError(f"{path}: all rows have the same time_s; the trace must span some time")
    return Trace(path, t, pct, chg, th, lp)


# =========================================================================== the demo
