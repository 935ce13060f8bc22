"""Python API: :func:`export_model` and :func:`validate_dir`.

``export_model`` turns a HydraViT (or a checkpoint) into deployable artifacts for one or more
registered targets, validates every artifact and every k against PyTorch in the target's own
runtime (a subprocess), and writes ``manifest.json`` + ``reference.npz``.  Everything is built
in a temporary directory next to the output and renamed into place only when export and
validation succeeded; a failure leaves nothing half-written (a directory whose validation
failed is kept as ``<out>.failed`` for inspection, the previous output stays untouched).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from hydravit_edge.contract.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, TargetEntry
from hydravit_edge.errors import CheckpointError, HydraEdgeError, MissingDependencyError, UsageError

from .base import (MODES, _file_sha256, ArtifactRecord, Exporter, ExportError, Reference, Status, ValidationError,
                   ValidationResult, exporter_names, get_exporter, path_sha256, path_size)
from .parallel import ExportPool, auto_jobs

__all__ = ["export_model", "validate_dir", "ExportReport", "ValidationReport", "find_checkpoint", "resolve_targets",
           "OutputExistsError", "MANIFEST_FILE", "MANIFEST_VERSION", "MANIFEST_FORMAT"]

CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors")


class OutputExistsError(HydraEdgeError):
    """The output directory exists and ``force`` was not given."""


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


def _default_out(checkpoint: Optional[Path], targets: Sequence[Exporter], skipped: dict, mode: str) -> Path:
    if checkpoint is None:
        name = "model"
    elif checkpoint.parent.name and checkpoint.stem in ("best", "last"):
        name = checkpoint.parent.name
    else:
        name = checkpoint.stem
    label = "all" if skipped or len(targets) > 1 else targets[0].name
    return Path("exports") / f"{name}-{label}-{mode}"


# =========================================================================== staging

@contextmanager
def _staging(out: Path, force: bool) -> Iterator[Path]:
    """A temporary directory next to ``out``; removed unless the caller renamed it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} already exists; pass --force (force=True) to replace it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
    except OSError as exc:
        raise HydraEdgeError(f"cannot write the output {out}: {exc.strerror or exc}") from None
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` (force) is swapped out first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# =========================================================================== manifest

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _file_entries(root: Path, sub: Path) -> list[dict[str, Any]]:
    """Every top-level entry of a target directory: files, and bundles (directories) with a tree hash."""
    out = []
    for p in sorted(sub.iterdir()):
        out.append({"path": p.relative_to(root).as_posix(), "bytes": path_size(p), "sha256": path_sha256(p),
                    "kind": "directory" if p.is_dir() else "file"})
    return out


def _input_spec(cfg) -> dict[str, Any]:
    """The input and the model's own evaluation transform (the one it was validated with)."""
    return {
        "name": "image", "layout": "NCHW", "dtype": "float32",
        "shape": [1, cfg.in_chans, cfg.img_size, cfg.img_size], "img_size": cfg.img_size, "channels": cfg.in_chans,
        "color_order": "RGB", "scale": 1.0 / 255.0, **cfg.eval_transform.to_spec(),
    }


def _output_spec(cfg) -> dict[str, Any]:
    return {"name": "logits", "dtype": "float32", "shape": [1, cfg.num_classes],
            "postprocessing": "class scores before softmax; softmax(logits) gives probabilities, argmax the class"}


def _manifest(cfg, ks: Sequence[int], mode: str, source: dict, skipped: dict, batch: int, seed: int) -> dict[str, Any]:
    """The manifest of an export before its targets are added (:class:`Manifest` is its model)."""
    from hydravit_edge import __version__

    return {
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "created": _now(),
        "generator": {"hydravit_edge": __version__, "python": platform.python_version(),
                      "system": platform.system(), "machine": platform.machine()},
        "source": source,
        "model": {"config": cfg.to_dict(), "num_heads": cfg.num_heads, "head_dim": cfg.head_dim,
                  "embed_dim": cfg.embed_dim, "heads": list(ks)},
        "heads": list(ks),
        "mode": mode,
        "input": _input_spec(cfg),
        "output": _output_spec(cfg),
        "labels": list(cfg.labels) if cfg.labels else [str(i) for i in range(cfg.num_classes)],
        "reference": {"file": Reference.FILE, "batch": batch, "seed": seed, "inputs_key": "inputs",
                      "logits_key": "logits_k{k}",
                      "description": "fixed float32 NCHW inputs (already normalised) and PyTorch's "
                                     "model(x, heads=k) logits for every exported k"},
        "targets": {},
        "skipped_targets": dict(skipped),
        "validation": {"status": "not run", "checked": None},
    }


def _target_entry(ex: Exporter, records: Sequence[ArtifactRecord], root: Path, tdir: Path, mode: str,
                  export_s: float, n_jobs: int, val_s: Optional[float],
                  results: Sequence[ValidationResult]) -> dict[str, Any]:
    """``targets.<name>`` of the manifest: the target's files, artifact records, versions and checks."""
    produced = sorted({r.mode for r in records})
    return {
        "title": ex.title or ex.name,
        "directory": ex.name,
        "mode": produced[0] if len(produced) == 1 else "mixed",
        "requested_mode": mode,
        "entry_kind": records[0].entry_kind if records else ex.entry_kind,
        "precision": ex.precision,
        "tolerance": ex.tolerance,
        "files": _file_entries(root, tdir),
        "artifacts": [dict(r.to_dict(), file=f"{ex.name}/{r.file}") for r in records],
        "versions": ex.versions(),
        "details": ex.describe(tdir, records),
        "export_seconds": round(export_s, 3),
        "export_jobs": n_jobs,
        "validation_seconds": None if val_s is None else round(val_s, 3),
        "validation": [r.to_dict() for r in results],
        "notes": sorted({n for r in records for n in r.notes}),
    }


# =========================================================================== progress

class _Progress:
    """Rich progress bars when shown; a no-op otherwise."""

    def __init__(self, show: bool) -> None:
        self.bar = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from hydravit_edge.console import err_console

            self.bar = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err_console, transient=False)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int):
        if not self.bar:
            return lambda _msg="": None
        tid = self.bar.add_task(description, total=total)

        def step(msg: str = "") -> None:
            self.bar.update(tid, advance=1, description=f"{description} {msg}".strip()[:60])
        return step


# =========================================================================== export

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
) -> ExportReport:
    """Export ``model`` (a HydraViT) or ``checkpoint`` (default: newest run under ``runs_dir``).

    ``heads``: "3..12", "3,6,12", an int or an iterable (default: every k the model has).
    ``targets``: "all" (every registered target whose dependencies are installed), a name
    ("onnx", "executorch", "coreml", "tflite"), "a,b" or a list.  ``mode``: "single" or "per-k".
    ``jobs``: worker processes for the per-k work (default per target: one per core as memory
    allows, see :func:`.parallel.auto_jobs` and :attr:`.base.Exporter.parallel_min_params`).
    ``data``: the dataset an in-memory ``model`` was trained on ("digits" or an ImageFolder root),
    recorded in the manifest so that benchmarks measure accuracy on it (a checkpoint records its own).
    Returns an :class:`ExportReport`; raises :class:`ValidationError` (with ``.report``) when an
    artifact disagrees with PyTorch, and other :class:`HydraEdgeError`\\ s for user errors.
    """
    from hydravit_edge.checkpoints import infer_config, load_state_into, read_checkpoint
    from hydravit_edge.heads import parse_heads
    from hydravit_edge.model import HydraViT

    if mode not in MODES:
        raise UsageError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    if batch < 1:
        raise UsageError("the validation batch must be >= 1")
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be >= 1")
    source: dict[str, Any]
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
        source = {"kind": "checkpoint", "path": str(ckpt), "sha256": _file_sha256(ckpt), "bytes": ckpt.stat().st_size,
                  "data": str(data) if data else None}
    elif isinstance(model, HydraViT):
        source = {"kind": "model", "path": None, "sha256": None, "bytes": None, "data": data}
    else:
        raise UsageError(f"model must be a HydraViT, got {type(model).__name__}")
    model = model.eval()
    cfg = model.config
    ks = parse_heads(heads, cfg.heads) if heads is not None else tuple(cfg.heads)
    for k in ks:
        cfg.check_heads(k)
    exporters, skipped = resolve_targets(targets, mode)
    out_dir = Path(out) if out is not None else _default_out(ckpt, exporters, skipped, mode)

    narrowed = model.narrow(max(ks))  # what the pool's workers hold
    with _staging(out_dir, force) as tmp, _Progress(show_progress) as progress:
        reference = _reference(model, ks, batch, seed)
        reference.save(tmp / Reference.FILE)
        manifest = _manifest(cfg, ks, mode, source, skipped, batch, seed)
        results: list[ValidationResult] = []
        for ex in exporters:
            tdir = tmp / ex.name
            tdir.mkdir()
            step = progress.task(f"export {ex.name} ({mode})", len(ks))
            n_jobs = jobs if jobs is not None else auto_jobs(model, len(ks), ex.parallel_min_params)
            t0 = time.perf_counter()
            with ExportPool(narrowed, n_jobs) as pool:
                records = ex.export(model, ks, tdir, mode, progress=step, pool=pool)
            export_s = time.perf_counter() - t0
            _check_records(ex, records, ks, tdir)
            target_results: list[ValidationResult] = []
            val_s = None
            if validate:
                step = progress.task(f"validate {ex.name}", len(records))
                t0 = time.perf_counter()
                target_results = ex.validate(tdir, records, reference, progress=step)
                val_s = time.perf_counter() - t0
                results.extend(target_results)
            manifest["targets"][ex.name] = _target_entry(ex, records, tmp, tdir, mode, export_s, n_jobs, val_s,
                                                         target_results)
        if validate:
            manifest["validation"] = {"status": _overall(results), "checked": _now()}
        Manifest.check(manifest, "the manifest being written")
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        report = ExportReport(out_dir, results, _sizes(manifest), _files(manifest), manifest, skipped, ckpt)
        if not report.passed:
            failed_dir = out_dir.with_name(out_dir.name + ".failed")
            if failed_dir.exists():
                shutil.rmtree(failed_dir)
            os.replace(tmp, failed_dir)
            report.directory = failed_dir
            try:
                report.raise_for_failures()
            except ValidationError as exc:
                exc.args = (f"{exc}. {out_dir} was not written; the failed export is kept in {failed_dir}",)
                exc.report = report  # type: ignore[attr-defined]
                raise
        _install(tmp, out_dir)
    return report


def _overall(results: Sequence[ValidationResult]) -> str:
    if any(not r.ok for r in results):
        return "failed"
    if results and all(r.status is Status.SKIPPED for r in results if r.check == "runtime"):
        return "skipped"
    return "passed"


def _check_records(ex: Exporter, records: Sequence[ArtifactRecord], ks: Sequence[int], tdir: Path) -> None:
    got = sorted(r.k for r in records)
    if got != sorted(ks):
        raise ExportError(f"{ex.name} exporter returned artifacts for k={got}, expected {list(ks)}")
    for r in records:
        p = tdir / r.file
        if Path(r.file).is_absolute() or ".." in Path(r.file).parts or not p.exists():
            raise ExportError(f"{ex.name} exporter did not write {r.file} for k={r.k} inside its directory")


def _sizes(manifest: dict) -> dict[tuple[str, int], int]:
    out = {}
    for name, t in manifest["targets"].items():
        by_path = {f["path"]: f["bytes"] for f in t["files"]}
        for a in t["artifacts"]:
            out[(name, a["k"])] = by_path.get(a["file"], 0)
    return out


def _files(manifest: dict) -> dict[tuple[str, int], str]:
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
    with _Progress(show_progress) as progress:
        for name in names:
            t = manifest.targets.get(name)
            if t is None:
                raise UsageError(f"{d}: the export has no target '{name}' (it has {', '.join(manifest.targets)})")
            records = [ArtifactRecord.from_dict(a.model_dump(mode="json")) for a in t.artifacts]
            bad_files = _integrity(d, t)
            try:
                ex = get_exporter(name)
            except UsageError as exc:
                results.extend(ValidationResult.error(name, r.k, str(exc)) for r in records)
                continue
            for r in records:
                problem = bad_files.get(r.file)
                results.append(ValidationResult(name, r.k, Status.FAILED if problem else Status.PASSED, check="integrity",
                                                reason=problem, details={"file": r.file}))
            step = progress.task(f"validate {name}", len(records))
            results.extend(ex.validate(d, records, reference, progress=step))
    return ValidationReport(d, results, _sizes(manifest.data), _files(manifest.data))


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
