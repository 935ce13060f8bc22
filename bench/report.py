"""Benchmark reports: the JSON every measurement ends up in, one file per device.

A report (schema: ``bench/schemas/report.schema.json``, ``schema_version`` 1) describes one
device (name, CPU/GPU, cores, OS, runtime versions), the export manifest the artifacts came
from (its sha256), and one row per k and runtime configuration: latency median/p90/min,
throughput at a batch size, load and k-switch cost, measured peak RSS, file size, params,
MACs, the paper's RAM figure and, when known, accuracy.  ``source`` says whether the figures
were ``measured`` (``hydravit-edge bench``, the demo apps) or ``published`` (the paper's A100
reference shipped in ``bench/data/reference_a100_paper.json``).

Reports live under ``reports/<device>.json``.  Every write is atomic (temporary file in the
same directory, then a rename), so an interrupted benchmark keeps the rows it had saved:
use :class:`ReportWriter` to save after each row.

This module imports neither torch nor any runtime.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from hydravit_edge.errors import HydraEdgeError, UsageError

__all__ = [
    "SCHEMA_VERSION", "SUPPORTED_VERSIONS", "BACKENDS", "MODES", "ROW_FIELDS", "REPORT_SCHEMA_PATH",
    "REFERENCE_REPORT_PATH", "ReportError", "ReportWriter", "ImportResult",
    "report_schema", "validate_report", "load_report", "save_report", "new_report", "make_row", "row_key",
    "group_key", "upsert_rows", "percentile", "latency_stats", "device_slug", "report_path", "find_reports",
    "load_reports", "device_info", "runtime_versions", "manifest_sha256", "import_report", "load_reference",
    "atomic_write_text", "utc_now", "register_report_commands",
]

#: Version written into new reports; readers accept :data:`SUPPORTED_VERSIONS`.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)

#: Runtimes a row may name (``row["backend"]``).
BACKENDS = ("onnxruntime", "executorch", "tflite", "coreml", "torch")
#: ``row["mode"]``: one artifact for every k, one per k, or eager PyTorch.
MODES = ("single", "per-k", "eager")

_HERE = Path(__file__).resolve().parent
REPORT_SCHEMA_PATH = _HERE / "schemas" / "report.schema.json"
REFERENCE_REPORT_PATH = _HERE / "data" / "reference_a100_paper.json"

#: Every field a row may carry (the schema's ``$defs.row.properties``), in table order.
ROW_FIELDS = (
    "k", "backend", "target", "mode", "artifact", "entry", "compute", "precision", "threads", "runs",
    "latency_median_ms", "latency_p90_ms", "latency_min_ms", "throughput_batch", "throughput_per_s",
    "load_ms", "switch_ms", "peak_rss_mb", "file_bytes", "params", "macs", "paper_ram_mb", "accuracy",
    "extra", "notes",
)


class ReportError(HydraEdgeError):
    """A report file that is missing, unreadable or does not match the report schema."""


# =========================================================================== schema

@lru_cache(maxsize=1)
def report_schema() -> dict:
    """The report JSON Schema (draft 2020-12) as a dict."""
    return json.loads(REPORT_SCHEMA_PATH.read_text(encoding="utf-8"))


def _where(error) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _schema_message(error) -> str:
    # the row's anyOf (latency or throughput) reads better phrased by what the row lacks
    if error.validator == "anyOf" and isinstance(error.instance, dict) and "backend" in error.instance:
        return "a row needs a numeric latency_p90_ms or throughput_per_s"
    return error.message


def validate_report(data: Any, where: str = "report") -> dict:
    """Check ``data`` against the report schema and the rules a schema cannot state.

    Returns ``data`` unchanged.  Raises :class:`ReportError` naming ``where``, the JSON path
    and what is wrong (the first problem found, schema_version first).
    """
    import jsonschema

    if not isinstance(data, dict):
        raise ReportError(f"{where}: not a hydravit-edge report (expected a JSON object, got {type(data).__name__})")
    if "schema_version" not in data:
        raise ReportError(f"{where}: not a hydravit-edge report (no 'schema_version' field)")
    version = data["schema_version"]
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise ReportError(
            f"{where}: report schema_version {version!r} is not supported; this hydravit-edge reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} (upgrade hydravit-edge or re-run the benchmark)"
        )
    validator = jsonschema.Draft202012Validator(report_schema())
    errors = list(validator.iter_errors(data))
    if errors:
        rows_anyof = [e for e in errors if e.validator == "anyOf" and isinstance(e.instance, dict) and "backend" in e.instance]
        best = rows_anyof[0] if rows_anyof else jsonschema.exceptions.best_match(errors)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ReportError(f"{where}: {_where(best)}: {_schema_message(best)}{more}")
    seen: dict[tuple, int] = {}
    for i, row in enumerate(data["rows"]):
        key = row_key(row)
        if key in seen:
            raise ReportError(f"{where}: rows[{i}] repeats rows[{seen[key]}] (same k, backend, mode, compute, precision: {key})")
        seen[key] = i
        lo, med, p90 = row.get("latency_min_ms"), row.get("latency_median_ms"), row.get("latency_p90_ms")
        tol = 1e-9
        if lo is not None and med is not None and lo > med + tol:
            raise ReportError(f"{where}: rows[{i}]: latency_min_ms {lo} exceeds latency_median_ms {med}")
        if med is not None and p90 is not None and med > p90 + tol:
            raise ReportError(f"{where}: rows[{i}]: latency_median_ms {med} exceeds latency_p90_ms {p90}")
        for name in ("latency_median_ms", "latency_p90_ms", "latency_min_ms", "throughput_per_s", "load_ms",
                     "switch_ms", "peak_rss_mb", "paper_ram_mb"):
            value = row.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ReportError(f"{where}: rows[{i}].{name} is not a finite number")
    return data


# =========================================================================== files

def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, expected a {what} JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read {what} ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def load_report(path: str | os.PathLike) -> dict:
    """Read and validate one report file."""
    path = Path(path)
    return validate_report(_read_json(path, "report"), where=str(path))


def save_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate ``report`` and write it atomically to ``path`` (pretty-printed JSON)."""
    validate_report(dict(report), where=str(path))
    return atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def device_slug(name: str) -> str:
    """File-name form of a device name: anything but ``A-Za-z0-9._-`` becomes '-'."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name).strip()).strip("-.")
    if not slug:
        raise UsageError(f"device name {name!r} has no usable characters; use letters, digits, '.', '_' or '-'")
    return slug


def report_path(reports_dir: str | os.PathLike, device_name: str) -> Path:
    """``reports_dir/<device slug>.json``: where the report of ``device_name`` lives."""
    return Path(reports_dir) / f"{device_slug(device_name)}.json"


def find_reports(reports_dir: str | os.PathLike) -> list[Path]:
    """Report files under ``reports_dir`` (``*.json``, sorted); empty when the folder does not exist."""
    d = Path(reports_dir)
    return sorted(p for p in d.glob("*.json") if p.is_file()) if d.is_dir() else []


def load_reports(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, dict]]:
    """Load and validate several reports; a directory stands for the reports inside it."""
    out = []
    for p in paths:
        p = Path(p)
        files = find_reports(p) if p.is_dir() else [p]
        out.extend((f, load_report(f)) for f in files)
    return out


def load_reference() -> dict:
    """The paper's published A100 figures (Table 4, HydraViT rows) as a report."""
    return load_report(REFERENCE_REPORT_PATH)


