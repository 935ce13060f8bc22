"""What a quantized export needs besides the model: the precision, its calibration images, and
how validation judges it.

* :class:`QuantSpec` -- the precision of one export pass and, for calibrated precisions, the
  calibration images (a ``.npy`` file the pool's workers read) and their description for the
  manifest (``targets.<key>.quantization.calibration``).
* :func:`calibration_images` -- a seeded sample of the TRAINING images: the embedded digits'
  train split, or an ImageFolder root's ``train/`` (or the folder itself), through the model's
  evaluation transform.  A missing or empty path is a :class:`UsageError`.
* :func:`judge` -- validation of a quantized artifact (see :mod:`hydravit_edge.precision`):
  top-1 on labelled held-out images vs PyTorch fp32 when the export knows them, else the logit
  error relative to the logits' range and top-1 agreement on the reference inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hydravit_edge.errors import UsageError
from hydravit_edge.precision import Precision, get_precision

from .records import Status, ValidationResult

__all__ = ["QuantSpec", "FP32", "calibration_images", "judge", "HeldOutRef", "DEFAULT_CALIBRATION_SIZE",
           "heldout_reference", "load_heldout"]

#: calibration images by default (a sample of the training set)
DEFAULT_CALIBRATION_SIZE = 64
_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class QuantSpec:
    """The precision of one export pass (picklable: it travels to the pool's workers)."""

    precision: str = "fp32"
    #: ``.npy`` of normalised calibration images (N, C, H, W) float32, for calibrated precisions
    calibration_file: Optional[str] = None
    #: the manifest's description of them (source, split, images, seed, sha256)
    calibration: Optional[dict] = None
    #: op types to quantize (None: the target's default)
    extra: dict = field(default_factory=dict)

    @property
    def info(self) -> Precision:
        return get_precision(self.precision)

    @property
    def quantized(self) -> bool:
        return self.precision != "fp32"

    def images(self) -> np.ndarray:
        if not self.calibration_file:
            raise UsageError(f"precision {self.precision} needs calibration images (--calibration digits|PATH)")
        return np.load(self.calibration_file)


FP32 = QuantSpec("fp32")


def _sample(n_total: int, n: int, seed: int) -> np.ndarray:
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def calibration_images(spec: str, cfg, size: int = DEFAULT_CALIBRATION_SIZE,
                       seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """``(images, description)``: ``size`` training images (seeded sample) of ``spec`` ("digits" or an
    ImageFolder root), normalised as the model expects."""
    if size < 1:
        raise UsageError("--calibration-size must be >= 1")
    if spec.strip().lower() == "digits":
        from hydravit_edge.train.data import DigitsDataset

        ds = DigitsDataset("train", cfg.img_size, mean=cfg.mean, std=cfg.std)
        idx = _sample(len(ds.images), size, seed)
        x = ds.images.numpy()[idx].astype(np.float32)
        desc = {"source": "digits", "split": "train", "available": int(len(ds.images))}
    else:
        root = Path(spec).expanduser()
        if not root.exists():
            raise UsageError(f"--calibration {spec}: no such directory (give an ImageFolder root, or 'digits')")
        if not root.is_dir():
            raise UsageError(f"--calibration {spec}: not a directory (give an ImageFolder root, or 'digits')")
        base = root / "train" if (root / "train").is_dir() else root
        files = sorted(f for f in base.rglob("*") if f.is_file() and f.suffix.lower() in _IMG_EXTENSIONS)
        if not files:
            raise UsageError(f"--calibration {spec}: no images under {base} "
                             f"(looked for {', '.join(_IMG_EXTENSIONS)})")
        transform = cfg.eval_transform
        picked = [files[i] for i in _sample(len(files), size, seed)]
        xs, bad = [], []
        for f in picked:
            try:
                xs.append(transform(f))
            except Exception as exc:  # noqa: BLE001 - named below
                bad.append(f"{f}: {exc}")
        if not xs:
            raise UsageError(f"--calibration {spec}: none of the {len(picked)} sampled images could be read "
                             f"(first: {bad[0]})")
        x = np.stack(xs).astype(np.float32)
        desc = {"source": str(root), "split": base.name if base != root else None, "available": len(files),
                "unreadable": len(bad)}
    desc.update({"images": int(len(x)), "seed": seed,
                 "sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()})
    return x, desc


@dataclass
class HeldOutRef:
    """Labelled held-out images and PyTorch fp32's logits on them, per k."""

    images: np.ndarray
    labels: np.ndarray
    logits: dict[int, np.ndarray]
    name: str

    def top1(self, k: int) -> float:
        return float(np.mean(self.logits[k].argmax(-1) == self.labels))


def judge(target: str, k: int, precision: str, got_ref: np.ndarray, ref: np.ndarray,
          got_heldout: Optional[np.ndarray] = None, heldout: Optional[HeldOutRef] = None, *,
          check: str = "runtime", runtime: Optional[str] = None) -> ValidationResult:
    """Validation of a quantized artifact of k (see the module docstring)."""
    p = get_precision(precision)
    got_ref = np.asarray(got_ref, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    base = dict(check=check, runtime=runtime, batch=int(ref.shape[0]))
    if got_ref.shape != ref.shape:
        return ValidationResult(target, k, Status.FAILED, reason=f"output shape {tuple(got_ref.shape)} != expected "
                                f"{tuple(ref.shape)}", **base)
    if not np.all(np.isfinite(got_ref)) or (got_heldout is not None and not np.all(np.isfinite(got_heldout))):
        return ValidationResult(target, k, Status.FAILED, reason="non-finite outputs", **base)
    err = float(np.max(np.abs(got_ref - ref))) if ref.size else 0.0
    agree = float(np.mean(got_ref.argmax(-1) == ref.argmax(-1))) if ref.shape[0] else 1.0
    details: dict[str, Any] = {"precision": precision}
    reasons = []
    if heldout is not None and got_heldout is not None and len(heldout.labels):
        top1 = float(np.mean(np.asarray(got_heldout).argmax(-1) == heldout.labels))
        fp32 = heldout.top1(k)
        drop = 100.0 * (fp32 - top1)
        agree = float(np.mean(np.asarray(got_heldout).argmax(-1) == heldout.logits[k].argmax(-1)))
        err = max(err, float(np.max(np.abs(np.asarray(got_heldout, np.float32) - heldout.logits[k]))))
        details.update({"top1": top1, "top1_fp32": fp32, "top1_drop_points": round(drop, 4),
                        "heldout": heldout.name, "images": int(len(heldout.labels)), "rule": p.tolerance_text(True)})
        tolerance = p.max_top1_drop
        if drop > p.max_top1_drop + 1e-9:
            reasons.append(f"top-1 {100 * top1:.2f}% is {drop:.2f} points below fp32's {100 * fp32:.2f}% "
                           f"(allowed: {p.max_top1_drop:g})")
        batch = int(len(heldout.labels))
    else:
        rel = p.max_rel_err
        scale = float(np.max(np.abs(ref))) if ref.size else 1.0
        tolerance = rel * max(scale, 1e-6)
        part = np.sort(ref, axis=-1)
        decisive = (part[:, -1] - part[:, -2]) > 2 * tolerance if ref.shape[-1] > 1 else np.ones(len(ref), bool)
        flipped = int(np.sum((got_ref.argmax(-1) != ref.argmax(-1)) & decisive))
        details.update({"rule": p.tolerance_text(False)})
        if err > tolerance:
            reasons.append(f"max abs error {err:.3g} > {rel:g} x max |logit| = {tolerance:.3g}")
        if flipped:
            reasons.append(f"top-1 differs from fp32 on {flipped} of {ref.shape[0]} inputs with a clear margin")
        batch = int(ref.shape[0])
    base["batch"] = batch
    return ValidationResult(target, k, Status.FAILED if reasons else Status.PASSED, max_abs_err=err,
                            top1_agreement=agree, tolerance=tolerance, reason="; ".join(reasons) or None,
                            details=details, **base)


def heldout_reference(model, ks: Sequence[int], data: Optional[str], max_images: int = 1000,
                      ) -> tuple[Optional[HeldOutRef], str]:
    """Labelled held-out images of ``data`` (the run's validation split) and PyTorch fp32's logits."""
    import torch

    from hydravit_edge.bench.accuracy import heldout_set

    cfg = model.config
    labels = list(cfg.labels) if cfg.labels else [str(i) for i in range(cfg.num_classes)]
    held, note = heldout_set({"source": {"data": data}}, labels, cfg.eval_transform, max_images=max_images)
    if held is None:
        return None, note
    logits = {}
    with torch.inference_mode():
        x = torch.from_numpy(held.images)
        for k in ks:
            logits[k] = torch.cat([model(x[i:i + 256], heads=k) for i in range(0, len(x), 256)]).float().numpy()
    return HeldOutRef(held.images, held.labels, logits, held.name), note


def load_heldout(manifest, reference_file: Path) -> Optional[HeldOutRef]:
    """The held-out reference an export was judged on, for re-validation: labels and PyTorch fp32's
    logits from ``reference.npz``, the images re-read from the training data (None when they are
    not on this machine or differ from the export's, by sha256: validation then uses the
    reference inputs alone)."""
    from hydravit_edge.bench.accuracy import heldout_set
    from hydravit_edge.transform import EvalTransform

    info = manifest.reference.heldout
    if info is None or not info.name:
        return None
    with np.load(reference_file) as z:
        if "heldout_labels" not in z.files:
            return None
        labels = z["heldout_labels"]
        logits = {int(n[len("heldout_logits_k"):]): z[n] for n in z.files if n.startswith("heldout_logits_k")}
    transform = EvalTransform.from_spec(manifest.input, manifest.config)
    held, _ = heldout_set(manifest.to_dict(), manifest.labels, transform, max_images=int(info.images or 0) or 1000)
    if held is None or len(held.labels) != len(labels):
        return None
    if hashlib.sha256(np.ascontiguousarray(held.images).tobytes()).hexdigest() != info.sha256:
        return None
    return HeldOutRef(held.images, labels, logits, held.name)
