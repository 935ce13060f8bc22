"""The records an export produces and validation reads: artifact records (where subnetwork k
lives in a target's output, with its inputs and outputs), validation results and the
reference data (fixed inputs and PyTorch's logits) every artifact is checked against.

Plain data: numpy and the standard library; written to and read from the manifest and
``reference.npz``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import numpy as np

from hydravit_edge.contract.manifest import ValidationResultModel

from .errors import ValidationError

__all__ = ["TensorSpec", "ArtifactRecord", "Status", "ValidationResult", "Reference"]


@dataclass
class TensorSpec:
    """A named input/output of an artifact.  ``shape`` entries are ints or symbolic names."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(d["name"], list(d["shape"]), d.get("dtype", "float32"), d.get("description", ""))


@dataclass
class ArtifactRecord:
    """Where subnetwork ``k`` lives inside a target's output.

    ``file`` is relative to the target directory while exporting (``"k3.onnx"``) and relative
    to the manifest (``"onnx/k3.onnx"``) once recorded in the manifest.
    """

    k: int
    file: str
    #: method / function / signature selecting k inside a multi-k artifact; None: the file is one graph.
    entry: Optional[str] = None
    #: "graph" (file = one model), "graph+input" (one graph, k chosen by an input tensor),
    #: "method" (ExecuTorch), "function" (Core ML), "signature" (TFLite).
    entry_kind: str = "graph"
    mode: str = "per-k"
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    #: target-specific facts for this k (e.g. {"heads_value": 3} for the ONNX heads input).
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k, "file": self.file, "entry": self.entry, "entry_kind": self.entry_kind,
            "mode": self.mode, "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs], "extra": dict(self.extra), "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArtifactRecord":
        return cls(
            k=int(d["k"]), file=d["file"], entry=d.get("entry"), entry_kind=d.get("entry_kind", "graph"),
            mode=d.get("mode", "per-k"), inputs=[TensorSpec.from_dict(t) for t in d.get("inputs", [])],
            outputs=[TensorSpec.from_dict(t) for t in d.get("outputs", [])], extra=dict(d.get("extra", {})),
            notes=list(d.get("notes", [])),
        )


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


class ValidationResult(ValidationResultModel):
    """One check of one k of one target: the manifest's validation entry (its fields are declared
    once, in :class:`hydravit_edge.contract.manifest.ValidationResultModel`) with what export and
    validation do with it.

    ``check`` names what was checked: ``"runtime"`` (the artifact run in its own runtime vs
    PyTorch), ``"lazy"`` (the same for a single artifact's per-k graph or program), ``"structure"``
    (static inspection), ``"source-program"`` (the PyTorch program the artifact was converted from),
    ``"integrity"``.  ``status`` is never ``passed`` for a check that did not run.
    """

    status: Status
    check: str = "runtime"
    details: dict[str, Any] = {}

    def __init__(self, target: str, k: int, status: Status, **kw: Any) -> None:
        super().__init__(target=target, k=k, status=status, **kw)

    @property
    def ok(self) -> bool:
        """True unless failed or errored (a skip is not a failure, and not a pass either)."""
        return self.status in (Status.PASSED, Status.SKIPPED)

    @classmethod
    def skipped(cls, target: str, k: int, reason: str, check: str = "runtime", **kw: Any) -> "ValidationResult":
        return cls(target, k, Status.SKIPPED, check=check, reason=reason, **kw)

    @classmethod
    def error(cls, target: str, k: int, reason: str, check: str = "runtime", **kw: Any) -> "ValidationResult":
        return cls(target, k, Status.ERROR, check=check, reason=reason, **kw)

    @classmethod
    def structural(cls, target: str, k: int, ok: bool, details: Mapping[str, Any] | None = None,
                   reason: Optional[str] = None) -> "ValidationResult":
        return cls(target, k, Status.PASSED if ok else Status.FAILED, check="structure",
                   reason=reason, details=dict(details or {}))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ValidationResult":
        kw = dict(d)
        kw["details"] = kw.get("details") or {}
        return cls(kw.pop("target"), kw.pop("k"), Status(kw.pop("status")), **kw)

    def summary(self) -> str:
        if self.status is Status.SKIPPED:
            return f"skipped: {self.reason}"
        if self.status is Status.ERROR:
            return f"error: {self.reason}"
        text = self.status.value
        if self.status is Status.FAILED and self.reason:
            text += f": {self.reason}"
        return text


@dataclass
class Reference:
    """Fixed inputs and PyTorch's logits ``model(x, heads=k)`` for every exported k.

    Stored as ``reference.npz`` next to the manifest (keys ``inputs`` and ``logits_k<k>``) so
    that ``hydravit-edge validate DIR`` and the demo apps can check artifacts without PyTorch.
    """

    inputs: np.ndarray
    logits: dict[int, np.ndarray]
    seed: int = 0

    FILE: ClassVar[str] = "reference.npz"

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[0])

    def save(self, path: Path, heldout: Any = None) -> None:
        """Write ``reference.npz``; with ``heldout`` (:class:`~.quantize.HeldOutRef`) also its labels and
        PyTorch fp32's logits on it (``heldout_labels``, ``heldout_logits_k<k>``; the images are the
        model's held-out split, re-read from the training data)."""
        arrays = {"inputs": self.inputs.astype(np.float32), "seed": np.array(self.seed, dtype=np.int64)}
        arrays.update({f"logits_k{k}": v.astype(np.float32) for k, v in self.logits.items()})
        if heldout is not None:
            arrays["heldout_labels"] = np.asarray(heldout.labels, dtype=np.int64)
            arrays.update({f"heldout_logits_k{k}": v.astype(np.float32) for k, v in heldout.logits.items()})
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Reference":
        try:
            with np.load(path) as z:
                inputs = z["inputs"]
                logits = {int(n[len("logits_k"):]): z[n] for n in z.files if n.startswith("logits_k")}
                seed = int(z["seed"]) if "seed" in z.files else 0
        except (OSError, ValueError, KeyError) as exc:
            raise ValidationError(f"{path}: unreadable reference data ({exc})") from None
        return cls(inputs, logits, seed)