# =========================================================================== building reports

def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_report(device: Mapping[str, Any], *, source: str = "measured", manifest_sha256: Optional[str] = None,
               model: Optional[Mapping[str, Any]] = None, settings: Optional[Mapping[str, Any]] = None,
               tool: Optional[Mapping[str, Any]] = None, notes: Sequence[str] = (), created: Optional[str] = None,
               rows: Sequence[Mapping[str, Any]] = ()) -> dict:
    """A report dict with no rows (or ``rows``), ready for :func:`upsert_rows` / :class:`ReportWriter`."""
    if tool is None:
        try:
            version = importlib.metadata.version("hydravit-edge")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            version = "unknown"
        tool = {"name": "hydravit-edge", "version": version}
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "created": created or utc_now(),
        "tool": dict(tool),
        "manifest_sha256": manifest_sha256,
        "device": dict(device),
    }
    if model is not None:
        report["model"] = dict(model)
    if settings is not None:
        report["settings"] = dict(settings)
    if notes:
        report["notes"] = list(notes)
    report["rows"] = [dict(r) for r in rows]
    validate_report(report, where="new report")
    return report


def make_row(k: int, backend: str, artifact: str, **fields: Any) -> dict:
    """One report row; unknown field names are a :class:`UsageError` (catches typos early).

    ``make_row(3, "onnxruntime", "onnx/hydravit.onnx", mode="single", entry=None,
    **latency_stats(samples_ms), load_ms=12.0, ...)``.
    """
    unknown = sorted(set(fields) - set(ROW_FIELDS))
    if unknown:
        raise UsageError(f"unknown report row field(s) {unknown}; known: {', '.join(ROW_FIELDS)}")
    row = {"k": int(k), "backend": backend, "artifact": artifact}
    for name in ROW_FIELDS:
        if name in fields:
            row[name] = fields[name]
    return row


def group_key(row: Mapping[str, Any]) -> tuple:
    """Which runtime configuration a row belongs to: (backend, mode, compute, precision)."""
    return (row["backend"], row.get("mode"), row.get("compute"), row.get("precision"))


