"""The export manifest (``manifest.json``): the contract between the exporter and whatever runs the artifacts.

Written by ``hydravit-edge export`` next to the artifacts; read by the Python runtime, the
benchmark harness, ``hydravit-edge validate`` and the Android/iOS apps.  :meth:`Manifest.load`
is its one reader.  Schema: ``export/schemas/manifest.schema.json`` (generated from
:class:`Manifest`).  A version-1 writer may add fields, never remove or change them, so every
object here accepts fields it does not list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Sequence, Union

from pydantic import ConfigDict, Field, PrivateAttr

from hydravit_edge.errors import HydraEdgeError, not_found
from hydravit_edge.slicing import SliceTable

from ._base import Document, OpenModel, read_json

__all__ = ["Manifest", "ManifestError", "TargetEntry", "Quantization", "Calibration", "ArtifactSpec", "TensorSpecModel", "FileEntry", "InputSpec",
           "MANIFEST_FILE", "MANIFEST_FORMAT", "MANIFEST_VERSION", "find_export_dir"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "hydravit-edge-export"
MANIFEST_VERSION = 1

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Pos = Annotated[int, Field(ge=1)]
NonNeg = Annotated[int, Field(ge=0)]


class ManifestError(HydraEdgeError):
    """An export directory without a readable manifest, or a manifest that does not match its schema."""


class Generator(OpenModel):
    """The software and machine that wrote the export."""

    hydravit_edge: str
    """hydravit-edge version."""
    python: Optional[str] = None
    system: Optional[str] = None
    """platform.system() of the exporting machine."""
    machine: Optional[str] = None
    """platform.machine() of the exporting machine."""


class Source(OpenModel):
    """Where the weights came from."""

    kind: Literal["checkpoint", "model"]
    """checkpoint: loaded from a file; model: an in-memory HydraViT passed to the Python API."""
    path: Optional[str]
    """Checkpoint path as given (null for an in-memory model)."""
    sha256: Optional[Sha256]
    """sha256 of the checkpoint file."""
    bytes: Optional[NonNeg] = None
    data: Optional[str] = None
    """The dataset the weights were trained on, as the checkpoint records it ('digits' or an ImageFolder root); null when unknown. Accuracy figures (bench, LUT) come only from this dataset's held-out split."""


class ModelConfig(OpenModel):
    """HydraConfig.to_dict(): img_size, patch_size, in_chans, depth, num_heads, head_dim, mlp_ratio, num_classes, heads, separate_heads, drop_path_rate, mean, std, labels. HydraConfig.from_dict() rebuilds it."""

    img_size: Pos
    patch_size: Pos
    in_chans: Pos
    depth: Pos
    num_heads: Pos
    """H: heads of the full model; subnetwork k uses the first k heads and the first head_dim*k features."""
    head_dim: Pos
    mlp_ratio: float
    num_classes: Pos
    heads: Optional[list[int]] = None
    """Head counts the model was trained for."""
    separate_heads: Optional[bool] = None
    drop_path_rate: Optional[float] = None
    mean: list[float]
    std: list[float]
    labels: Optional[list[str]] = None


class ModelSection(OpenModel):
    """The universal HydraViT the artifacts were exported from."""

    config: ModelConfig
    heads: list[Pos]
    """Head counts k exported (same as the top-level `heads`)."""
    num_heads: Optional[int] = None
    head_dim: Optional[int] = None
    embed_dim: Optional[int] = None
    """num_heads * head_dim; subnetwork k has width head_dim * k."""


class InputSpec(OpenModel):
    """The image input, identical for every target and k, and the model's evaluation transform."""

    name: Literal["image"]
    """Input name in every artifact (ONNX input, Core ML input, TFLite signature input)."""
    layout: Literal["NCHW"]
    dtype: Literal["float32"]
    shape: list[int]
    """[1, channels, img_size, img_size] at batch 1. ONNX artifacts also accept any batch (first dimension 'batch'); ExecuTorch, Core ML and TFLite artifacts take batch 1."""
    img_size: int
    channels: Optional[int] = None
    color_order: Optional[Literal["RGB"]] = None
    scale: Optional[float] = None
    """Multiply 8-bit pixel values by this (1/255) before normalising."""
    mean: list[float]
    """Per-channel mean subtracted after scaling."""
    std: list[float]
    """Per-channel std divided by after subtracting the mean."""
    preprocessing: Optional[str] = None
    """The preprocessing in words."""
    resize: Optional[Pos] = None
    """Resize the shorter image side to this many pixels (floor(img_size / crop_pct)), keeping the aspect ratio, before the centre crop."""
    crop_pct: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    """Centre-crop fraction of the evaluation transform (timm's crop_pct)."""
    interpolation: Optional[Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]] = None
    """Resampling filter of the resize (Pillow's / timm's names)."""
    crop: Optional[Pos] = None
    """Side of the centre crop (= img_size)."""


