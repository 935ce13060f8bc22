"""Building the lookup table (``lut.json``) from benchmark reports (``hydravit-edge lut build``).

Per device (and per runtime configuration measured on it) the per-k p90 latency and memory
rows of its report, plus the policy thresholds; the paper's published A100 reference is added
unless asked not to.  The table's model and reader are :mod:`hydravit_edge.contract.lut`.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Mapping, Optional, Sequence

from hydravit_edge.contract.lut import LUT_FORMAT, LUT_SCHEMA_VERSION, Lut, match_name
from hydravit_edge.contract.report import group_key
from hydravit_edge.errors import UsageError
from hydravit_edge.policy import PolicyConfig
from hydravit_edge.targets import preference

from .report import REFERENCE_REPORT_PATH, load_reference, utc_now

__all__ = ["build_lut", "device_rows", "lut_row"]


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
        "k": r["k"], "p90_ms": round(float(p90), 6), "latency_basis": basis,
        "median_ms": r.get("latency_median_ms"), "min_ms": r.get("latency_min_ms"),
        "throughput_per_s": r.get("throughput_per_s"), "throughput_batch": r.get("throughput_batch"),
        "load_ms": r.get("load_ms"), "switch_ms": r.get("switch_ms"), "peak_rss_mb": r.get("peak_rss_mb"),
        "paper_ram_mb": r.get("paper_ram_mb"), "file_bytes": r.get("file_bytes"), "params": r.get("params"),
        "macs": r.get("macs"), "top1": acc.get("top1"), "artifact": r.get("artifact"), "entry": r.get("entry"),
    }


def device_rows(report: Mapping[str, Any], backends: Optional[Sequence[str]] = None) -> list[dict]:
    """The LUT device entries of one report: one per runtime configuration, the preferred first.

    Preferred: the configuration covering the most k, then a single artifact over per-k files,
    then by runtime (the order of :data:`hydravit_edge.targets.RUNTIMES`).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in report["rows"]:
        if backends and r["backend"] not in backends:
            continue
        groups.setdefault(group_key(r), []).append(r)
    entries = []
    dev = report["device"]
    for (backend, mode, compute, precision), rows in groups.items():
        lut_rows = sorted((x for x in map(lut_row, rows) if x is not None), key=lambda x: x["k"])
        if not lut_rows:
            continue
        artifacts = {x["artifact"] for x in lut_rows}
        entries.append({
            "name": dev["name"], "description": dev.get("description") or dev.get("cpu") or dev.get("model"),
            "source": report["source"], "backend": backend, "mode": mode, "compute": compute, "precision": precision,
            "artifact": artifacts.pop() if len(artifacts) == 1 else None,
            "manifest_sha256": report.get("manifest_sha256"), "rows": lut_rows,
        })

    def order(e):
        return (-len(e["rows"]), e["mode"] != "single", preference(e["backend"]), str(e["compute"]),
                str(e["precision"]))

    return sorted(entries, key=order)


def build_lut(reports: Sequence[tuple[Optional[str], Mapping[str, Any]]], *,
              policy: Optional[Mapping[str, Any]] = None, include_reference: bool = True,
              backends: Optional[Sequence[str]] = None, created: Optional[str] = None) -> dict:
    """A LUT dict from ``(path, report)`` pairs (validated reports).

    ``policy`` overrides fields of :data:`~hydravit_edge.policy.DEFAULT_POLICY`.  The shipped
    published A100 reference is appended when ``include_reference`` and no report of that device
    was given.  Two reports of the same device are an error.
    """
    items = list(reports)
    names: dict[str, str] = {}
    for path, rep in items:
        name = rep["device"]["name"]
        other = match_name(name, names)
        if other is not None:
            raise UsageError(f"two reports for device '{name}': {names[other]} and {path}; keep one per device")
        names[name] = str(path)
    if include_reference:
        ref = load_reference()
        if match_name(ref["device"]["name"], names) is None:
            items.append((str(REFERENCE_REPORT_PATH), ref))
    pol = PolicyConfig.from_dict(policy).to_dict()
    devices, sources = [], []
    for path, rep in items:
        entries = device_rows(rep, backends)
        text = json.dumps(rep, sort_keys=True).encode()
        sources.append({"path": str(path) if path else None, "device": rep["device"]["name"], "source": rep["source"],
                        "sha256": hashlib.sha256(text).hexdigest(), "created": rep.get("created")})
        devices.extend(entries)
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
