"""``hydravit-edge bench import``: store a report from another machine or app as ``reports/<device>.json``, merging rows."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .report import ReportError, load_report, report_path, row_key, save_report, upsert_rows

__all__ = ["ImportResult", "import_report"]


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