class OutputSpec(OpenModel):
    """The output of every artifact and k."""

    name: Literal["logits"]
    dtype: Literal["float32"]
    shape: list[int]
    """[1, num_classes] at batch 1."""
    postprocessing: Optional[str] = None


class HeldOutInfo(OpenModel):
    """The labelled held-out images quantized artifacts were validated on."""

    name: Optional[str] = None
    """The split (digits-heldout, <root>/val); null: none was available (see note)."""
    images: Optional[NonNeg] = None
    sha256: Optional[Sha256] = None
    """sha256 of the normalised float32 images."""
    note: Optional[str] = None


class Reference(OpenModel):
    """Fixed validation inputs and PyTorch's outputs, for re-validating artifacts anywhere (`hydravit-edge validate DIR`, app self-tests)."""

    file: str
    """NumPy .npz file: `inputs` float32 [batch, C, H, W] (already normalised) and `logits_k<k>` float32 [batch, num_classes] = model(inputs, heads=k) in PyTorch, for every exported k."""
    batch: Pos
    seed: int
    """Seed of numpy.random.default_rng that drew `inputs` (standard normal)."""
    inputs_key: Optional[str] = None
    logits_key: Optional[str] = None
    description: Optional[str] = None
    heldout: Optional[HeldOutInfo] = None
    """Exports with quantized precisions: the labelled held-out images they were judged on (reference.npz then also holds `heldout_labels` and PyTorch fp32's `heldout_logits_k<k>`; the images are re-read from the training data, checked by sha256)."""


class TensorSpecModel(OpenModel):
    """A named input or output of an artifact entry."""

    name: str
    shape: list[Union[int, str]]
    """Integers, or a string naming a dynamic dimension (e.g. 'batch')."""
    dtype: str
    """float32, int64, ..."""
    description: Optional[str] = None


class NamedDataLayout(OpenModel):
    """ExecuTorch single artifacts: how k's named data (.ptd) is made from the weights the artifact stores once (hydravit_edge.engines.ptd)."""

    program: str
    """k's program (relative to the artifact's folder), loaded with this named data."""
    method: str = "forward"
    """Its method."""
    head: str
    """The file holding the .ptd's first head_bytes bytes (its header and index), and after them k's own segments."""
    head_bytes: Optional[NonNeg] = None
    size: NonNeg
    """Bytes of the .ptd."""
    sha256: str
    """Of the .ptd ExecuTorch wrote; the runtime checks it where check is sha256."""
    weights: str
    """The weights file the segments are cut from: hydravit.pte (fp32) or hydravit.weights (int8, weights_format raw)."""
    weights_format: Optional[Literal["raw"]] = None
    """raw: a plain binary file, not a program (the int8 single artifact: its records' file; each k runs through program)."""
    check: Optional[Literal["sha256"]] = None
    segments: list[dict[str, Any]]
    """Per segment the byte range it fills (offset, size) and its source: a verbatim copy at an offset of the weights file (copy), k's own bytes in the head file (own), or the cut of k of a full tensor stored there (cut, at, shape, dtype, quant values|scale, pieces, axis, transform id|nhwc)."""


