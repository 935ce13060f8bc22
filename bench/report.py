"""Benchmark reports: the JSON every measurement ends up in, one file per device.

A report (model: :class:`hydravit_edge.contract.report.Report`; schema, generated from it:
``bench/schemas/report.schema.json``, ``schema_version`` 1) describes one
device (name, CPU/GPU, cores, OS, runtime versions), the export manifest the artifacts came
from (its sha256), and one row per k and runtime configuration: latency median/p90/min,
throughput at a batch size, load and k-switch cost, measured peak RSS, file size, params,
MACs, the paper's RAM figure and, when known, accuracy.  ``source`` says whether the figures
were ``measured`` (``hydravit-edge bench``, the demo apps) or ``published`` (the paper's A100
reference shipped in ``bench/data/reference_a100_paper.json``).

Reports live under ``reports/<device>.json``.  Every write is atomic (temporary file in the
same directory, then a rename), so an interrupted benchmark keeps the rows it had saved:
use :class:`ReportWriter` to save after each row.

Statistics live in :mod:`.stats`, the device probe in :mod:`.device`, ``bench import`` in
:mod:`.report_import`.  This module imports neither torch nor any runtime.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from hydravit_edge.contract.report import (ROW_FIELDS, SCHEMA_VERSION, SUPPORTED_VERSIONS, Report, ReportError,
                                           group_key, row_key)
from hydravit_edge.errors import UsageError
from hydravit_edge.fileio import atomic_write_text
from hydravit_edge.targets import ROW_MODES, runtime_names

__all__ = [
    "SCHEMA_VERSION", "SUPPORTED_VERSIONS", "BACKENDS", "MODES", "ROW_FIELDS", "REPORT_SCHEMA_PATH",
    "REFERENCE_REPORT_PATH", "ReportError", "ReportWriter", "Report", "validate_report", "load_report", "save_report",
    "new_report", "make_row", "row_key", "group_key", "upsert_rows", "device_slug", "report_path", "find_reports",
    "load_reports", "manifest_sha256", "load_reference", "utc_now", "atomic_write_text",
]

#: Runtimes a row may name (``row["backend"]``).
BACKENDS = runtime_names()
#: ``row["mode"]``: one artifact for every k, one per k, or eager PyTorch.
MODES = ROW_MODES

_HERE = Path(__file__).resolve().parent
#: Generated from :class:`Report` (``python -m hydravit_edge.contract.schemas --write``).
REPORT_SCHEMA_PATH = _HERE / "schemas" / "report.schema.json"
REFERENCE_REPORT_PATH = _HERE / "data" / "reference_a100_paper.json"


# =========================================================================== files

def validate_report(data: Any, where: str = "report") -> dict:
    """Check ``data`` against the report model (:class:`Report`); returns ``data`` unchanged.

    Raises :class:`ReportError` naming ``where``, the JSON path and what is wrong (the first
    problem found, schema_version first).
    """
    return Report.check(data, where).data


def load_report(path: str | os.PathLike) -> dict:
    """Read and validate one report file (:meth:`Report.load`); the JSON as written."""
    return Report.load(path).data


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


def manifest_sha256(path: str | os.PathLike) -> str:
    """sha256 of an export's ``manifest.json`` (``path`` is the file or the export directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ReportError(f"{p}: no export manifest here (run `hydravit-edge export` first)") from None
