"""The benchmark harness: every k of every exported artifact, each in its own process.

:func:`run_bench` reads an export manifest, plans one job per (backend, artifact, k), runs
each job in a fresh ``python -m hydravit_edge.bench.worker`` process (one runtime per
process: thread pools and allocators of one measurement never colour another; the peak
RSS is that job's alone) and turns each result into a report row
(:mod:`hydravit_edge.bench.report`).  The report ``reports/<device>.json`` is written
atomically after every finished row, so an interrupted benchmark keeps what it finished.

``--backend torch`` runs eager PyTorch (``model.forward_heads``) from the manifest's config,
or a named config; ``--device cuda`` follows the paper's reference protocol: CUDA events
around each forward with synchronisation, warm-up, batch-1 latency and batch-512 throughput.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydravit_edge.contract.manifest import Manifest, find_export_dir
from hydravit_edge.engines import Engine, engines, get_engine
from hydravit_edge.errors import HydraEdgeError, UsageError

from . import report as rep
from .device import device_info, runtime_versions
from .stats import latency_stats

__all__ = ["BenchSettings", "Job", "BenchOutcome", "bench_engines", "plan_jobs", "run_job", "job_row", "run_bench",
           "DEFAULT_RUNS", "DEFAULT_WARMUP", "DEFAULT_BATCH", "CUDA_BATCH"]

DEFAULT_RUNS = 30
DEFAULT_WARMUP = 5
DEFAULT_BATCH = 8
#: the paper's throughput batch (official validate_throughput.py -b 512)
CUDA_BATCH = 512
JOB_TIMEOUT_S = 900.0


def bench_engines() -> list[Engine]:
    """The runtimes ``bench`` runs on this kind of machine (``bench`` in :data:`hydravit_edge.targets.RUNTIMES`)."""
    return [e for e in engines() if e.info.bench]


def get_backend(name: str) -> Engine:
    """The engine of ``--backend name`` (a user error naming the choices when ``bench`` cannot run it)."""
    names = [e.name for e in bench_engines()]
    if name not in names:
        raise UsageError(f"unknown backend '{name}'; choose one of {', '.join(names)}")
    return get_engine(name)


def env_threads(threads: Optional[int]) -> dict[str, str]:
    """Environment for a worker process pinned to ``threads`` threads (OpenMP, MKL)."""
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


@dataclass
class BenchSettings:
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    batch: int = DEFAULT_BATCH
    threads: Optional[int] = None
    device: str = "cpu"
    switch_runs: int = 5
    timeout_s: float = JOB_TIMEOUT_S
    #: sweeps over every (backend, artifact, k), each job in a fresh process every round; a row's
    #: statistics pool the samples of all rounds (drift of a shared machine hits every k alike)
    rounds: int = 1

    def check(self) -> "BenchSettings":
        if self.runs < 1:
            raise UsageError(f"--runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.batch < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")
        if self.rounds < 1:
            raise UsageError(f"--rounds must be >= 1, got {self.rounds}")
        return self

    def protocol(self) -> str:
        if self.device == "cuda":
            return (f"paper reference protocol: eager PyTorch on CUDA, CUDA events around each forward with "
                    f"synchronisation, {self.warmup} warm-up runs, {self.runs} timed batch-1 runs, throughput at "
                    f"batch {self.batch}")
        rounds = f" in each of {self.rounds} interleaved rounds (samples pooled)" if self.rounds > 1 else ""
        return (f"one process per (backend, artifact, k); {self.warmup} warm-up + {self.runs} timed batch-1 runs"
                f"{rounds} (wall clock); throughput at batch {self.batch}; peak RSS = high-water mark (VmHWM) of that process")


@dataclass
class Job:
    backend: str
    target: Optional[str]
    mode: str
    k: int
    artifact: str                      # relative to the manifest, or a model name (eager)
    path: Optional[Path]               # file to open (checkpoint or None for eager)
    records: list[dict]
    entry: Optional[str] = None
    details: dict = field(default_factory=dict)
    file_bytes: Optional[int] = None
    export_dir: Optional[Path] = None
    notes: list[str] = field(default_factory=list)
    #: single artifacts: "lazy" (the graph of k over the shared weights) or "eager" (every k in one session)
    materialize: Optional[str] = None
    #: lazy: the other k whose graph the worker builds next to k's (cold switch) ({"k", "path", "records"})
    lazy_other: Optional[dict] = None
    #: the artifact's precision (fp32, fp16, int8, int8-static)
    precision: str = "fp32"

    @property
    def label(self) -> str:
        what = self.mode if self.mode != "per-k" else Path(self.artifact).name
        if self.materialize:
            what += f" {self.materialize}"
        if self.precision != "fp32":
            what += f" {self.precision}"
        return f"{self.backend} {what} k={self.k}"


@dataclass
class BenchOutcome:
    report_path: Path
    report: dict
    rows: list[dict]
    failures: list[tuple[Job, str]]
    skipped: list[str]
    export_dirs: list[Path]


# =========================================================================== planning

def _select_heads(available: Sequence[int], heads: Optional[Sequence[int]]) -> list[int]:
    if heads is None:
        return sorted(available)
    missing = sorted(set(heads) - set(available))
    if missing:
        raise UsageError(f"--heads {','.join(map(str, missing))} not in the export (it has k in {sorted(available)})")
    return sorted(set(heads))


def _artifact_jobs(manifest: Manifest, b: Engine, key: str, precision: str,
                   heads: Optional[Sequence[int]]) -> list[Job]:
    """The jobs of one manifest entry (``key``: a target at ``precision``): per k, its per-k file, or the
    single artifact eager and (when it has per-k graphs) lazy."""
    jobs: list[Job] = []
    details = manifest.details(key)
    wanted = set(_select_heads([r["k"] for r in manifest.artifacts(key)], heads))
    lazy = manifest.lazy_graphs(key)
    for file, records in manifest.files_by_artifact(key).items():
        single = len(records) > 1
        for r in records:
            if r["k"] not in wanted:
                continue
            mode = r.get("mode") or manifest.target_mode(key)
            size = manifest.file_bytes(key, file)
            if single and lazy:  # the runtime's default: one k's own session over the shared weights
                k = int(r["k"])
                others = [h for h in lazy if h != k]
                other = max(others, key=lambda h: (abs(h - k), h)) if others else None
                path, rec = lazy[k]
                jobs.append(Job(b.name, b.target, mode, k, path, manifest.dir / path, [rec], details=details,
                                file_bytes=size, export_dir=manifest.dir, notes=list(r.get("notes") or []),
                                materialize="lazy",
                                lazy_other=None if other is None else {
                                    "k": other, "path": str(manifest.dir / lazy[other][0]),
                                    "records": [lazy[other][1]]}))
            jobs.append(Job(b.name, b.target, mode, r["k"], file, manifest.dir / file, records,
                            entry=r.get("entry"), details=details,
                            file_bytes=size, export_dir=manifest.dir,
                            notes=list(r.get("notes") or []), materialize="eager" if single else None))
    for j in jobs:
        j.precision = precision
    return jobs


def plan_jobs(manifest: Optional[Manifest], backend_list: Sequence[Engine], *,
              heads: Optional[Sequence[int]] = None, config: Optional[dict] = None,
              checkpoint: Optional[Path] = None) -> tuple[list[Job], list[str]]:
    """Jobs for every artifact of every backend's target in ``manifest``, and why targets were skipped."""
    jobs: list[Job] = []
    skipped: list[str] = []
    targets = manifest.target_names() if manifest is not None else []
    for b in backend_list:
        if b.target is None:  # eager PyTorch: one job per k from the model config
            cfg = config if config is not None else (manifest.config if manifest is not None else None)
            if cfg is None:
                raise UsageError("--backend torch needs an export directory (for the model config) or --model")
            avail = manifest.heads if manifest is not None else list(cfg.get("heads") or range(1, cfg["num_heads"] + 1))
            name = "hydravit (eager PyTorch" + (f", {checkpoint.name})" if checkpoint else ", random weights)")
            for k in _select_heads(avail, heads):
                jobs.append(Job(b.name, None, "eager", k, name, checkpoint, [{"k": kk} for kk in avail],
                                details={"config": cfg}, export_dir=manifest.dir if manifest else None))
            continue
        if b.target not in {manifest.base_target(t) for t in targets}:
            continue
        missing = b.missing()
        if missing:
            skipped.append(f"{b.target}: {missing}")
            continue
        for precision, key in manifest.variants(b.target).items():
            jobs.extend(_artifact_jobs(manifest, b, key, precision, heads))
    known = {b.target for b in bench_engines()}
    for t in targets:
        if manifest.base_target(t) not in known:
            skipped.append(f"{t}: no runtime for these artifacts on this machine"
                           + (" (Core ML runs on Apple devices: use the iOS demo app's benchmark mode)" if t == "coreml" else ""))
    return jobs, skipped


