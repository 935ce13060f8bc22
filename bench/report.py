"""Benchmark reports: the JSON every measurement ends up in, one file per device.

A report (model: :class:`hydravit_edge.contract.report.Report`; schema, generated from it:
``bench/schemas/report.schema.json``, ``schema_version`` 1) describes one
device (name, CPU/GPU, cores, OS, runtime versions), the exports benchmarked on it, and one
row per export (the sha256 of its manifest), runtime configuration and k: latency median/p90/min,
throughput at a batch size, load and k-switch cost, measured peak RSS, file size, params,
MACs, the paper's RAM figure and, when known, accuracy.  ``source`` says whether the figures
were ``measured`` (``hydravit-edge bench``, the demo apps) or ``published`` (the paper's A100
reference shipped in ``bench/data/reference_a100_paper.json``).

Reports live under ``reports/<device>.json``.  Every write is atomic (temporary file in the
same directory, then a rename), so an interrupted benchmark keeps the rows it had saved:
use :class:`ReportWriter` to save after each row.  A second export benchmarked under the same
device name adds its rows; only rows of the same export and runtime configuration are replaced
(:func:`merge_reports`).  :func:`export_groups` splits a report by export for tables, plots and
the LUT.  Which models the published reference may stand next to: :mod:`.reference`.

Statistics live in :mod:`.stats`, the device probe in :mod:`.device`, ``bench import`` in
:mod:`.report_import`.  This module imports neither torch nor any runtime.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from hydravit_edge.clock import parse_time, utc_now
from hydravit_edge.contract.report import (ROW_FIELDS, SCHEMA_VERSION, SUPPORTED_VERSIONS, Report, ReportError,
                                           group_key, row_key, row_manifest)
from hydravit_edge.errors import UsageError
from hydravit_edge.fileio import atomic_write_text
from hydravit_edge.targets import ROW_MODES, runtime_names

__all__ = [
    "SCHEMA_VERSION", "SUPPORTED_VERSIONS", "BACKENDS", "MODES", "ROW_FIELDS", "REPORT_SCHEMA_PATH",
    "REFERENCE_REPORT_PATH", "ReportError", "ReportWriter", "Report", "validate_report", "load_report", "save_report",
    "new_report", "make_row", "row_key", "group_key", "row_manifest", "upsert_rows", "device_slug", "report_path",
    "find_reports", "load_reports", "manifest_sha256", "load_reference", "utc_now", "atomic_write_text",
    "stamp_rows", "merge_reports", "MergeCounts", "ExportGroup", "export_groups", "newest_export", "export_label",
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

def new_report(device: Mapping[str, Any], *, source: str = "measured", manifest_sha256: Optional[str] = None,
               model: Optional[Mapping[str, Any]] = None, settings: Optional[Mapping[str, Any]] = None,
               tool: Optional[Mapping[str, Any]] = None, notes: Sequence[str] = (), created: Optional[str] = None,
               rows: Sequence[Mapping[str, Any]] = (), export_dir: Optional[str] = None) -> dict:
    """A report dict with no rows (or ``rows``), ready for :func:`upsert_rows` / :class:`ReportWriter`.

    A measured report lists its export (``manifest_sha256``, ``export_dir``, ``model``, measured now)
    in ``exports``; rows that do not name their own manifest belong to it.
    """
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
    if source == "measured":
        report["exports"] = [{"manifest_sha256": manifest_sha256, "export_dir": export_dir,
                              "model": dict(model) if model is not None else None, "measured": report["created"]}]
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
    """Add ``rows`` to ``report`` in place, replacing rows with the same :func:`row_key` (export, configuration, k).

    Rows that do not name their manifest belong to the report's ``manifest_sha256``.
    """
    top = report.get("manifest_sha256")
    index = {row_key(r, top): i for i, r in enumerate(report["rows"])}
    for row in rows:
        row = dict(row)
        key = row_key(row, top)
        if key in index:
            report["rows"][index[key]] = row
        else:
            index[key] = len(report["rows"])
            report["rows"].append(row)
    return report


class ReportWriter:
    """Save a report after every row so an interrupted benchmark keeps what it finished.

    >>> w = ReportWriter(report_path("reports", dev["name"]), new_report(dev, manifest_sha256=h), resume=True)
    >>> w.add(make_row(3, "onnxruntime", "onnx/hydravit.onnx", **latency_stats(ms)))  # written now

    ``resume``: start from the report already at ``path`` (:func:`merge_reports`): its rows of other
    exports are kept, and so are its rows of this export until a new row replaces them.  Each row
    added names the report's export (``manifest_sha256``, ``export_dir``).
    """

    def __init__(self, path: str | os.PathLike, report: dict, *, resume: bool = False):
        self.path = Path(path)
        self.report = report
        self.merged: Optional[MergeCounts] = None
        if resume and self.path.exists():
            self.report, self.merged = merge_reports(load_report(self.path), report)
        validate_report(self.report, where=str(self.path))

    def add(self, row: Mapping[str, Any]) -> dict:
        """Add (or replace) ``row`` and save; returns the row as stored."""
        row = dict(row)
        if row.get("manifest_sha256") is None:
            sha = self.report.get("manifest_sha256")
            entry = next((e for e in self.report.get("exports") or [] if e.get("manifest_sha256") == sha), {})
            row = _ordered({**row, "manifest_sha256": sha,
                            "export_dir": row.get("export_dir") or entry.get("export_dir")})
        upsert_rows(self.report, [row])
        self.save()
        return row

    def save(self) -> Path:
        return save_report(self.report, self.path)


# =========================================================================== several exports per report

def _ordered(row: Mapping[str, Any]) -> dict:
    """``row`` with its fields in schema order, None export fields left out."""
    out = {name: row[name] for name in ROW_FIELDS if name in row}
    for name in ("export_dir",):
        if out.get(name) is None:
            out.pop(name, None)
    return out


def _top_export(report: Mapping[str, Any]) -> dict:
    """The export entry of the rows that do not name their own (older reports, the apps' reports)."""
    return {"manifest_sha256": report.get("manifest_sha256"),
            "export_dir": (report.get("settings") or {}).get("export_dir"),
            "model": report.get("model"), "measured": report.get("created")}


def stamp_rows(report: Mapping[str, Any]) -> dict:
    """A copy of ``report`` in which every row names its export and ``exports`` lists each export once.

    Rows without ``manifest_sha256`` take the report's (a report written before rows carried it, or
    by a demo app); exports without an entry get one (from the top-level ``model``, ``created`` and
    ``settings.export_dir`` for the report's own export).  Entries no row refers to are dropped.
    """
    out = copy.deepcopy(dict(report))
    top = report.get("manifest_sha256")
    entries: dict[Optional[str], dict] = {e.get("manifest_sha256"): dict(e) for e in report.get("exports") or []}
    rows = []
    for row in out["rows"]:
        sha = row_manifest(row, top)
        if sha not in entries:
            entries[sha] = _top_export(report) if sha == top else {"manifest_sha256": sha,
                                                                   "export_dir": row.get("export_dir")}
        rows.append(_ordered({**row, "manifest_sha256": sha,
                              "export_dir": row.get("export_dir") or entries[sha].get("export_dir")}))
    out["rows"] = rows
    used = {r["manifest_sha256"] for r in rows}
    if report.get("source") != "published" or report.get("exports"):
        out["exports"] = [e for sha, e in entries.items() if sha in used or (not rows and sha == top)]
    return out


@dataclass
class MergeCounts:
    """What :func:`merge_reports` did with the old rows."""

    replaced: int = 0
    """old rows with the key (export, configuration, k) of a new row"""
    kept_same: int = 0
    """old rows of the new report's exports that no new row replaced"""
    kept_other: int = 0
    """old rows of other exports (kept)"""
    other_exports: list[str] = field(default_factory=list)
    """labels of those other exports"""

    @property
    def kept(self) -> int:
        return self.kept_same + self.kept_other


def merge_reports(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict, MergeCounts]:
    """``new`` (its sections and rows) plus the rows of ``old`` that no new row replaces.

    Rows are keyed by (export manifest, runtime configuration, k): benchmarking a second export
    under the same device name keeps the first export's rows; re-benchmarking an export replaces
    only its own rows of the same configuration.  ``exports`` is the union (new entries win, field by field).
    """
    o, n = stamp_rows(old), stamp_rows(new)
    new_keys = {row_key(r) for r in n["rows"]}
    new_shas = {e["manifest_sha256"] for e in n.get("exports") or []} | {r["manifest_sha256"] for r in n["rows"]}
    counts = MergeCounts()
    for r in o["rows"]:
        if row_key(r) in new_keys:
            counts.replaced += 1
        elif r["manifest_sha256"] in new_shas:
            counts.kept_same += 1
        else:
            counts.kept_other += 1
    labels = {g.manifest_sha256: g.label for g in export_groups(o)}
    counts.other_exports = [labels[s] for s in dict.fromkeys(r["manifest_sha256"] for r in o["rows"])
                            if s not in new_shas]
    merged = copy.deepcopy(n)
    merged["rows"] = copy.deepcopy(o["rows"])
    upsert_rows(merged, n["rows"])
    entries = {e["manifest_sha256"]: e for e in o.get("exports") or []}
    for e in n.get("exports") or []:  # one manifest, one export: what the new entry does not say, the old one does
        entries[e["manifest_sha256"]] = {**entries.get(e["manifest_sha256"], {}),
                                         **{k: v for k, v in e.items() if v is not None}}
    used = {r["manifest_sha256"] for r in merged["rows"]} | new_shas
    merged["exports"] = [e for sha, e in entries.items() if sha in used]
    return merged, counts


@dataclass
class ExportGroup:
    """The rows of one export in a report."""

    manifest_sha256: Optional[str]
    export_dir: Optional[str]
    model: Optional[dict]
    measured: Optional[str]
    rows: list[dict]
    label: str = ""
    """short name for tables and plots: the export directory's name, with the hash's start where names repeat"""


def export_label(sha: Optional[str], export_dir: Optional[str], ambiguous: bool = False) -> str:
    """``digits-single``, ``digits-single@1a2b3c4d`` (``ambiguous``: another export has the name), ``1a2b3c4d``."""
    name = Path(export_dir).name if export_dir else None
    if name and not (ambiguous and sha):
        return name
    if name:
        return f"{name}@{sha[:8]}"
    return sha[:8] if sha else "no export"


def export_groups(report: Mapping[str, Any]) -> list[ExportGroup]:
    """The report's rows split by the export they were measured from, in the order of ``exports``."""
    stamped = stamp_rows(report)
    groups = {e["manifest_sha256"]: ExportGroup(e["manifest_sha256"], e.get("export_dir"), e.get("model"),
                                                e.get("measured"), [])
              for e in stamped.get("exports") or []}
    for r in stamped["rows"]:
        sha = r["manifest_sha256"]
        if sha not in groups:  # a published report: no exports section
            groups[sha] = ExportGroup(sha, r.get("export_dir"), report.get("model"), report.get("created"), [])
        groups[sha].rows.append(r)
    out = [g for g in groups.values() if g.rows]
    names = [Path(g.export_dir).name if g.export_dir else None for g in out]
    for g, name in zip(out, names):
        g.label = export_label(g.manifest_sha256, g.export_dir, ambiguous=name is not None and names.count(name) > 1)
    return out


def newest_export(groups: Sequence[ExportGroup]) -> ExportGroup:
    """The export measured last (by ``measured``; among equal or unknown times, the later entry)."""
    def when(item):
        i, g = item
        t = parse_time(g.measured)
        return (t is not None, t.timestamp() if t is not None else 0.0, i)

    return max(enumerate(groups), key=when)[1]


def manifest_sha256(path: str | os.PathLike) -> str:
    """sha256 of an export's ``manifest.json`` (``path`` is the file or the export directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ReportError(f"{p}: no export manifest here (run `hydravit-edge export` first)") from None
