"""``hydravit-edge bench import``: store a report from another machine or app as ``reports/<device>.json``, merging rows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .report import ReportError, load_report, merge_reports, report_path, save_report

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

    With ``merge`` (default) and an existing report for the same device, the new rows replace
    the stored rows of the same export (manifest sha256), configuration and k; every other stored
    row is kept, those of other exports included (:func:`~hydravit_edge.bench.report.merge_reports`).
    ``merge=False`` replaces the stored report.  The write is atomic.
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
        else:
            report, counts = merge_reports(old, report)
            replaced, kept = counts.replaced, counts.kept
            if counts.kept_other:
                note = (f"kept {counts.kept_other} stored row(s) of {len(counts.other_exports)} other export(s) "
                        f"({', '.join(counts.other_exports)})")
    save_report(report, dest)
    return ImportResult(dest, name, len(report["rows"]), replaced, kept, dropped, note)
