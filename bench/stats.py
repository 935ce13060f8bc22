"""Latency statistics of timed runs: the percentiles every report row carries."""

from __future__ import annotations

import math
from typing import Sequence

from hydravit_edge.errors import UsageError

__all__ = ["percentile", "latency_stats"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default).

    The Kotlin and Swift report writers in the demo apps use the same definition.
    """
    if not values:
        raise UsageError("percentile of no values")
    if not 0 <= q <= 100:
        raise UsageError(f"percentile q must be in 0..100, got {q}")
    a = sorted(float(v) for v in values)
    pos = (len(a) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(a) - 1)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """Row fields from timed runs: ``latency_median_ms``, ``latency_p90_ms``, ``latency_min_ms``, ``runs``."""
    return {
        "latency_median_ms": round(percentile(samples_ms, 50), 4),
        "latency_p90_ms": round(percentile(samples_ms, 90), 4),
        "latency_min_ms": round(min(samples_ms), 4),
        "runs": len(samples_ms),
    }
