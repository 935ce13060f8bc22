"""What a report says about the machine it was measured on: OS, CPU, cores, GPU, memory, runtime versions."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterable, Mapping, Optional

__all__ = ["device_info", "runtime_versions"]


def runtime_versions(names: Iterable[str] = ("onnxruntime", "executorch", "ai-edge-litert", "coremltools", "torch",
                                             "numpy")) -> dict[str, str]:
    """Installed versions of the given distributions (absent ones are left out), plus ``python``."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    return out


@functools.lru_cache(maxsize=1)
def _cpu_model() -> Optional[str]:
    """The CPU's brand string from py-cpuinfo (the ``bench`` extra); /proc/cpuinfo or platform when it is missing."""
    try:
        import cpuinfo
    except ImportError:
        cpuinfo = None
    if cpuinfo is not None:
        try:
            brand = (cpuinfo.get_cpu_info().get("brand_raw") or "").strip()
        except Exception:  # py-cpuinfo could not probe this machine
            brand = ""
        if brand:
            return brand
    return _cpu_model_fallback()


def _cpu_model_fallback() -> Optional[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if m and m.group(1).strip():
            return m.group(1).strip()
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or None


def _gpu_model() -> Optional[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return ", ".join(names) or None


def _os_name() -> str:
    system = platform.system()
    pretty = None
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    base = f"{system} {platform.release()}"
    return f"{base} ({pretty})" if pretty else base


def _cpus() -> tuple[Optional[int], Optional[int]]:
    """(logical, physical) CPU cores of the machine (psutil; ``os.cpu_count()`` when psutil is missing)."""
    try:
        import psutil

        return psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported platform
        return os.cpu_count(), None


def _memory_mb() -> Optional[float]:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1e6, 1)
    except Exception:  # psutil missing or unsupported platform
        return None


def device_info(name: Optional[str] = None, *, gpu: Optional[str] = None, detect_gpu: bool = True,
                runtimes: Optional[Mapping[str, str]] = None, description: Optional[str] = None) -> dict:
    """The ``device`` section for this machine: name (default: host name), OS, CPU, cores, GPU, RAM, runtimes."""
    system = platform.system().lower()
    plat = {"linux": "linux", "darwin": "macos", "windows": "windows"}.get(system, "other")
    logical, physical = _cpus()
    info = {
        "name": name or socket.gethostname() or "this-machine",
        "platform": plat,
        "os": _os_name(),
        "cpu": _cpu_model(),
        "cpu_cores": logical,
        "cpu_physical_cores": physical,
        "gpu": gpu if gpu is not None else (_gpu_model() if detect_gpu else None),
        "memory_mb": _memory_mb(),
        "runtimes": dict(runtimes) if runtimes is not None else runtime_versions(),
    }
    if description:
        info["description"] = description
    return info
