"""Building ``manifest.json`` while exporting: the export's header (model, input and output,
labels, reference data) and one ``targets.<name>`` entry per target (files with sizes and
sha256, artifact records, versions, validation).  :class:`hydravit_edge.contract.manifest.Manifest`
is its model and reader; the schema is generated from it."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Optional, Sequence

from hydravit_edge.clock import utc_now as _now
from hydravit_edge.contract.manifest import MANIFEST_FORMAT, MANIFEST_VERSION

from .base import Exporter
from .hashing import path_sha256, path_size
from .quantize import FP32, QuantSpec
from .records import ArtifactRecord, Reference, ValidationResult

__all__ = ["new_manifest", "target_entry"]


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


def new_manifest(cfg, ks: Sequence[int], mode: str, source: dict, skipped: dict, batch: int, seed: int,
                 slicing: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The manifest of an export before its targets are added (``slicing``: the exported model's
    slicing table, ``model.narrow(max(ks)).slicing.to_dict()``)."""
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
        "slicing": slicing,
    }


def target_entry(ex: Exporter, records: Sequence[ArtifactRecord], root: Path, tdir: Path, mode: str,
                 export_s: float, n_jobs: int, val_s: Optional[float],
                 results: Sequence[ValidationResult], key: Optional[str] = None,
                 quant: QuantSpec = FP32) -> dict[str, Any]:
    """``targets.<key>`` of the manifest (``key``: the target at its precision, ``onnx``, ``onnx-int8``):
    the files, artifact records, versions, quantization and checks."""
    produced = sorted({r.mode for r in records})
    key = key or ex.name
    prec = quant.info
    quantization = None
    if quant.quantized:
        quantization = {"weights": prec.weights, "activations": prec.activations,
                        **(ex.quantization_info(quant) or {}), "calibration": quant.calibration}
    return {
        "title": ex.title or ex.name,
        "target": ex.name,
        "directory": key,
        "mode": produced[0] if len(produced) == 1 else "mixed",
        "requested_mode": mode,
        "entry_kind": records[0].entry_kind if records else ex.entry_kind,
        "precision": quant.precision,
        "tolerance": ex.tolerance if not quant.quantized else None,
        "validation_rule": prec.tolerance_text(labelled=any((r.details or {}).get("heldout") for r in results))
        if quant.quantized else f"max abs error <= {ex.tolerance:g}",
        "quantization": quantization,
        "files": _file_entries(root, tdir),
        "artifacts": [dict(r.to_dict(), file=f"{key}/{r.file}") for r in records],
        "versions": ex.versions(),
        "details": ex.describe(tdir, records),
        "export_seconds": round(export_s, 3),
        "export_jobs": n_jobs,
        "validation_seconds": None if val_s is None else round(val_s, 3),
        "validation": [r.to_dict() for r in results],
        "notes": sorted({n for r in records for n in r.notes}),
    }
