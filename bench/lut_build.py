"""Building the lookup table (``lut.json``) from benchmark reports (``hydravit-edge lut build``).

Per device (and per runtime configuration measured on it) the p90 latency, memory and accuracy
rows of its report, one per (k, precision), plus the policy thresholds.  Report groups that
differ only in precision make ONE entry (its ``precision`` set only when every row shares it),
and each row is marked ``frontier`` (:mod:`hydravit_edge.bench.lut_frontier`).  A device's
report may hold rows of several exports: each LUT entry takes the rows of one, the newest
export measured with that runtime configuration (at any precision), or the one named
(``--export``); rows of two exports never mix.  The paper's published A100 reference is added
only when its model has the geometry of a measured one (and unless asked not to).  The table's
model and reader are :mod:`hydravit_edge.contract.lut`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Mapping, Optional, Sequence

from hydravit_edge.contract.lut import LUT_FORMAT, LUT_SCHEMA_VERSION, Lut, match_name
from hydravit_edge.contract.report import group_key
from hydravit_edge.errors import UsageError
from hydravit_edge.policy import PolicyConfig
from hydravit_edge.policy_options import precision_rank
from hydravit_edge.targets import preference

from .lut_frontier import mark_frontier
from .reference import reference_if_matching
from .report import REFERENCE_REPORT_PATH, ExportGroup, export_groups, load_reference, newest_export, utc_now

__all__ = ["build_lut", "device_rows", "device_entries", "lut_row", "match_export"]


def lut_row(r: Mapping[str, Any]) -> Optional[dict]:
    """The LUT row of one report row (None when it has no latency or throughput)."""
    if (r.get("latency_p90_ms") or 0) > 0:
        p90, basis = r["latency_p90_ms"], "p90"
    elif (r.get("latency_median_ms") or 0) > 0:
        p90, basis = r["latency_median_ms"], "median"
    elif (r.get("throughput_per_s") or 0) > 0:
        p90, basis = 1000.0 / r["throughput_per_s"], "throughput"
    else:
        return None
    acc = r.get("accuracy") or {}
    return {
        "k": r["k"], "precision": r.get("precision"), "p90_ms": round(float(p90), 6), "latency_basis": basis,
        "median_ms": r.get("latency_median_ms"), "min_ms": r.get("latency_min_ms"),
        "throughput_per_s": r.get("throughput_per_s"), "throughput_batch": r.get("throughput_batch"),
        "load_ms": r.get("load_ms"), "switch_ms": r.get("switch_ms"), "cold_switch_ms": r.get("cold_switch_ms"),
        "peak_rss_mb": r.get("peak_rss_mb"), "rss_anon_mb": r.get("rss_anon_mb"), "rss_file_mb": r.get("rss_file_mb"),
        "peak_switch_rss_mb": r.get("peak_switch_rss_mb"),
        "paper_ram_mb": r.get("paper_ram_mb"), "file_bytes": r.get("file_bytes"), "params": r.get("params"),
        "macs": r.get("macs"), "top1": acc.get("top1"), "artifact": r.get("artifact"), "entry": r.get("entry"),
    }


def match_export(group: ExportGroup, wanted: str) -> bool:
    """``wanted`` names this export: the start of its manifest sha256 (6+ hex digits), its directory or its name."""
    w = wanted.strip()
    if group.manifest_sha256 and re.fullmatch(r"[0-9a-fA-F]{6,64}", w) and group.manifest_sha256.startswith(w.lower()):
        return True
    if group.export_dir:
        if os.path.normpath(group.export_dir) == os.path.normpath(w):
            return True
        if os.path.basename(os.path.normpath(group.export_dir)) == os.path.basename(os.path.normpath(w)):
            return True
    return False


def device_entries(report: Mapping[str, Any], backends: Optional[Sequence[str]] = None,
                   export: Optional[str] = None) -> tuple[list[dict], list[str], list[Optional[dict]]]:
    """The LUT device entries of one report, a line per entry saying which export it took, and those exports' models.

    One entry per runtime configuration (backend, mode, compute, materialize; its precisions
    together), from one export: the one ``export`` names (:func:`match_export`), else the newest
    measured with that configuration.  Its rows: one per (k, precision), sorted by k then the
    precision order, marked ``frontier``.  Preferred first: the configuration covering the most
    k (then the most rows), then a single artifact over per-k files, then by runtime (the order
    of :data:`hydravit_edge.targets.RUNTIMES`).
    """
    dev = report["device"]
    groups = export_groups(report)
    if export is not None and report["source"] != "published":
        named = [g for g in groups if match_export(g, export)]
        if not named:
            have = ", ".join(f"{g.label} ({g.manifest_sha256[:12] if g.manifest_sha256 else 'no manifest'})"
                             for g in groups) or "none"
            raise UsageError(f"--export {export}: device '{dev['name']}' has no rows of that export (it has: {have}); "
                             f"benchmark it there, or leave that report out")
        groups = named
    by_config: dict[tuple, list[tuple[ExportGroup, list[dict]]]] = {}
    for g in groups:
        per: dict[tuple, list[dict]] = {}
        for r in g.rows:
            if backends and r["backend"] not in backends:
                continue
            backend, mode, compute, _precision, materialize = group_key(r)
            per.setdefault((backend, mode, compute, materialize), []).append(r)
        for key, rows in per.items():
            by_config.setdefault(key, []).append((g, rows))
    made = []  # (entry, note, model of its export)
    for (backend, mode, compute, materialize), candidates in by_config.items():
        chosen = newest_export([g for g, _ in candidates])
        rows = next(rows for g, rows in candidates if g is chosen)
        lut_rows = sorted((x for x in map(lut_row, rows) if x is not None),
                          key=lambda x: (x["k"], precision_rank(x["precision"] or "fp32")))
        explicit = {x["k"] for x in lut_rows if x["precision"] == "fp32"}
        lut_rows = [x for x in lut_rows if x["precision"] is not None or x["k"] not in explicit]  # None means fp32
        if not lut_rows:
            continue
        mark_frontier(lut_rows)
        shared = {x["precision"] for x in lut_rows}
        precision = shared.pop() if len(shared) == 1 else None
        artifacts = {x["artifact"] for x in lut_rows}
        entry = {
            "name": dev["name"], "description": dev.get("description") or dev.get("cpu") or dev.get("model"),
            "source": report["source"], "backend": backend, "mode": mode, "compute": compute, "precision": precision,
            **({"materialize": materialize} if materialize else {}),
            "artifact": artifacts.pop() if len(artifacts) == 1 else None,
            "manifest_sha256": chosen.manifest_sha256, "rows": lut_rows,
        }
        line = None
        if report["source"] == "measured":
            precisions = "+".join(sorted({x["precision"] for x in lut_rows if x["precision"]}, key=precision_rank))
            config = "/".join(str(x) for x in (backend, mode, materialize, compute, precisions) if x)
            sha = f" ({chosen.manifest_sha256[:12]})" if chosen.manifest_sha256 else ""
            why = ("named by --export" if export is not None
                   else "the only one measured" if len(candidates) == 1
                   else f"the newest of {len(candidates)} measured")
            line = f"{dev['name']} {config}: export {chosen.export_dir or chosen.label}{sha}, {why}"
        made.append((entry, line, chosen.model))

    def order(item):
        e = item[0]
        # a single artifact first, lazily materialised (what the runtime runs by default) before eager
        return (-len({r["k"] for r in e["rows"]}), -len(e["rows"]), e["mode"] != "single", e.get("materialize") == "eager", preference(e["backend"]),
                str(e["compute"]), str(e["precision"]))

    made.sort(key=order)
    return [e for e, _, _ in made], [n for _, n, _ in made if n], [m for _, _, m in made]


def device_rows(report: Mapping[str, Any], backends: Optional[Sequence[str]] = None,
                export: Optional[str] = None) -> list[dict]:
    """The LUT device entries of one report (:func:`device_entries` without the notes)."""
    return device_entries(report, backends, export)[0]


def build_lut(reports: Sequence[tuple[Optional[str], Mapping[str, Any]]], *,
              policy: Optional[Mapping[str, Any]] = None, include_reference: bool = True,
              backends: Optional[Sequence[str]] = None, created: Optional[str] = None,
              export: Optional[str] = None, on_note: Optional[Callable[[str], None]] = None,
              memory_budget_mb: Optional[float] = None) -> dict:
    """A LUT dict from ``(path, report)`` pairs (validated reports).

    ``memory_budget_mb`` goes to every measured device entry: the most resident memory the
    runtime's materialised k may take together there.

    ``policy`` overrides fields of :data:`~hydravit_edge.policy.DEFAULT_POLICY`.  Each device entry
    takes the rows of one export: ``export`` (a manifest sha256 prefix, an export directory or its
    name) or the newest.  The shipped published A100 reference is appended when
    ``include_reference``, no report of that device was given, and its model has the geometry of
    a measured export the table uses.  ``on_note`` receives a line per entry saying which export it
    took, and one when the reference is left out.  Two reports of the same device are an error.
    """
    note = on_note or (lambda text: None)
    items = list(reports)
    names: dict[str, str] = {}
    for path, rep in items:
        name = rep["device"]["name"]
        other = match_name(name, names)
        if other is not None:
            raise UsageError(f"two reports for device '{name}': {names[other]} and {path}; keep one per device")
        names[name] = str(path)
    pol = PolicyConfig.from_dict(policy).to_dict()
    devices, sources, measured_models = [], [], []

    def add(path, rep, entries):
        text = json.dumps(rep, sort_keys=True).encode()
        sources.append({"path": str(path) if path else None, "device": rep["device"]["name"], "source": rep["source"],
                        "sha256": hashlib.sha256(text).hexdigest(), "created": rep.get("created")})
        devices.extend(entries)

    for path, rep in items:
        entries, lines, models = device_entries(rep, backends, export)
        for line in lines:
            note(line)
        if rep["source"] == "measured":
            measured_models.extend(models)
            if memory_budget_mb is not None:
                if memory_budget_mb <= 0:
                    raise UsageError(f"--memory-budget-mb must be > 0, got {memory_budget_mb:g}")
                for e in entries:
                    e["memory_budget_mb"] = float(memory_budget_mb)
        add(path, rep, entries)
    if include_reference and match_name(load_reference()["device"]["name"], names) is None:
        ref, why = reference_if_matching(measured_models)
        if ref is not None:
            add(str(REFERENCE_REPORT_PATH), ref, device_entries(ref, backends)[0])
        else:
            note(why)
    if not devices:
        what = f" for backend(s) {', '.join(backends)}" if backends else ""
        raise UsageError(f"the reports have no rows with a latency or throughput{what}; nothing to put in a LUT")
    try:
        tool_version = version("hydravit-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        tool_version = "unknown"
    data = {
        "format": LUT_FORMAT, "schema_version": LUT_SCHEMA_VERSION, "created": created or utc_now(),
        "tool": {"name": "hydravit-edge", "version": tool_version},
        "sources": sources, "policy": pol, "devices": devices,
    }
    Lut.check(data, where="built LUT")
    return data
