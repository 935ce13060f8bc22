"""Resident memory of this process (Linux /proc, with portable fallbacks); no torch, no numpy.

Peak memory is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process
image.  ``ru_maxrss`` is only the fallback off Linux: the kernel carries the parent's
high-water mark over fork + exec, so a measurement subprocess started by a large parent
(pytest, a training run) would report the parent's peak instead of its own.
"""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_mb", "rss_mb"]


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6  # kB -> decimal MB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, decimal MB."""
    mb = _status_mb("VmHWM")
    if mb is not None:
        return mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e6  # bytes on macOS, KiB elsewhere


def rss_mb() -> float:
    """Current resident memory of this process, decimal MB (psutil off Linux; else the peak)."""
    mb = _status_mb("VmRSS")
    if mb is not None:
        return mb
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except Exception:  # psutil missing: the peak so far is the best we have
        return peak_rss_mb()