def row_key(row: Mapping[str, Any]) -> tuple:
    """Identity of a row inside a report: its configuration and k."""
    return group_key(row) + (row["k"],)


def upsert_rows(report: dict, rows: Iterable[Mapping[str, Any]]) -> dict:
    """Add ``rows`` to ``report`` in place, replacing rows with the same :func:`row_key`."""
    index = {row_key(r): i for i, r in enumerate(report["rows"])}
    for row in rows:
        row = dict(row)
        key = row_key(row)
        if key in index:
            report["rows"][index[key]] = row
        else:
            index[key] = len(report["rows"])
            report["rows"].append(row)
    return report


class ReportWriter:
    """Save a report after every row so an interrupted benchmark keeps what it finished.

    >>> w = ReportWriter(report_path("reports", dev["name"]), new_report(dev, manifest_sha256=h))
    >>> w.add(make_row(3, "onnxruntime", "onnx/hydravit.onnx", **latency_stats(ms)))  # written now
    """

    def __init__(self, path: str | os.PathLike, report: dict, *, resume: bool = False):
        self.path = Path(path)
        self.report = report
        if resume and self.path.exists():
            old = load_report(self.path)
            if old.get("manifest_sha256") == report.get("manifest_sha256"):
                upsert_rows(self.report, old["rows"])
        validate_report(self.report, where=str(self.path))

    def add(self, row: Mapping[str, Any]) -> None:
        upsert_rows(self.report, [row])
        self.save()

    def save(self) -> Path:
        return save_report(self.report, self.path)


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


# =========================================================================== device info

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


def manifest_sha256(path: str | os.PathLike) -> str:
    """sha256 of an export's ``manifest.json`` (``path`` is the file or the export directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ReportError(f"{p}: no export manifest here (run `hydravit-edge export` first)") from None


# =========================================================================== import

@dataclass
class ImportResult:
    path: Path
    device: str
    rows: int
    replaced: int
    kept: int
    dropped: int
    note: Optional[str] = None


def import_report(path: str | os.PathLike, reports_dir: str | os.PathLike = "reports", *,
                  merge: bool = True) -> ImportResult:
    """Validate the report at ``path`` and store it as ``reports_dir/<device>.json``.

    With ``merge`` (default) and an existing report for the same device and the same export
    manifest, the new rows replace rows of the same k and configuration and the other old rows
    are kept; rows measured from a different manifest are dropped (they describe other
    artifacts).  ``merge=False`` replaces the stored report.  The write is atomic.
    """
    src = Path(path)
    report = load_report(src)
    name = report["device"]["name"]
    dest = report_path(reports_dir, name)
    replaced = kept = dropped = 0
    note = None
    if merge and dest.exists() and dest.resolve() != src.resolve():
        try:
            old = load_report(dest)
        except ReportError as exc:
            raise ReportError(f"cannot merge into the stored report: {exc}. Move it away or import with --replace") from None
        if old["device"]["name"] != name:
            note = f"{dest} held device '{old['device']['name']}' (same file name); replaced"
            dropped = len(old["rows"])
        elif old.get("manifest_sha256") != report.get("manifest_sha256"):
            dropped = len(old["rows"])
            note = f"dropped {dropped} stored row(s) measured from a different export manifest"
        else:
            merged = copy.deepcopy(old)
            new_keys = {row_key(r) for r in report["rows"]}
            replaced = sum(1 for r in old["rows"] if row_key(r) in new_keys)
            kept = len(old["rows"]) - replaced
            upsert_rows(merged, report["rows"])
            for field in ("created", "tool", "device", "source", "settings", "model", "notes", "citation"):
                if field in report:
                    merged[field] = report[field]
            report = merged
    save_report(report, dest)
    return ImportResult(dest, name, len(report["rows"]), replaced, kept, dropped, note)


# =========================================================================== CLI

def register_report_commands(bench_app) -> None:
    """Add ``import`` to the ``bench`` typer sub-app (``hydravit-edge bench import FILE``)."""
    import typer

    from hydravit_edge.console import console

    @bench_app.command("import")
    def import_cmd(
        file: Path = typer.Argument(..., help="Report JSON written by a demo app or another machine."),
        reports_dir: Path = typer.Option(Path("reports"), "--reports-dir", help="Where device reports are stored."),
        replace: bool = typer.Option(False, "--replace", help="Replace the stored report of this device instead of merging rows."),
    ) -> None:
        """Validate a benchmark report and store it as reports/DEVICE.json."""
        result = import_report(file, reports_dir, merge=not replace)
        console.print(f"imported [bold]{result.device}[/bold] -> {result.path} ({result.rows} rows; "
                      f"{result.replaced} replaced, {result.kept} kept, {result.dropped} dropped)", soft_wrap=True)
        if result.note:
            console.print(f"note: {result.note}", soft_wrap=True)
