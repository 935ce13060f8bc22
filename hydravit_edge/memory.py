"""Memory and CPUs of this process and machine: resident and peak memory, available memory, usable CPUs.

psutil answers available memory, CPU affinity and count (and current RSS off Linux).  The
peak is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process image, which
psutil does not report on Linux; ``ru_maxrss`` is only the fallback off Linux: the kernel
carries the parent's high-water mark over fork + exec, so a measurement subprocess started by
a large parent (pytest, a training run) would report the parent's peak instead of its own.
No torch, no numpy.
"""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_mb", "rss_mb", "resident_bytes", "release_freed_memory", "available_bytes", "cpu_count"]


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6  # kB -> decimal MB
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident_bytes() -> dict[str, int]:
    """``RssAnon`` (heap: copies, folded and packed weights), ``RssFile`` (file-backed pages such as
    memory-mapped weights, which the OS may drop and reread), ``VmRSS`` and ``VmHWM`` (peak) of this
    process, bytes (Linux; zeros elsewhere)."""
    out = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0, "VmHWM": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


_TRIM = None


def release_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim(0)``; nothing elsewhere).

    Building a k frees about as much as it keeps (onnxruntime folds the cut weights, prepacks
    them and frees the folded copies), but glibc keeps freed chunks in its arenas: the base
    model's k=12 graph left 843 MB resident after its session was built, 396 MB after
    ``malloc_trim(0)``, the same as the per-k file's session.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, decimal MB."""
    mb = _status_mb("VmHWM")
    if mb is not None:
        return mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e6  # bytes on macOS, KiB elsewhere


def rss_mb() -> float:
    """Current resident memory of this process, decimal MB (psutil off Linux; else the peak).

    On Linux ``VmRSS`` is read directly (what psutil reads too): benchmark workers call this
    before loading an artifact, and importing psutil there would add ~2 MB to the peak they report.
    """
    mb = _status_mb("VmRSS")
    if mb is not None:
        return mb
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except Exception:  # psutil missing: the peak so far is the best we have
        return peak_rss_mb()


def available_bytes() -> float | None:
    """Memory available to new processes without swapping (psutil's ``available``), bytes; None when unknown."""
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        return None


def cpu_count() -> int:
    """CPUs this process may run on: its CPU affinity where the platform has one, else the logical CPUs."""
    try:
        import psutil

        try:
            return max(1, len(psutil.Process().cpu_affinity()))
        except (AttributeError, NotImplementedError, OSError):  # no affinity on macOS
            return max(1, psutil.cpu_count(logical=True) or 1)
    except ImportError:  # pragma: no cover - psutil is a base dependency
        import os

        return os.cpu_count() or 1
