"""Latency statistics of timed runs: the percentiles every report row carries."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hydravit_edge.errors import UsageError

__all__ = ["percentile", "latency_stats"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100): :func:`numpy.percentile`, ``method="linear"`` (interpolation between order statistics).

    The Kotlin and Swift report writers in the demo apps implement the same definition
    (``Stats.percentile`` in android_demo/policy/.../Report.kt and ios_demo/HydraPolicy/.../Report.swift).
    """
    if len(values) == 0:
        raise UsageError("percentile of no values")
    if not 0 <= q <= 100:
        raise UsageError(f"percentile q must be in 0..100, got {q}")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q, method="linear"))


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """Row fields from timed runs: ``latency_median_ms``, ``latency_p90_ms``, ``latency_min_ms``, ``runs``."""
    if len(samples_ms) == 0:
        raise UsageError("latency statistics of no timed runs")
    return {
        "latency_median_ms": round(percentile(samples_ms, 50), 4),
        "latency_p90_ms": round(percentile(samples_ms, 90), 4),
        "latency_min_ms": round(float(np.min(samples_ms)), 4),
        "runs": len(samples_ms),
    }
