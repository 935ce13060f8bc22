"""The benchmark report (``reports/<device>.json``): one device, one row per export, runtime configuration and k.

A device's report keeps the rows of every export benchmarked on it: each row names the export
manifest it was measured from (``manifest_sha256``; a row without one belongs to the report's
``manifest_sha256``, as in reports written before rows carried it and in the demo apps' reports,
which hold one export), and ``exports`` describes each export (directory, model, when measured).

Written by ``hydravit-edge bench``, the Android and iOS demo apps' benchmark mode, and shipped
as the paper's published A100 reference.  Schema: ``bench/schemas/report.schema.json``
(generated from :class:`Report`, see :mod:`hydravit_edge.contract.schemas`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import ConfigDict, Field, model_validator

from hydravit_edge.errors import HydraEdgeError
from hydravit_edge.targets import ROW_MODES, runtime_names

from ._base import Document, Model, OpenModel, read_json

__all__ = ["Report", "ReportRow", "ReportDevice", "ReportExport", "Accuracy", "ReportError", "SCHEMA_VERSION",
           "SUPPORTED_VERSIONS", "ROW_FIELDS", "GEOMETRY_FIELDS", "group_key", "row_key", "row_manifest"]

#: Version written into new reports; readers accept :data:`SUPPORTED_VERSIONS`.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)


class ReportError(HydraEdgeError):
    """A report file that is missing, unreadable or does not match the report schema."""


Ms = Optional[Annotated[float, Field(ge=0)]]
PosInt = Optional[Annotated[int, Field(ge=1)]]
Count = Optional[Annotated[int, Field(ge=0)]]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def group_key(row: Any) -> tuple:
    """Which runtime configuration a row belongs to: (backend, mode, compute, precision, materialize)."""
    get = row.get if isinstance(row, dict) else (lambda name, default=None: getattr(row, name, default))
    return (get("backend"), get("mode"), get("compute"), get("precision"), get("materialize"))


def row_manifest(row: Any, default: Optional[str] = None) -> Optional[str]:
    """The export manifest (sha256) a row was measured from: its own ``manifest_sha256``, else ``default``
    (the report's ``manifest_sha256``)."""
    own = row.get("manifest_sha256") if isinstance(row, dict) else getattr(row, "manifest_sha256", None)
    return own if own is not None else default


def row_key(row: Any, default_manifest: Optional[str] = None) -> tuple:
    """Identity of a row inside a report: the export it was measured from, its runtime configuration and k.

    ``default_manifest``: the report's ``manifest_sha256``, for rows that do not carry their own.
    """
    return (row_manifest(row, default_manifest),) + group_key(row) + ((row["k"] if isinstance(row, dict) else row.k),)


class Tool(OpenModel):
    """What wrote the report, e.g. {"name": "hydravit-edge", "version": "0.1.0"} or {"name": "hydravit-edge-android", "version": "0.1.0"}."""

    name: Annotated[str, Field(min_length=1)]
    version: Optional[str] = None


#: What makes two models' latencies comparable: the fields :class:`ModelSection` (or its ``config``) gives.
GEOMETRY_FIELDS = ("num_heads", "head_dim", "depth", "img_size", "patch_size")


class ModelSection(OpenModel):
    """The model the rows describe (from the export manifest when there is one)."""

    name: Optional[str] = None
    heads: Optional[list[Annotated[int, Field(ge=1)]]] = None
    num_heads: PosInt = None
    head_dim: PosInt = None
    depth: PosInt = None
    """Transformer blocks."""
    img_size: PosInt = None
    patch_size: PosInt = None
    num_classes: PosInt = None
    config: Optional[dict[str, Any]] = None


class Settings(OpenModel):
    """How the rows were measured (harness options)."""

    threads: PosInt = None
    batch: PosInt = None
    runs: PosInt = None
    rounds: PosInt = None
    """Interleaved sweeps over every k; a row pools the samples of all rounds."""
    warmup: Count = None
    protocol: Optional[str] = None


class ReportDevice(OpenModel):
    """The device the rows were measured on."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """Identifier of the device; the report file is reports/<name with unsafe characters replaced by '-'>.json and the LUT keys on it."""
    description: Optional[str] = None
    platform: Literal["linux", "android", "ios", "macos", "windows", "other"]
    """Operating-system family."""
    manufacturer: Optional[str] = None
    model: Optional[str] = None
    """Hardware model, e.g. 'Pixel 8' or 'iPhone16,1'."""
    os: Optional[str] = None
    """OS name and version, e.g. 'Android 15 (API 35)', 'iOS 18.1', 'Linux 6.1.0 (Debian 12)'."""
    cpu: Optional[str] = None
    """CPU model or SoC."""
    cpu_cores: PosInt = None
    """Logical CPU cores."""
    cpu_physical_cores: PosInt = None
    gpu: Optional[str] = None
    """GPU/accelerator model, null when none was used or known."""
    memory_mb: Ms = None
    """Total RAM in MB."""
    runtimes: Optional[dict[str, str]] = None
    """Runtime name -> version, e.g. {"onnxruntime": "1.31.0", "executorch": "1.5.1"}."""


class Accuracy(Model):
    """Top-1 (and top-5) accuracy of the subnetwork on a named data set."""

    dataset: Annotated[str, Field(min_length=1)]
    """e.g. 'imagenet-1k-val' or 'digits-test'."""
    top1: Annotated[float, Field(ge=0, le=1)]
    """Top-1 accuracy as a fraction in [0, 1]."""
    top5: Optional[Annotated[float, Field(ge=0, le=1)]] = None
    samples: PosInt = None


_ANY_TIME = [{"required": ["latency_p90_ms"], "properties": {"latency_p90_ms": {"type": "number"}}},
             {"required": ["throughput_per_s"], "properties": {"throughput_per_s": {"type": "number"}}}]


class ReportRow(Model):
    """One k on one runtime configuration. At least one of latency_p90_ms and throughput_per_s is a number."""

    model_config = ConfigDict(json_schema_extra={"anyOf": _ANY_TIME})

    k: Annotated[int, Field(ge=1)]
    """Number of attention heads of the subnetwork."""
    backend: Literal[runtime_names()]  # type: ignore[valid-type]
    """Runtime that executed the artifact."""
    target: Optional[str] = None
    """Export target (manifest key) the artifact came from: onnx, executorch, coreml, tflite; null for eager torch."""
    mode: Optional[Literal[ROW_MODES]] = None  # type: ignore[valid-type]
    """'single': one artifact holds every k (k chosen per run); 'per-k': one artifact per k; 'eager': no artifact (PyTorch)."""
    artifact: Annotated[str, Field(min_length=1)]
    """Artifact path relative to the export manifest (e.g. 'onnx/hydravit.onnx', 'onnx/k3.onnx'), or a model name for eager/published rows."""
    manifest_sha256: Optional[Sha256] = None
    """sha256 of the export manifest.json this row was measured from; absent: the report's manifest_sha256. Rows of different exports of one device live side by side; a new benchmark replaces only rows of its own export."""
    export_dir: Optional[str] = None
    """The export directory as the benchmark was given it (for labels; manifest_sha256 identifies the export)."""
    entry: Optional[str] = None
    """Method / function / signature selecting k inside a single artifact (forward_k3, k3, ...); null for graphs."""
    compute: Optional[str] = None
    """Where it ran: 'cpu', 'cuda', 'xnnpack', 'nnapi', 'gpu', 'ane', 'all' (Core ML compute units), ..."""
    precision: Optional[str] = None
    """Numeric precision, e.g. 'fp32', 'fp16'."""
    threads: PosInt = None
    runs: PosInt = None
    """Timed runs behind the latency figures."""
    latency_median_ms: Ms = None
    """Median batch-1 latency."""
    latency_p90_ms: Ms = None
    """90th percentile batch-1 latency (linear interpolation between order statistics). The LUT and the policy use this."""
    latency_min_ms: Ms = None
    """Fastest batch-1 run."""
    throughput_batch: PosInt = None
    """Batch size of the throughput measurement."""
    throughput_per_s: Optional[Annotated[float, Field(gt=0)]] = None
    """Images per second at throughput_batch."""
    load_ms: Ms = None
    """Time to load the artifact (and prepare the entry) before the first run."""
    switch_ms: Ms = None
    """Extra cost of switching to this k inside an already loaded single artifact: first-run latency after a switch minus the median (or, where the runtime must load the entry, e.g. a Core ML function, that load time). Null for per-k artifacts."""
    materialize: Optional[Literal["lazy", "eager"]] = None
    """Single artifacts: 'lazy' (this k's own session, built from the weights the artifact stores once when the k is needed; the runtime's default) or 'eager' (one session holding every k)."""
    cold_switch_ms: Ms = None
    """Time to make this k runnable when it is not: building its session (lazy) or opening its file (per-k). Null where every k is resident (eager)."""
    rss_anon_mb: Ms = None
    """Steady anonymous resident memory of the process with this k active (heap: folded and packed weights, activations, the runtime), after freed memory went back to the OS."""
    rss_file_mb: Ms = None
    """Steady file-backed resident memory with this k active (memory-mapped weights, libraries): clean pages the OS may drop."""
    peak_switch_rss_mb: Ms = None
    """Peak resident memory while switching to another k (lazy: building the other k's session while this one stays open)."""
    peak_rss_mb: Ms = None
    """Measured peak resident memory of the process that ran this k."""
    file_bytes: Count = None
    """Size of the artifact file (or directory) on disk."""
    params: Count = None
    """Parameters of the subnetwork."""
    macs: Count = None
    """Multiply-accumulates at batch 1 (paper convention)."""
    paper_ram_mb: Ms = None
    """The paper's RAM figure (torchinfo 'Estimated Total Size', batch 1, fp32)."""
    accuracy: Optional[Accuracy] = None
    extra: Optional[dict[str, Union[bool, int, float, str, None]]] = None
    """Further named figures (numbers, strings, booleans or null)."""
    notes: Optional[list[str]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "ReportRow":
        if self.latency_p90_ms is None and self.throughput_per_s is None:
            raise ValueError("a row needs a numeric latency_p90_ms or throughput_per_s")
        lo, med, p90 = self.latency_min_ms, self.latency_median_ms, self.latency_p90_ms
        tol = 1e-9
        if lo is not None and med is not None and lo > med + tol:
            raise ValueError(f"latency_min_ms {lo} exceeds latency_median_ms {med}")
        if med is not None and p90 is not None and med > p90 + tol:
            raise ValueError(f"latency_median_ms {med} exceeds latency_p90_ms {p90}")
        return self


#: Every field a row may carry, in table order.
ROW_FIELDS = tuple(ReportRow.model_fields)


class ReportExport(Model):
    """One export whose rows the report holds."""

    manifest_sha256: Optional[Sha256]
    """sha256 of its manifest.json (null: eager PyTorch rows of a named config, no export)."""
    export_dir: Optional[str] = None
    """Its directory as the benchmark was given it."""
    model: Optional[ModelSection] = None
    """Its model (the report's model section describes the export measured last)."""
    measured: Optional[str] = None
    """When its rows were last measured (ISO 8601, UTC): the newest export of a device is the one a LUT uses by default."""


class Report(Document):
    """Per-device benchmark of HydraViT subnetworks (one row per k and runtime configuration). Written by `hydravit-edge bench`, the Android and iOS demo apps' benchmark mode, and shipped as the paper's published reference. One report per device lives under reports/<device>.json. Times are milliseconds, memory is decimal megabytes (1e6 bytes)."""

    model_config = ConfigDict(title="hydravit-edge benchmark report")
    error: ClassVar[type[HydraEdgeError]] = ReportError
    what: ClassVar[str] = "report"

    schema_version: Literal[1]
    """Version of this schema. Readers refuse versions they do not know."""
    source: Literal["measured", "published"]
    """'measured': timed by hydravit-edge or a demo app; 'published': copied from a publication (figures not measured here)."""
    created: Annotated[str, Field(min_length=10)]
    """When the report was written (ISO 8601, UTC recommended)."""
    tool: Optional[Tool] = None
    citation: Optional[str] = None
    """For published reports: where the figures come from."""
    manifest_sha256: Optional[Sha256] = None
    """sha256 of the export manifest.json of the rows that do not name their own (the export measured last; null when unknown or published)."""
    model: Optional[ModelSection] = None
    """The model of the export measured last (and of rows that do not name their export)."""
    settings: Optional[Settings] = None
    device: ReportDevice
    exports: Optional[list[ReportExport]] = None
    """The exports the rows were measured from, one entry each (absent in older reports and the apps' reports: every row then belongs to manifest_sha256 and model)."""
    rows: list[ReportRow]
    notes: Optional[list[str]] = None

    @classmethod
    def identify(cls, data: Any, where: str) -> None:
        if "schema_version" not in data:
            raise ReportError(f"{where}: not a hydravit-edge report (no 'schema_version' field)")
        version = data["schema_version"]
        if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
            raise ReportError(
                f"{where}: report schema_version {version!r} is not supported; this hydravit-edge reads "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))} (upgrade hydravit-edge or re-run the benchmark)")

    @model_validator(mode="after")
    def _unique_rows(self) -> "Report":
        seen: dict[tuple, int] = {}
        for i, row in enumerate(self.rows):
            key = row_key(row, self.manifest_sha256)
            if key in seen:
                raise ValueError(f"rows[{i}] repeats rows[{seen[key]}] (same export, k, backend, mode, compute, "
                                 f"precision: {key})")
            seen[key] = i
        shas: dict[Optional[str], int] = {}
        for i, e in enumerate(self.exports or []):
            if e.manifest_sha256 in shas:
                raise ValueError(f"exports[{i}] repeats exports[{shas[e.manifest_sha256]}] (manifest_sha256 "
                                 f"{e.manifest_sha256})")
            shas[e.manifest_sha256] = i
        return self

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Report":
        """Read and validate one report file."""
        path = Path(path)
        return cls.check(read_json(path, "report", ReportError), str(path))
