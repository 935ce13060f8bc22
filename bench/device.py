"""What a report says about the machine it was measured on: OS, CPU, cores, GPU, memory, runtime versions."""

from __future__ import annotations

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


def _cpu_model() -> Optional[str]:
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
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:
        physical = None
    info = {
        "name": name or socket.gethostname() or "this-machine",
        "platform": plat,
        "os": _os_name(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_physical_cores": physical,
        "gpu": gpu if gpu is not None else (_gpu_model() if detect_gpu else None),
        "memory_mb": _memory_mb(),
        "runtimes": dict(runtimes) if runtimes is not None else runtime_versions(),
    }
    if description:
        info["description"] = description
    return info