class ArtifactExtra(OpenModel):
    """Target-specific facts of one k's artifact; targets may add fields."""

    heads_input: Optional[str] = None
    """ONNX single: the input that selects k (heads)."""
    heads_value: Optional[list[int]] = None
    """ONNX single: the value to feed it ([k])."""
    branch: Optional[str] = None
    """ONNX single: the If branch of k."""
    branch_local_bytes: Optional[NonNeg] = None
    """ONNX single: bytes of constants inside k's branch (not shared weights)."""
    external_data: Optional[str] = None
    """ONNX: the file (next to the artifact, relative to its folder) holding its weights; open such a graph by path."""
    lazy_graph: Optional[str] = None
    """Single artifacts: the graph (ONNX) or program (ExecuTorch) of this k alone over the weights the artifact stores once (relative to the artifact's folder). A session of it holds only k; the runtime's lazy mode opens it. No heads input."""
    lazy_entry: Optional[str] = None
    """ExecuTorch: the method of the lazy_graph program (forward)."""
    lazy_data: Optional[NamedDataLayout] = None
    """ExecuTorch: how the named data (.ptd) of k's program is made from the weights the artifact stores once."""


class ArtifactSpec(OpenModel):
    """Where subnetwork k lives and how to call it."""

    k: Pos
    """Head count of this subnetwork."""
    file: str
    """Artifact path relative to the manifest, e.g. onnx/k3.onnx or executorch/hydravit.pte (shared by every k in single mode)."""
    entry: Optional[str]
    """Method (ExecuTorch: forward_k3 in a single .pte, forward in a per-k .pte), function (Core ML, e.g. k3) or signature (TFLite) to call for this k; null when the file is one graph with nothing to select (ONNX per-k files, and the ONNX single graph, where k is the `heads` input)."""
    entry_kind: Literal["graph", "graph+input", "method", "function", "signature"]
    """graph: the file is the model of this k; graph+input: one graph, k is fed as an input (ONNX single: input `heads`, int64, shape [1], value [k]); method/function/signature: call `entry`."""
    mode: Literal["single", "per-k"]
    inputs: list[TensorSpecModel]
    outputs: list[TensorSpecModel]
    extra: Optional[ArtifactExtra] = None
    """Target-specific facts for this k (e.g. heads_input and heads_value for ONNX single)."""
    notes: Optional[list[str]] = None


class FileEntry(OpenModel):
    """A file (or bundle directory such as .mlpackage) the target wrote."""

    path: str
    """Relative to the manifest."""
    bytes: NonNeg
    """Size; for a directory, the sum of its files."""
    sha256: Sha256
    """sha256 of the file. For a directory: sha256 over the lines '<relative posix path>\\u0000<sha256 of that file>\\n' of its files, sorted by path."""
    kind: Literal["file", "directory"]


class ValidationResultModel(OpenModel):
    """One check of one k. A skipped check is reported as skipped with its reason, never as passed."""

    target: str
    k: int
    status: Literal["passed", "failed", "skipped", "error"]
    check: str
    """runtime: the artifact run in its own runtime (in a separate process) vs PyTorch on the reference inputs; lazy: the same for the single artifact's per-k graph or program that lazy materialisation opens (extra.lazy_graph); structure: static inspection (Core ML on Linux); source-program: the PyTorch program the artifact was converted from; integrity: size and sha256 vs this manifest."""
    max_abs_err: Optional[float] = None
    """Max |logit - PyTorch logit| over the reference batch."""
    top1_agreement: Optional[float] = None
    """Fraction of the batch whose argmax equals PyTorch's."""
    tolerance: Optional[float] = None
    """Max abs error accepted (fp32 targets: 1e-4)."""
    batch: Optional[int] = None
    reason: Optional[str] = None
    """Why a check failed, errored or was skipped (e.g. 'needs macOS')."""
    runtime: Optional[str] = None
    """Runtime and version used, e.g. onnxruntime 1.31.0 (CPU)."""
    details: Optional[dict[str, Any]] = None


class Calibration(OpenModel):
    """The calibration images of a calibrated precision: a seeded sample of the training data."""

    source: str
    """'digits' or the ImageFolder root given to --calibration."""
    split: Optional[str] = None
    """The folder the images were sampled from (train), null for a flat folder."""
    images: Pos
    available: Optional[NonNeg] = None
    seed: Optional[int] = None
    sha256: Optional[Sha256] = None
    """sha256 of the normalised float32 images as fed to calibration."""


