"""Python API: :func:`export_model` (and :func:`~.validation.validate_dir`).

``export_model`` turns a HydraViT (or a checkpoint) into deployable artifacts for one or more
registered targets, validates every artifact and every k against PyTorch in the target's own
runtime (a subprocess), and writes ``manifest.json`` + ``reference.npz``, atomically
(:mod:`.staging`: nothing half-written on failure, a failed validation kept as ``<out>.failed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from hydravit_edge.clock import utc_now as _now
from hydravit_edge.contract.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest
from hydravit_edge.errors import MissingDependencyError, UsageError
from hydravit_edge.precision import get_precision, parse_precisions, variant_key
from hydravit_edge.targets import MODES

from .base import Exporter
from .errors import ExportError, ValidationError
from .hashing import file_sha256
from .manifest_build import new_manifest, target_entry
from .parallel import ExportPool, auto_jobs
from .progress import ProgressBars
from .quantize import DEFAULT_CALIBRATION_SIZE, QuantSpec, HeldOutRef, calibration_images, heldout_reference
from .records import ArtifactRecord, Reference, ValidationResult
from .registry import exporter_names, get_exporter
from .staging import OutputExistsError, install, keep_failed, staging
from .validation import ValidationReport, overall_status, report_files, report_sizes, validate_dir

__all__ = ["export_model", "validate_dir", "ExportReport", "ValidationReport", "find_checkpoint", "resolve_targets",
           "OutputExistsError", "MANIFEST_FILE", "MANIFEST_VERSION", "MANIFEST_FORMAT"]

CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors")


@dataclass
class ExportReport(ValidationReport):
    """What :func:`export_model` produced."""

    manifest: dict[str, Any] = field(default_factory=dict)
    skipped_targets: dict[str, str] = field(default_factory=dict)
    checkpoint: Optional[Path] = None

    @property
    def out_dir(self) -> Path:
        return self.directory


# =========================================================================== inputs

def find_checkpoint(runs_dir: str | os.PathLike = "runs") -> Path:
    """The checkpoint of the newest run under ``runs_dir``: ``best.safetensors``, else ``last.safetensors``.

    "Newest" is the run whose newest checkpoint file was written last.  No run: a
    :class:`UsageError` telling the user to train or pass a checkpoint.
    """
    runs = Path(runs_dir)
    candidates = []
    if runs.is_dir():
        for run in runs.iterdir():
            files = [run / n for n in CHECKPOINT_NAMES if (run / n).is_file()]
            if run.is_dir() and files:
                candidates.append((max(f.stat().st_mtime for f in files), run.name, files[0]))
    if not candidates:
        raise UsageError(
            f"no checkpoint given and no trained run under {runs}/ (looked for */{CHECKPOINT_NAMES[0]} and "
            f"*/{CHECKPOINT_NAMES[1]}); train one with `hydravit-edge train` or pass --checkpoint PATH")
    return max(candidates)[2]


def resolve_targets(targets: str | Sequence[str], mode: str) -> tuple[list[Exporter], dict[str, str]]:
    """Exporters for ``targets`` ("all", a name, "a,b" or a list) and the targets skipped (name -> why)."""
    if isinstance(targets, str):
        names = [t.strip() for t in targets.split(",") if t.strip()]
    else:
        names = list(targets)
    if not names:
        raise UsageError(f"no target given; choose from {', '.join(exporter_names() + ['all'])}")
    skipped: dict[str, str] = {}
    chosen: list[Exporter] = []
    if "all" in names:
        if len(names) > 1:
            raise UsageError("'all' cannot be combined with other targets")
        for name in exporter_names():
            ex = get_exporter(name)
            why = ex.missing("export")
            if why:
                skipped[name] = why
            elif mode not in ex.modes:
                skipped[name] = f"{name} cannot export --mode {mode}"
            else:
                chosen.append(ex)
        if not chosen:
            raise MissingDependencyError("no export target is usable here: " + "; ".join(skipped.values()))
        return chosen, skipped
    for name in dict.fromkeys(names):
        ex = get_exporter(name)  # unknown name: UsageError listing the choices
        ex.require("export")
        if mode not in ex.modes:
            raise UsageError(f"target {name} cannot export --mode {mode}; it supports {', '.join(ex.modes)}")
        chosen.append(ex)
    return chosen, skipped


def _load_model(model, checkpoint, runs_dir, data) -> tuple[Any, Optional[Path], dict[str, Any]]:
    """``(model in eval mode, checkpoint path or None, the manifest's "source")``."""
    from hydravit_edge.checkpoints import infer_config, load_state_into, read_checkpoint
    from hydravit_edge.model import HydraViT

    ckpt: Optional[Path] = None
    if model is not None and checkpoint is not None:
        raise UsageError("pass a model or a checkpoint, not both")
    if isinstance(model, (str, os.PathLike)):
        model, checkpoint = None, model
    if model is None:
        ckpt = Path(checkpoint) if checkpoint is not None else find_checkpoint(runs_dir)
        contents = read_checkpoint(ckpt)
        model = load_state_into(HydraViT(infer_config(contents)), contents)
        data = data or (contents.metadata or {}).get("data")
        source = {"kind": "checkpoint", "path": str(ckpt), "sha256": file_sha256(ckpt), "bytes": ckpt.stat().st_size,
                  "data": str(data) if data else None}
    elif isinstance(model, HydraViT):
        source = {"kind": "model", "path": None, "sha256": None, "bytes": None, "data": data}
    else:
        raise UsageError(f"model must be a HydraViT, got {type(model).__name__}")
    return model.eval(), ckpt, source


def _default_out(checkpoint: Optional[Path], targets: Sequence[Exporter], skipped: dict, mode: str) -> Path:
    if checkpoint is None:
        name = "model"
    elif checkpoint.parent.name and checkpoint.stem in ("best", "last"):
        name = checkpoint.parent.name
    else:
        name = checkpoint.stem
    label = "all" if skipped or len(targets) > 1 else targets[0].name
    return Path("exports") / f"{name}-{label}-{mode}"


def _reference(model, heads: Sequence[int], batch: int, seed: int) -> Reference:
    import torch

    cfg = model.config
    x = np.random.default_rng(seed).standard_normal((batch, cfg.in_chans, cfg.img_size, cfg.img_size)).astype(np.float32)
    logits = {}
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        for k in heads:
            logits[k] = model(xt, heads=k).float().numpy()
    return Reference(x, logits, seed)


def _plan_variants(exporters: Sequence[Exporter], precs: Sequence[str], mode: str, *, explicit: bool,
                   skipped: dict[str, str]) -> list[tuple[Exporter, str]]:
    """``(exporter, precision)`` pairs to export.  A pair a target cannot make is skipped with the
    reason (the export lists it); it is an error when the target was named and it is the only
    precision asked for, or the named target can make none of them."""
    plan = []
    for ex in exporters:
        reasons = {prec: ex.unsupported(prec, mode) for prec in precs}
        if explicit and all(reasons.values()):
            raise UsageError("; ".join(reasons.values()))
        for prec, why in reasons.items():
            if why is None:
                plan.append((ex, prec))
            else:
                skipped[variant_key(ex.name, prec)] = why
    if not plan:
        raise UsageError("nothing to export: " + "; ".join(skipped.values()))
    return plan


def _quant_inputs(model, ks, precs, calibration, calibration_size, source, validate, heldout_images, scratch: Path,
                  manifest: dict) -> tuple[dict[str, QuantSpec], Optional[HeldOutRef]]:
    """The :class:`QuantSpec` of each precision (calibration images sampled once, in a scratch file
    next to the staging directory) and, for quantized precisions, the labelled held-out reference."""
    quants = {p: QuantSpec(p) for p in precs}
    if any(get_precision(p).calibrated for p in precs):
        spec = calibration or source.get("data")
        if not spec:
            raise UsageError("int8-static needs calibration images: pass --calibration digits|PATH (the export "
                             "does not record the data the model was trained on)")
        images, desc = calibration_images(str(spec), model.config, calibration_size)
        path = scratch / _CALIBRATION_FILE
        np.save(path, images)
        for p in precs:
            if get_precision(p).calibrated:
                quants[p] = QuantSpec(p, str(path), desc)
    heldout = None
    if validate and any(get_precision(p).quantized for p in precs):
        heldout, note = heldout_reference(model, ks, source.get("data"), max_images=heldout_images)
        manifest["reference"]["heldout"] = (
            {"name": heldout.name, "images": int(len(heldout.labels)), "note": note,
             "sha256": hashlib.sha256(np.ascontiguousarray(heldout.images).tobytes()).hexdigest()}
            if heldout is not None else {"name": None, "note": note})
    return quants, heldout


#: the calibration images while exporting (in the staging directory; removed before it is installed)
_CALIBRATION_FILE = ".calibration.npy"


def _check_records(ex: Exporter, records: Sequence[ArtifactRecord], ks: Sequence[int], tdir: Path) -> None:
    got = sorted(r.k for r in records)
    if got != sorted(ks):
        raise ExportError(f"{ex.name} exporter returned artifacts for k={got}, expected {list(ks)}")
    for r in records:
        p = tdir / r.file
        if Path(r.file).is_absolute() or ".." in Path(r.file).parts or not p.exists():
            raise ExportError(f"{ex.name} exporter did not write {r.file} for k={r.k} inside its directory")


# =========================================================================== export

def export_model(
    model=None,
    heads: str | int | Iterable[int] | None = None,
    targets: str | Sequence[str] = "all",
    mode: str = "single",
    out: str | os.PathLike | None = None,
    force: bool = False,
    *,
    checkpoint: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
    validate: bool = True,
    batch: int = 8,
    seed: int = 0,
    show_progress: bool = False,
    jobs: Optional[int] = None,
    data: Optional[str] = None,
    precisions: str | Sequence[str] | None = None,
    calibration: Optional[str] = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    heldout_images: int = 1000,
) -> ExportReport:
    """Export ``model`` (a HydraViT) or ``checkpoint`` (default: newest run under ``runs_dir``).

    ``heads``: "3..12", "3,6,12", an int or an iterable (default: every k the model has).
    ``targets``: "all" (every registered target whose dependencies are installed), a name
    ("onnx", "executorch", "coreml", "tflite"), "a,b" or a list.  ``mode``: "single" or "per-k".
    ``jobs``: worker processes for the per-k work (default per target: one per core as memory
    allows, see :func:`.parallel.auto_jobs` and :attr:`.base.Exporter.parallel_min_params`).
    ``data``: the dataset an in-memory ``model`` was trained on ("digits" or an ImageFolder root),
    recorded in the manifest so that benchmarks measure accuracy on it (a checkpoint records its own).
    ``precisions``: "fp32" (default), "fp16", "int8", "int8-static" or a comma list / sequence; each
    precision of a target is its own manifest entry and folder (``onnx``, ``onnx-int8``, ...), made
    with the runtime's own tools and validated by :mod:`hydravit_edge.precision`'s rule on the
    labelled held-out split of ``data`` (at most ``heldout_images``) when it is known.
    ``calibration``: "digits" or an ImageFolder root for calibrated precisions (default: the
    training data); ``calibration_size`` training images are sampled from it.
    Returns an :class:`ExportReport`; raises :class:`ValidationError` (with ``.report``) when an
    artifact disagrees with PyTorch, and other :class:`HydraEdgeError`\\ s for user errors.
    """
    from hydravit_edge.heads import parse_heads

    if mode not in MODES:
        raise UsageError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    if batch < 1:
        raise UsageError("the validation batch must be >= 1")
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be >= 1")
    model, ckpt, source = _load_model(model, checkpoint, runs_dir, data)
    cfg = model.config
    ks = parse_heads(heads, cfg.heads) if heads is not None else tuple(cfg.heads)
    for k in ks:
        cfg.check_heads(k)
    exporters, skipped = resolve_targets(targets, mode)
    precs = parse_precisions(precisions)
    plan = _plan_variants(exporters, precs, mode, explicit="all" not in str(targets), skipped=skipped)
    out_dir = Path(out) if out is not None else _default_out(ckpt, exporters, skipped, mode)

    narrowed = model.narrow(max(ks))  # the one model every target and the pool's workers export
    with staging(out_dir, force) as tmp, ProgressBars(show_progress) as progress:
        reference = _reference(model, ks, batch, seed)
        reference.save(tmp / Reference.FILE)
        manifest = new_manifest(cfg, ks, mode, source, skipped, batch, seed, slicing=narrowed.slicing.to_dict())
        quants, heldout = _quant_inputs(model, ks, precs, calibration, calibration_size, source, validate,
                                        heldout_images, tmp, manifest)
        if heldout is not None:
            reference.save(tmp / Reference.FILE, heldout)
        results: list[ValidationResult] = []
        for ex, prec in plan:
            key, quant = variant_key(ex.name, prec), quants[prec]
            tdir = tmp / key
            tdir.mkdir()
            step = progress.task(f"export {key} ({mode})", len(ks))
            n_jobs = jobs if jobs is not None else auto_jobs(model, len(ks), ex.parallel_min_params)
            t0 = time.perf_counter()
            with ExportPool(narrowed, n_jobs) as pool:
                records = ex.export(narrowed, ks, tdir, mode, progress=step, pool=pool, quant=quant)
            export_s = time.perf_counter() - t0
            _check_records(ex, records, ks, tdir)
            target_results: list[ValidationResult] = []
            val_s = None
            if validate:
                step = progress.task(f"validate {key}", len(records))
                t0 = time.perf_counter()
                target_results = ex.validate(tdir, records, reference, progress=step, quant=quant, heldout=heldout)
                for r in target_results:
                    r.target = key
                val_s = time.perf_counter() - t0
                results.extend(target_results)
            manifest["targets"][key] = target_entry(ex, records, tmp, tdir, mode, export_s, n_jobs, val_s,
                                                    target_results, key=key, quant=quant)
        (tmp / _CALIBRATION_FILE).unlink(missing_ok=True)
        if validate:
            manifest["validation"] = {"status": overall_status(results), "checked": _now()}
        Manifest.check(manifest, "the manifest being written")
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        report = ExportReport(out_dir, results, report_sizes(manifest), report_files(manifest), manifest, skipped,
                              ckpt)
        if not report.passed:
            report.directory = keep_failed(tmp, out_dir)
            try:
                report.raise_for_failures()
            except ValidationError as exc:
                exc.args = (f"{exc}. {out_dir} was not written; the failed export is kept in {report.directory}",)
                exc.report = report  # type: ignore[attr-defined]
                raise
        install(tmp, out_dir)
    return report
