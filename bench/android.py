"""``hydravit-edge bench android``: run the Android demo's benchmark mode over adb and import its report.

The contract with the app (``android_demo/``):

* start: ``adb shell am start -W -n PACKAGE/ACTIVITY --ez benchmark true [--ei runs N] [--ei warmup W]
  [--es backend onnxruntime|executorch]``;
* the app runs every k, writes its report (the harness's report schema) to a temporary file
  and renames it to ``REPORT_NAME`` in its app-specific external files directory
  (``/sdcard/Android/data/PACKAGE/files/``, readable by ``adb pull`` without root), so a file
  that exists is complete;
* this command deletes a stale report first, polls until the report appears (or ``timeout``),
  pulls it and imports it with :func:`hydravit_edge.bench.report_import.import_report`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from hydravit_edge.errors import HydraEdgeError

from .report_import import ImportResult, import_report

__all__ = ["AdbError", "REPORT_NAME", "DEFAULT_PACKAGE", "DEFAULT_ACTIVITY", "EXTRA_BENCHMARK", "EXTRA_RUNS",
           "EXTRA_WARMUP", "EXTRA_BACKEND", "find_adb", "list_devices", "pick_device", "device_report_path",
           "run_android_benchmark"]

# The names below match android_demo's policy/Contract.kt.
#: Application id and activity of the demo app.
DEFAULT_PACKAGE = "org.hydravit.edge.demo"
DEFAULT_ACTIVITY = ".MainActivity"
#: Intent extras of benchmark mode: --ez benchmark true [--ei runs N] [--ei warmup W] [--es backend B].
EXTRA_BENCHMARK = "benchmark"
EXTRA_RUNS = "runs"
EXTRA_WARMUP = "warmup"
EXTRA_BACKEND = "backend"
#: File name of the benchmark report in the app's external files directory.
REPORT_NAME = "hydravit-bench-report.json"


class AdbError(HydraEdgeError):
    """adb missing, no device, or the app did not produce its report."""


def find_adb() -> str:
    exe = shutil.which("adb")
    if exe is None:
        raise AdbError("adb was not found on PATH: install Android platform-tools "
                       "(https://developer.android.com/tools/releases/platform-tools) and connect a device with "
                       "USB debugging enabled, or copy the app's report off the phone and run "
                       "`hydravit-edge bench import FILE`")
    return exe


def _adb(adb: str, args: list[str], serial: Optional[str] = None, timeout: float = 60.0,
         check: bool = True) -> subprocess.CompletedProcess:
    cmd = [adb] + (["-s", serial] if serial else []) + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AdbError(f"`{' '.join(cmd)}` did not answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise AdbError(f"cannot run adb ({exc})") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise AdbError(f"`{' '.join(cmd)}` failed: {msg[-1] if msg else f'exit code {proc.returncode}'}")
    return proc


def list_devices(adb: str) -> list[tuple[str, str]]:
    """(serial, state) of every device adb lists (state 'device' = ready, 'unauthorized', 'offline')."""
    out = _adb(adb, ["devices"]).stdout
    devices = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            devices.append((parts[0], parts[1]))
    return devices


def pick_device(adb: str, serial: Optional[str]) -> str:
    devices = list_devices(adb)
    ready = [s for s, state in devices if state == "device"]
    if serial is not None:
        state = dict(devices).get(serial)
        if state is None:
            raise AdbError(f"no device with serial '{serial}' is connected (adb devices lists: "
                           f"{', '.join(s for s, _ in devices) or 'none'})")
        if state != "device":
            raise AdbError(f"device '{serial}' is {state}: accept the USB debugging prompt on the phone or reconnect it")
        return serial
    if not ready:
        others = ", ".join(f"{s} ({st})" for s, st in devices)
        raise AdbError("no Android device is connected over adb" + (f" in a usable state: {others}" if others else "")
                       + "; connect one with USB debugging enabled (check with `adb devices`)")
    if len(ready) > 1:
        raise AdbError(f"several devices are connected ({', '.join(ready)}); choose one with --serial")
    return ready[0]


def device_report_path(package: str) -> str:
    return f"/sdcard/Android/data/{package}/files/{REPORT_NAME}"


def run_android_benchmark(*, serial: Optional[str] = None, reports_dir: Path = Path("reports"),
                          timeout: float = 900.0, poll_s: float = 2.0, package: str = DEFAULT_PACKAGE,
                          activity: str = DEFAULT_ACTIVITY, runs: Optional[int] = None, warmup: Optional[int] = None,
                          backend: Optional[str] = None, log: Callable[[str], None] = print) -> ImportResult:
    adb = find_adb()
    serial = pick_device(adb, serial)
    remote = device_report_path(package)
    installed = _adb(adb, ["shell", "pm", "path", package], serial, check=False)
    if installed.returncode != 0 or "package:" not in installed.stdout:
        raise AdbError(f"the demo app '{package}' is not installed on {serial}; build and install android_demo/ "
                       "(see android_demo/README.md), or pass --package")
    _adb(adb, ["shell", "rm", "-f", remote], serial, check=False)
    component = activity if "/" in activity else f"{package}/{activity}"
    # literal extras (= the constants above): tests/test_app_contract.py matches them against Contract.kt
    start = ["shell", "am", "start", "-W", "-n", component, "--ez", "benchmark", "true"]
    if runs is not None:
        start += ["--ei", "runs", str(int(runs))]
    if warmup is not None:
        start += ["--ei", "warmup", str(int(warmup))]
    if backend is not None:
        start += ["--es", "backend", backend]
    proc = _adb(adb, start, serial)
    if "Error" in proc.stdout or "Error" in proc.stderr:
        raise AdbError(f"could not start {component} on {serial}: {(proc.stdout + proc.stderr).strip()[:300]}")
    log(f"started the benchmark on {serial} ({component}); waiting for {remote} (up to {timeout:.0f} s)")
    deadline = time.monotonic() + timeout
    while True:
        probe = _adb(adb, ["shell", "ls", remote], serial, check=False)
        if probe.returncode == 0 and "No such file" not in probe.stdout + probe.stderr and probe.stdout.strip():
            break
        if time.monotonic() > deadline:
            raise AdbError(f"the app did not write {remote} within {timeout:.0f} s; check the phone's screen and "
                           f"`adb -s {serial} logcat` for errors")
        time.sleep(poll_s)
    with tempfile.TemporaryDirectory(prefix="hydravit-android-") as tmp:
        local = Path(tmp) / REPORT_NAME
        _adb(adb, ["pull", remote, str(local)], serial, timeout=120.0)
        if not local.exists():
            raise AdbError(f"adb pull did not produce {local}")
        return import_report(local, reports_dir)