class Quantization(OpenModel):
    """How a quantized precision's artifacts were made."""

    weights: str
    """How weights are stored, e.g. 'int8, per output channel, symmetric'."""
    activations: str
    tool: Optional[str] = None
    """The runtime's own tool that quantized them, e.g. onnxruntime.quantization.quantize_dynamic."""
    scheme: Optional[str] = None
    """Single artifacts: how the k share one set of quantized weights (e.g. cut of k from the full tensor quantized per output channel once)."""
    calibration: Optional[Calibration] = None
    """Calibrated (static) precisions: the images the activation ranges came from."""


class TargetEntry(OpenModel):
    """Artifacts of one target at one precision."""

    title: Optional[str] = None
    target: Optional[str] = None
    """The export target (onnx, executorch, coreml, tflite). The entry's key is the target at its precision: the target's name for fp32 (onnx), '<target>-<precision>' otherwise (onnx-int8); absent in older manifests: the key."""
    directory: str
    """Subdirectory holding the target's files (the entry's key)."""
    mode: Literal["single", "per-k", "mixed"]
    """What was produced: single (one artifact for every k) or per-k (one file per k; also used when a target had to fall back, see notes)."""
    requested_mode: Optional[Literal["single", "per-k"]] = None
    entry_kind: Optional[str] = None
    precision: Optional[Literal["fp32", "fp16", "int8", "int8-static"]] = None
    """Numeric precision (hydravit_edge.precision.PRECISIONS): fp32, fp16, int8 (int8 weights per output channel, activations quantized per call) or int8-static (activation ranges from calibration images). Absent: fp32."""
    tolerance: Optional[float] = None
    """fp32: max abs logit error its validation accepts (1e-4); null for quantized precisions (see validation_rule)."""
    validation_rule: Optional[str] = None
    """The rule its validation applied, in words, e.g. 'top-1 within 1 points of fp32' (quantized, labelled held-out images) or 'max abs error <= 0.0001' (fp32)."""
    quantization: Optional[Quantization] = None
    """Quantized precisions: weights, activations, tool, single-artifact scheme, calibration images."""
    files: list[FileEntry]
    """Every file the target wrote, with size and sha256."""
    artifacts: list[ArtifactSpec]
    """One record per exported k."""
    versions: dict[str, str]
    """Versions of the exporter and runtime libraries (e.g. torch, onnx, onnxruntime, executorch, coremltools)."""
    details: Optional[dict[str, Any]] = None
    """Target-specific facts (opset, delegate, deployment target, how weights are shared)."""
    export_seconds: Optional[float] = None
    export_jobs: Optional[Pos] = None
    """Worker processes the per-k export work was spread over."""
    validation_seconds: Optional[float] = None
    validation: list[ValidationResultModel]
    notes: Optional[list[str]] = None
    """E.g. why single mode fell back to per-k files."""


class Validation(OpenModel):
    """Overall validation status at export time."""

    status: Literal["passed", "failed", "skipped", "not run"]
    """passed: every check that ran passed (some may be skipped, see targets.<name>.validation); skipped: no artifact could be run here; not run: validation was disabled. A manifest with status failed is never installed at the requested output (it is kept in <out>.failed)."""
    checked: Optional[str] = None
    """UTC time of validation."""