# =========================================================================== running

def run_job(job: Job, settings: BenchSettings, input_shape: Sequence[int], *,
            accuracy: Optional[dict] = None, seed: int = 0) -> dict:
    """Run one job in a fresh worker process; returns the worker's result dict (``error`` on failure)."""
    with tempfile.TemporaryDirectory(prefix="hydravit-bench-") as tmp:
        tmp = Path(tmp)
        spec = {
            "backend": job.backend, "device": settings.device, "path": str(job.path) if job.path else None,
            "records": job.records, "k": job.k, "threads": settings.threads, "batch": settings.batch,
            "runs": settings.runs, "warmup": settings.warmup, "switch_runs": settings.switch_runs,
            "input_shape": list(input_shape), "details": job.details, "accuracy": accuracy, "seed": seed,
            "lazy_other": job.lazy_other,
        }
        (tmp / "job.json").write_text(json.dumps(spec))
        out = tmp / "result.json"
        env = env_threads(settings.threads)
        env.setdefault("PYTHONWARNINGS", "ignore")
        proc = subprocess.Popen([sys.executable, "-m", "hydravit_edge.bench.worker", str(tmp / "job.json"), str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            _, stderr = proc.communicate(timeout=settings.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"did not finish within {settings.timeout_s:.0f} s"}
        except BaseException:  # Ctrl-C: do not leave the worker running
            proc.kill()
            proc.communicate()
            raise
        if out.exists():
            return json.loads(out.read_text())
        tail = " | ".join((stderr or "").strip().splitlines()[-3:])
        return {"error": f"worker exited with code {proc.returncode}" + (f": {tail}" if tail else "")}


def job_row(job: Job, result: dict, settings: BenchSettings, backend: Engine, profile: dict[int, Any]) -> dict:
    """A report row from a job and its worker result."""
    tp = result.get("throughput") or {}
    extra: dict[str, Any] = {
        "load_entry_ms": result.get("prepare_ms"),
        "first_run_ms": result.get("first_run_ms"),
        "rss_before_load_mb": result.get("rss_before_load_mb"),
        "rss_after_load_mb": result.get("rss_after_load_mb"),
        "throughput_method": tp.get("method"),
    }
    sw = result.get("switch")
    if sw:
        extra.update({"switch_from_k": sw["from_k"], "switch_raw_ms": sw["raw_ms"],
                      "switch_other_entry_load_ms": sw["other_prepare_ms"],
                      "peak_rss_after_switch_mb": result.get("peak_rss_after_switch_mb")})
    extra = {k: v for k, v in extra.items() if v is not None}
    prof = profile.get(job.k)
    notes = list(job.notes)
    if result.get("throughput_static_batch"):
        notes.append(f"artifact has a static batch of {result['throughput_static_batch']}: throughput is "
                     f"{tp.get('method')}")
    row = rep.make_row(
        job.k, job.backend, job.artifact, target=job.target, mode=job.mode, entry=job.entry,
        compute=backend.compute_label(settings.device, job.details), precision=job.precision,
        threads=settings.threads, **latency_stats(result["latency_samples_ms"]),
        throughput_batch=int(tp["batch"]), throughput_per_s=round(float(tp["per_s"]), 4),
        load_ms=round(float(result["load_ms"]), 4), switch_ms=(sw["ms"] if sw else None),
        materialize=job.materialize,
        cold_switch_ms=(result.get("cold_switch_ms") if job.materialize == "lazy"
                        else round(float(result["load_ms"]), 4) if job.mode == "per-k" else None),
        rss_anon_mb=result.get("rss_anon_mb"), rss_file_mb=result.get("rss_file_mb"),
        peak_switch_rss_mb=result.get("peak_switch_rss_mb", result.get("peak_rss_after_switch_mb")),
        peak_rss_mb=result.get("peak_rss_mb"), file_bytes=job.file_bytes,
        params=prof.params if prof else None, macs=prof.macs if prof else None,
        paper_ram_mb=prof.ram_mb if prof else None, accuracy=result.get("accuracy"), extra=extra,
        **({"notes": notes} if notes else {}),
    )
    return row


def _profile_rows(config: dict, ks: Sequence[int]) -> dict[int, Any]:
    from hydravit_edge.config import HydraConfig
    from hydravit_edge.profile import profile

    cfg = HydraConfig.from_dict(dict(config))
    return {r.k: r for r in profile(cfg.replace(heads=None, separate_heads=False), sorted(set(ks)))}


def _model_section(config: dict, heads: Sequence[int], name: str) -> dict:
    return {"name": name, "heads": sorted(set(heads)), "num_heads": config["num_heads"],
            "head_dim": config["head_dim"], "depth": config["depth"], "img_size": config["img_size"],
            "patch_size": config["patch_size"], "num_classes": config["num_classes"], "config": config}


def run_bench(export_dir: Optional[Path] = None, *, backend_names: Optional[Sequence[str]] = None,
              device_name: Optional[str] = None, settings: Optional[BenchSettings] = None,
              heads: Optional[Sequence[int]] = None, reports_dir: Path = Path("reports"),
              exports_root: Path = Path("exports"), config_name: Optional[str] = None,
              checkpoint: Optional[Path] = None, accuracy: Optional[bool] = None,
              on_event: Optional[Callable[[str, Any], None]] = None) -> BenchOutcome:
    """Benchmark an export directory (default: the newest under ``exports_root``) and write the report.

    ``on_event(kind, payload)`` receives ``("plan", (dir, jobs, skipped))``, ``("note", text)``, ``("start", job)``,
    ``("row", (job, row, report_path))`` and ``("fail", (job, message))`` for progress display.
    """
    settings = (settings or BenchSettings()).check()
    emit = on_event or (lambda kind, payload: None)
    if backend_names:
        names = list(backend_names)
    elif settings.device != "cpu":  # --device cuda alone: the paper's protocol, eager PyTorch
        names = [b.name for b in bench_engines() if settings.device in b.devices]
    else:  # every runtime of an artifact (eager PyTorch only when asked for)
        names = [b.name for b in bench_engines() if b.target is not None]
    blist = [get_backend(n) for n in names]
    for b in blist:
        b.check_device(settings.device)
    eager_only = all(b.target is None for b in blist)

    manifest: Optional[Manifest] = None
    config: Optional[dict] = None
    if export_dir is not None:
        manifest = Manifest.load(export_dir)
    elif eager_only and config_name is not None:
        pass
    else:
        try:
            manifest = Manifest.load(find_export_dir(exports_root))
        except HydraEdgeError:
            if not eager_only:
                raise
    if manifest is None:
        from hydravit_edge.config import preset

        config = preset(config_name or "base").to_dict()
    elif config_name is not None and eager_only:
        from hydravit_edge.config import preset

        config = preset(config_name).to_dict()
        manifest = None

    jobs, skipped = plan_jobs(manifest, blist, heads=heads, config=config, checkpoint=checkpoint)
    if not jobs:
        have = ", ".join(manifest.targets) if manifest else "none"
        raise UsageError(f"nothing to benchmark: the export has targets {have}; backend(s) {', '.join(names)} "
                         + ("; " + "; ".join(skipped) if skipped else "")
                         + (f" (choose --backend {'|'.join(b.name for b in bench_engines())})" if manifest else ""))
    emit("plan", (manifest.dir if manifest else None, jobs, skipped))
    if manifest is None:
        emit("note", f"eager PyTorch on config '{config_name or 'base'}' with "
                     + (f"the weights of {checkpoint}" if checkpoint else "random weights (latency does not depend on them)"))

    cfg = manifest.config if manifest is not None else config
    all_ks = sorted({j.k for j in jobs})
    profile = _profile_rows(cfg, all_ks)
    img = manifest.img_size if manifest is not None else cfg["img_size"]
    chans = manifest.in_chans if manifest is not None else cfg["in_chans"]

    gpu = None
    if settings.device == "cuda":
        gpu = next((b.gpu_name("cuda") for b in blist if hasattr(b, "gpu_name")), None)
    device = device_info(device_name, gpu=gpu, runtimes=runtime_versions())
    msha = rep.manifest_sha256(manifest.path) if manifest is not None else None
    report = rep.new_report(
        device, manifest_sha256=msha, export_dir=str(manifest.dir) if manifest else None,
        model=_model_section(cfg, all_ks, "hydravit"),
        settings={"threads": settings.threads, "batch": settings.batch, "runs": settings.runs,
                  "rounds": settings.rounds, "warmup": settings.warmup, "protocol": settings.protocol(),
                  "export_dir": str(manifest.dir) if manifest else None},
    )
    path = rep.report_path(reports_dir, device["name"])
    try:  # rows of other exports of this device are kept; only this export's rows are replaced
        writer = rep.ReportWriter(path, report, resume=True)
    except rep.ReportError as exc:
        raise rep.ReportError(f"{exc}; move it away or choose another --device-name / --reports-dir") from None
    merged = writer.merged
    if merged is not None:
        bits = []
        if merged.kept_other:
            bits.append(f"its {merged.kept_other} row(s) of {len(merged.other_exports)} other export(s) are kept "
                        f"({', '.join(merged.other_exports)})")
        if merged.kept_same:
            bits.append(f"its {merged.kept_same} row(s) of this export stay until re-measured")
        emit("note", f"adding to {path}" + (": " + "; ".join(bits) if bits else ""))

    acc_spec = None
    tmpdir = None
    if accuracy is not False and manifest is not None:
        import numpy as np

        from hydravit_edge.transform import EvalTransform

        from .accuracy import heldout_set

        held, why = heldout_set(manifest.data, manifest.labels or [str(i) for i in range(manifest.num_classes)],
                                EvalTransform.from_spec(manifest.input, manifest.config))
        if held is None and accuracy:
            raise UsageError(f"--accuracy: {why.removeprefix('no accuracy: ')}")
        emit("note", why)
        if held is not None:
            tmpdir = tempfile.TemporaryDirectory(prefix="hydravit-bench-data-")
            np.save(Path(tmpdir.name) / "images.npy", held.images)
            np.save(Path(tmpdir.name) / "labels.npy", held.labels)
            acc_spec = {"images": str(Path(tmpdir.name) / "images.npy"),
                        "labels": str(Path(tmpdir.name) / "labels.npy"), "dataset": held.name}
    elif accuracy:
        raise UsageError("--accuracy needs an export (its manifest names the model's dataset)")

    rows, failures = [], []
    by_name = {b.name: b for b in blist}
    pooled: dict[int, dict] = {}  # rounds > 1: the first round's result, samples of every round
    failed: set[int] = set()
    try:
        for rnd in range(settings.rounds):
            last = rnd == settings.rounds - 1
            for i, job in enumerate(jobs):
                if i in failed:
                    continue
                emit("start", job)
                result = run_job(job, settings, (chans, img, img),
                                 accuracy=acc_spec if rnd == 0 else None)
                if "error" in result:
                    failed.add(i)
                    failures.append((job, result["error"]))
                    emit("fail", (job, result["error"]))
                    continue
                if i in pooled:
                    pooled[i]["latency_samples_ms"] += result["latency_samples_ms"]
                    result = pooled[i]
                elif not last:
                    pooled[i] = result
                    continue
                if not last:
                    continue
                if result.get("gpu") and not writer.report["device"].get("gpu"):
                    writer.report["device"]["gpu"] = result["gpu"]
                row = job_row(job, result, settings, by_name[job.backend], profile)
                row = writer.add(row)  # written to disk now: an interruption keeps it
                rows.append(row)
                emit("row", (job, row, path))
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    return BenchOutcome(path, writer.report, rows, failures, skipped, [manifest.dir] if manifest else [])
