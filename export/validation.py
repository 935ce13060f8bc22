"""Checking artifacts against PyTorch: :func:`compare` (max abs error, top-1), running records in
their runtime in a process of its own (:func:`run_in_runner`), and re-validating an export
directory from its manifest and ``reference.npz`` (:func:`validate_dir`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from hydravit_edge.contract.manifest import Manifest, TargetEntry
from hydravit_edge.engines.runner import run_isolated
from hydravit_edge.errors import UsageError

from .errors import ValidationError
from .hashing import path_sha256, path_size
from .progress import ProgressBars
from .quantize import QuantSpec, load_heldout
from .records import ArtifactRecord, Reference, Status, ValidationResult
from .registry import get_exporter

__all__ = ["compare", "run_in_runner", "overall_status", "ValidationReport", "validate_dir", "report_sizes",
           "report_files"]


def compare(target: str, k: int, got: np.ndarray, ref: np.ndarray, tolerance: float, *,
            check: str = "runtime", runtime: Optional[str] = None) -> ValidationResult:
    """Compare logits ``got`` with PyTorch's ``ref``: max abs error and top-1 agreement.

    Passes when the max abs error is within ``tolerance``.  The top-1 agreement over the batch
    is reported; a changed top-1 class is named in the reason for samples whose reference top-2
    margin exceeds ``2 * tolerance`` (a near-tie may legitimately flip within tolerance, and
    with a margin above that a flip implies an error above tolerance).
    """
    got = np.asarray(got, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if got.shape != ref.shape:
        return ValidationResult(target, k, Status.FAILED, check=check, tolerance=tolerance, batch=int(ref.shape[0]),
                                runtime=runtime, reason=f"output shape {tuple(got.shape)} != expected {tuple(ref.shape)}")
    if not np.all(np.isfinite(got)):
        return ValidationResult(target, k, Status.FAILED, check=check, tolerance=tolerance, batch=int(ref.shape[0]),
                                runtime=runtime, reason="non-finite outputs")
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    top_got, top_ref = got.argmax(-1), ref.argmax(-1)
    agree = float(np.mean(top_got == top_ref)) if ref.shape[0] else 1.0
    if ref.shape[-1] > 1:
        part = np.sort(ref, axis=-1)
        decisive = (part[:, -1] - part[:, -2]) > 2 * tolerance
    else:
        decisive = np.ones(ref.shape[0], dtype=bool)
    flipped = int(np.sum((top_got != top_ref) & decisive))
    reasons = []
    if err > tolerance:
        reasons.append(f"max abs error {err:.3g} > tolerance {tolerance:g}")
    if flipped:
        reasons.append(f"top-1 differs on {flipped} of {ref.shape[0]} inputs")
    return ValidationResult(
        target, k, Status.FAILED if reasons else Status.PASSED, check=check, max_abs_err=err,
        top1_agreement=agree, tolerance=tolerance, batch=int(ref.shape[0]), runtime=runtime,
        reason="; ".join(reasons) or None,
    )


def run_in_runner(target: str, target_dir: Path, records: Iterable[ArtifactRecord], inputs: np.ndarray,
                  timeout: float = 1800.0) -> dict[int, np.ndarray | str]:
    """Run each record in ``target``'s engine (:mod:`hydravit_edge.engines`) in a fresh process.

    Returns ``{k: logits}``, or ``{k: "error text"}`` for a record that could not be run.
    """
    return run_isolated(target, Path(target_dir), [r.to_dict() for r in records], inputs, timeout=timeout)


def overall_status(results: Sequence[ValidationResult]) -> str:
    """The manifest's ``validation.status``: failed, skipped (no runtime check ran) or passed."""
    if any(not r.ok for r in results):
        return "failed"
    if results and all(r.status is Status.SKIPPED for r in results if r.check == "runtime"):
        return "skipped"
    return "passed"


# =========================================================================== reports

@dataclass
class ValidationReport:
    """Validation results of an export directory (or of a fresh export)."""

    directory: Path
    results: list[ValidationResult]
    sizes: dict[tuple[str, int], int] = field(default_factory=dict)
    files: dict[tuple[str, int], str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[ValidationResult]:
        return [r for r in self.results if not r.ok]

    def raise_for_failures(self) -> None:
        bad = self.failures
        if bad:
            parts = [f"{r.target} k={r.k} {r.check}: {r.summary()}" for r in bad[:6]]
            more = f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""
            raise ValidationError(f"validation failed for {len(bad)} check(s): " + "; ".join(parts) + more)


def report_sizes(manifest: dict) -> dict[tuple[str, int], int]:
    """``(target, k) -> bytes`` of the file holding k, from a manifest."""
    out = {}
    for name, t in manifest["targets"].items():
        by_path = {f["path"]: f["bytes"] for f in t["files"]}
        for a in t["artifacts"]:
            out[(name, a["k"])] = by_path.get(a["file"], 0)
    return out


def report_files(manifest: dict) -> dict[tuple[str, int], str]:
    """``(target, k) -> file`` (relative to the manifest), from a manifest."""
    return {(name, a["k"]): a["file"] for name, t in manifest["targets"].items() for a in t["artifacts"]}


# =========================================================================== validate DIR

def validate_dir(directory: str | os.PathLike, targets: Sequence[str] | None = None,
                 show_progress: bool = False) -> ValidationReport:
    """Re-validate an export directory: file integrity (sizes, sha256) and every artifact in its runtime.

    Uses the manifest and ``reference.npz`` only (no checkpoint, no PyTorch run).  Returns a
    :class:`ValidationReport`; call ``raise_for_failures()`` to turn failures into an error.
    """
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"{d}: no such export directory")
    manifest = Manifest.load(d)
    reference = Reference.load(d / manifest.reference.file)
    names = list(manifest.targets) if not targets else list(targets)
    results: list[ValidationResult] = []
    heldout = _UNSET
    with ProgressBars(show_progress) as progress:
        for name in names:
            t = manifest.targets.get(name)
            if t is None:
                raise UsageError(f"{d}: the export has no target '{name}' (it has {', '.join(manifest.targets)})")
            records = [ArtifactRecord.from_dict(a.model_dump(mode="json")) for a in t.artifacts]
            bad_files = _integrity(d, t)
            try:
                ex = get_exporter(manifest.base_target(name))
            except UsageError as exc:
                results.extend(ValidationResult.error(name, r.k, str(exc)) for r in records)
                continue
            for r in records:
                problem = bad_files.get(r.file)
                results.append(ValidationResult(name, r.k, Status.FAILED if problem else Status.PASSED, check="integrity",
                                                reason=problem, details={"file": r.file}))
            step = progress.task(f"validate {name}", len(records))
            quant = QuantSpec(manifest.precision(name))
            if quant.quantized and heldout is _UNSET:
                heldout = load_heldout(manifest, d / manifest.reference.file)
            checked = ex.validate(d, records, reference, progress=step, quant=quant,
                                  heldout=heldout if quant.quantized else None)
            for r in checked:
                r.target = name
            results.extend(checked)
    return ValidationReport(d, results, report_sizes(manifest.data), report_files(manifest.data))


_UNSET = object()


def _integrity(d: Path, target: TargetEntry) -> dict[str, str]:
    """file -> problem, for files whose size or sha256 differ from the manifest."""
    problems = {}
    for f in target.files:
        p = d / f.path
        if not p.exists():
            problems[f.path] = "file missing"
        elif path_size(p) != f.bytes:
            problems[f.path] = f"size {path_size(p)} != manifest {f.bytes}"
        elif path_sha256(p) != f.sha256:
            problems[f.path] = "sha256 differs from the manifest"
    return problems