class Manifest(Document):
    """manifest.json, written by `hydravit-edge export` next to the artifacts. It is the contract between the exporter and everything that runs the artifacts: the Python runtime, the benchmark harness and the Android/iOS demo apps. All paths are relative to the directory holding manifest.json and use '/' separators. A reader must check `format` and `manifest_version`; fields may be added in a later version 1 writer, never removed or changed in meaning."""

    model_config = ConfigDict(title="hydravit-edge export manifest", extra="allow", populate_by_name=True)
    error: ClassVar[type[HydraEdgeError]] = ManifestError
    what: ClassVar[str] = "export manifest"
    FILE: ClassVar[str] = MANIFEST_FILE

    format: Literal["hydravit-edge-export"]
    """Identifies the file as a hydravit-edge export manifest."""
    manifest_version: Literal[1]
    """Version of this schema. Incremented on any incompatible change."""
    created: str
    """UTC time of the export, ISO 8601 (e.g. 2025-01-31T12:00:00Z)."""
    generator: Generator
    source: Source
    model: ModelSection
    heads: Annotated[list[Pos], Field(min_length=1)]
    """Sorted head counts k that every target in this export provides."""
    mode: Literal["single", "per-k"]
    """Requested mode. single: one artifact per target holding every k (weights stored once, k chosen at run time without reloading); per-k: one artifact per k. A target may fall back (see targets.<name>.mode and notes)."""
    input_spec: InputSpec = Field(alias="input")
    output: OutputSpec
    labels: list[str]
    """Class names, index = logit index. config.labels, or "0".."C-1" when the model has none."""
    reference: Reference
    targets: dict[str, TargetEntry]
    """One entry per exported target and precision, keyed by the target's name for fp32 (onnx, executorch, coreml, tflite) and '<target>-<precision>' for the others (onnx-int8, executorch-int8, coreml-fp16, ...); each entry names its target and precision."""
    skipped_targets: dict[str, str]
    """Targets that `--target all` did not export, with the reason (e.g. a missing optional dependency and the pip extra to install)."""
    validation: Validation
    slicing: Optional[SliceTable] = None
    """How subnetwork k is cut from every parameter of the exported model (the model narrowed to max(heads); hydravit_edge.slicing, schema hydravit_edge/schemas/slicing.schema.json), so that a runtime without PyTorch can cut any k from the full weights."""

    _dir: Path = PrivateAttr(default=Path("."))

    # ---- reading ----------------------------------------------------------------------
    @classmethod
    def identify(cls, data: Any, where: str) -> None:
        if data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: not a hydravit-edge export manifest (format is {data.get('format')!r}, "
                                f"expected '{MANIFEST_FORMAT}')")
        if data.get("manifest_version") != MANIFEST_VERSION:
            raise ManifestError(f"{where}: manifest version {data.get('manifest_version')} is not supported "
                                f"(this hydravit-edge reads version {MANIFEST_VERSION})")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Manifest":
        """Read and check ``DIR/manifest.json`` (``directory`` may also be the file itself)."""
        d = Path(directory)
        path = d if d.name.endswith(".json") and not d.is_dir() else d / MANIFEST_FILE
        if not d.exists():
            raise not_found(ManifestError, f"{d}: no such export directory (run `hydravit-edge export` first)")
        missing = f"{d}: no {MANIFEST_FILE} here; is it an export directory? (run `hydravit-edge export`)"
        man = cls.check(read_json(path, "export manifest", ManifestError, missing=missing), str(path))
        man._dir = path.parent
        return man

    # ---- the directory ----------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """The export directory (artifact paths are relative to it)."""
        return self._dir

    @property
    def path(self) -> Path:
        return self._dir / MANIFEST_FILE

    # ---- model and input --------------------------------------------------------------
    @property
    def input(self) -> dict:
        """The ``input`` spec as JSON data (the model's input and evaluation transform)."""
        return self.input_spec.model_dump(mode="json", exclude_unset=True)

    @property
    def config(self) -> dict:
        """The model config as JSON data (``HydraConfig.from_dict`` rebuilds it)."""
        return self.model.config.model_dump(mode="json", exclude_unset=True)

    @property
    def img_size(self) -> int:
        return int(self.input_spec.img_size)

    @property
    def in_chans(self) -> int:
        shape = self.input_spec.shape
        return int(shape[1]) if len(shape) == 4 else int(self.model.config.in_chans)

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self.input_spec.mean]

    @property
    def std(self) -> list[float]:
        return [float(v) for v in self.input_spec.std]

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_classes)

    # ---- targets ----------------------------------------------------------------------
    def target_names(self) -> list[str]:
        """Every entry's key (a target at a precision: onnx, onnx-int8, ...)."""
        return list(self.targets)

    def base_target(self, key: str) -> str:
        """The export target of entry ``key`` (``onnx-int8`` -> ``onnx``)."""
        return self.target(key).target or key

    def precision(self, key: str) -> str:
        """The precision of entry ``key`` (fp32 when the entry does not say)."""
        return self.target(key).precision or "fp32"

    def variants(self, target: str) -> dict[str, str]:
        """``{precision: key}`` of the entries holding ``target``'s artifacts (fp32 first)."""
        out = {self.precision(key): key for key in self.targets if self.base_target(key) == target}
        return dict(sorted(out.items(), key=lambda kv: kv[0] != "fp32"))

    def key_for(self, target: str, precision: str = "fp32") -> str:
        """The entry key of ``target`` at ``precision``; a :class:`ManifestError` naming the precisions there are."""
        found = self.variants(target)
        if precision not in found:
            have = ", ".join(found) or "none"
            raise ManifestError(f"{self.dir}: has no {precision} '{target}' artifacts (precisions there: {have}; "
                                f"export them with --precision {precision})")
        return found[precision]

    def target(self, name: str) -> TargetEntry:
        try:
            return self.targets[name]
        except KeyError:
            raise ManifestError(f"{self.dir}: has no '{name}' artifacts (it has: "
                                f"{', '.join(self.targets) or 'none'})") from None

    def artifacts(self, target: str) -> list[dict]:
        """Artifact records of ``target`` as JSON data (``file`` relative to the manifest), sorted by k."""
        return sorted((a.model_dump(mode="json") for a in self.target(target).artifacts), key=lambda r: r["k"])

    def target_mode(self, target: str) -> str:
        """What ``target`` produced: single, per-k (or mixed)."""
        return self.target(target).mode

    def details(self, target: str) -> dict:
        return dict(self.target(target).details or {})

    def file_info(self, target: str, file: str) -> Optional[FileEntry]:
        return next((f for f in self.target(target).files if f.path == file), None)

    def file_bytes(self, target: str, file: str) -> Optional[int]:
        """Bytes of an artifact file, with its ONNX external data (``<file>.data``) when it has one."""
        info = self.file_info(target, file)
        if info is not None:
            data = self.file_info(target, f"{file}.data")
            return int(info.bytes) + (int(data.bytes) if data is not None else 0)
        p = self.dir / file
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
        return None

    def files_by_artifact(self, target: str) -> dict[str, list[dict]]:
        """``{file: [records]}``: each file is one artifact to open (a single file holds every k)."""
        out: dict[str, list[dict]] = {}
        for r in self.artifacts(target):
            out.setdefault(r["file"], []).append(r)
        return out

    def lazy_graphs(self, target: str) -> Optional[dict[int, tuple[str, dict]]]:
        """``{k: (file, record)}``: the graph of each k of ``target``'s single artifact, over the weights
        it stores once (``extra.lazy_graph``; what lazy materialisation opens), as a record of one k with
        the image input only.  None when the single artifact has none (or the export is per-k)."""
        files = {f: recs for f, recs in self.files_by_artifact(target).items() if len(recs) > 1}
        if not files:
            return None
        file, recs = max(files.items(), key=lambda kv: len(kv[1]))
        folder = file.rsplit("/", 1)[0] + "/" if "/" in file else ""
        out = {}
        for r in recs:
            graph = (r.get("extra") or {}).get("lazy_graph")
            if not graph:
                return None
            path = folder + graph
            entry = r["extra"].get("lazy_entry")  # ExecuTorch: the program's method; ONNX: none (a graph)
            extra = {"lazy_data": r["extra"]["lazy_data"]} if r["extra"].get("lazy_data") else {}
            out[int(r["k"])] = (path, dict(r, file=path, entry=entry, entry_kind="method" if entry else "graph",
                                           extra=extra,
                                           inputs=[i for i in r.get("inputs") or [] if i.get("name") != "heads"]))
        return out

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


def find_export_dir(root: str | os.PathLike = "exports", *, require_target: Optional[Sequence[str]] = None,
                    mode: Optional[str] = None) -> Path:
    """The newest export directory (by manifest time) under ``root``; a clear error when there is none.

    ``require_target``: only directories with at least one of these targets; ``mode``: only
    those whose artifacts of such a target have this mode.
    """
    base = Path(root)
    found = []
    if base.is_dir():
        for m in list(base.glob("*/manifest.json")) + list(base.glob("*/*/manifest.json")) + list(base.glob("manifest.json")):
            try:
                man = Manifest.load(m.parent)
            except ManifestError:
                continue
            targets = [t for t in man.targets if not require_target or t in require_target]
            if mode is not None:
                targets = [t for t in targets if man.target_mode(t) == mode]
            if targets:
                found.append((m.stat().st_mtime, m.parent))
    if not found:
        what = f" with {'/'.join(require_target)} artifacts" if require_target else ""
        what += f" in mode {mode}" if mode else ""
        raise ManifestError(f"no export directory{what} under {base}/ (run `hydravit-edge export`, or pass the directory)")
    return max(found)[1]
