"""The battery demo (``hydravit-edge demo``).

:func:`run_demo` streams the digits held-out images through :class:`hydravit_edge.runtime.Runtime`
while a battery trace (CSV: ``time_s, percent, charging, thermal``, optionally ``low_power``)
drives the policy: the trace is stretched over the stream, every image is one ``predict``
call with the trace's state at that moment.
It prints per-phase k, latency and accuracy, and writes a PNG timeline, the per-image log
(CSV) and a summary (JSON).

``make demo`` (:func:`hydravit_edge.bench.pipeline.run_all`) runs it at the end of the whole story;
the battery traces are :mod:`.trace`.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydravit_edge.errors import UsageError

from .trace import DEFAULT_TRACE, THERMAL_STATES, Trace, TraceError, load_trace

__all__ = ["DEFAULT_TRACE", "Trace", "TraceError", "load_trace", "run_demo", "DemoResult", "phases"]


@dataclass
class DemoResult:
    log: list[dict]
    phases: list[dict]
    summary: dict
    timeline: Path
    log_path: Path
    summary_path: Path


def phases(log: Sequence[dict]) -> list[dict]:
    """Consecutive images with the same k and the same limiting reason, summarised."""
    import numpy as np

    out: list[dict] = []
    start = 0
    for i in range(1, len(log) + 1):
        if i == len(log) or (log[i]["k"], log[i]["limit"]) != (log[start]["k"], log[start]["limit"]):
            seg = log[start:i]
            lat = np.asarray([r["latency_ms"] for r in seg])
            out.append({
                "phase": len(out) + 1, "k": seg[0]["k"], "limit": seg[0]["limit"], "reason": seg[0]["reason"],
                "t_start_min": seg[0]["time_s"] / 60.0, "t_end_min": seg[-1]["time_s"] / 60.0,
                "battery_start": seg[0]["percent"], "battery_end": seg[-1]["percent"],
                "charging": sorted({r["charging"] for r in seg}), "thermal": sorted({r["thermal"] for r in seg},
                                                                                    key=THERMAL_STATES.index),
                "images": len(seg), "latency_median_ms": float(np.median(lat)),
                "latency_p90_ms": float(np.percentile(lat, 90)),
                "accuracy": float(np.mean([r["correct"] for r in seg])),
            })
            start = i
    return out


def _phase_table(ph: Sequence[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    for c in ("phase", "trace min", "battery %", "charging", "thermal", "k", "limited by", "images",
              "median ms", "p90 ms", "top-1 %"):
        table.add_column(c, justify="right" if c not in ("charging", "thermal", "limited by") else "left")
    for p in ph:
        chg = "/".join("yes" if c else "no" for c in p["charging"])
        table.add_row(str(p["phase"]), f"{p['t_start_min']:.0f}-{p['t_end_min']:.0f}",
                      f"{p['battery_start']:.0f} -> {p['battery_end']:.0f}", chg, "/".join(p["thermal"]), str(p["k"]),
                      p["limit"], str(p["images"]), f"{p['latency_median_ms']:.3f}", f"{p['latency_p90_ms']:.3f}",
                      f"{100 * p['accuracy']:.1f}")
    return table


def _digits_images(img_size: int):
    """Held-out digits images in [0, 1] (NCHW float32) and labels: the training engineer's fixed split."""
    import numpy as np

    from hydravit_edge.train.data import DigitsDataset

    ds = DigitsDataset("val", img_size)
    return ds.images.numpy().astype(np.float32), ds.targets.numpy().astype(np.int64)


def _resolve_export(export_dir: Optional[Path], run_dir: Optional[Path], checkpoint: Optional[Path],
                    log: Callable[[str], None], exports_root: Path = Path("exports")) -> Path:
    from hydravit_edge.contract.manifest import find_export_dir
    from hydravit_edge.targets import python_runtimes, runtime

    targets = tuple(runtime(b).target for b in python_runtimes())
    if export_dir is not None:
        return export_dir
    if run_dir is not None or checkpoint is not None:
        if checkpoint is None:
            checkpoint = Path(run_dir) / "best.safetensors"
            if not checkpoint.exists():
                raise UsageError(f"--run {run_dir}: no best.safetensors there (train first, or pass --checkpoint)")
        name = (Path(run_dir).name if run_dir is not None else Path(checkpoint).stem) + "-single"
        out = exports_root / name
        if not (out / "manifest.json").exists():
            from .pipeline import _cli

            _cli(["export", "--checkpoint", str(checkpoint), "--target", "onnx", "--mode", "single", "--out", str(out)],
                 log)
        else:
            log(f"using the existing export {out}")
        return out
    d = find_export_dir(exports_root, require_target=targets, mode="single")
    log(f"using the newest single-artifact export [bold]{d}[/bold] (pass --export to choose)")
    return d


def _resolve_lut(lut: Optional[Path], manifest, backend: Optional[str], device_name: str, out: Path,
                 log: Callable[[str], None], reports_dir: Path = Path("reports")):
    from hydravit_edge.contract.lut import Lut, save_lut

    from .lut_build import build_lut
    from .report import export_groups, load_report, manifest_sha256, report_path

    if lut is not None:
        return Lut.load(lut)
    rpath = report_path(reports_dir, device_name)
    report = None
    sha = manifest_sha256(manifest.path)
    if rpath.exists():
        report = load_report(rpath)
        if not any(g.manifest_sha256 == sha for g in export_groups(report)):
            log(f"{rpath} has no rows of this export; measuring it")
            report = None
    if report is None:
        from .harness import BenchSettings, run_bench

        log(f"no report for device '{device_name}' and {manifest.dir}: a quick benchmark first (10 runs per k)")
        outcome = run_bench(manifest.dir, backend_names=[backend] if backend else None, device_name=device_name,
                            settings=BenchSettings(runs=10, warmup=3, batch=1), reports_dir=reports_dir,
                            accuracy=False)
        report, rpath = outcome.report, outcome.report_path
    data = build_lut([(str(rpath), report)], export=sha)  # this export's rows, not another's of the device
    out.mkdir(parents=True, exist_ok=True)
    save_lut(data, out / "lut.json")
    log(f"built the lookup table {out / 'lut.json'} from {rpath}")
    return Lut.check(data, str(out / "lut.json")).with_path(out / "lut.json")


def run_demo(*, battery_trace: Optional[Path] = None, export_dir: Optional[Path] = None,
             run_dir: Optional[Path] = None, checkpoint: Optional[Path] = None, lut: Optional[Path] = None,
             device_name: Optional[str] = None, backend: Optional[str] = None, out: Path = Path("reports/local-demo"),
             passes: int = 2, budget_ms: Optional[float] = None, reports_dir: Path = Path("reports"),
             exports_root: Path = Path("exports"), log: Callable[[str], None] = print,
             show: Optional[Callable[[Any], None]] = None) -> DemoResult:
    """Stream the digits held-out images through the runtime under a battery trace; see the module docstring."""
    import socket

    import numpy as np

    from hydravit_edge.policy import PolicyInput
    from hydravit_edge.profile import macs_for
    from hydravit_edge.config import HydraConfig
    from hydravit_edge.contract.manifest import Manifest
    from hydravit_edge.runtime import Runtime

    from .plots import plot_demo_timeline
    from hydravit_edge.fileio import atomic_write_text

    if passes < 1:
        raise UsageError(f"--passes must be >= 1, got {passes}")
    show = show or log
    trace = load_trace(battery_trace)  # check the trace before any heavy work
    export_dir = _resolve_export(export_dir, run_dir, checkpoint, log, exports_root)
    manifest = Manifest.load(export_dir)
    if manifest.num_classes != 10:
        raise UsageError(f"{export_dir}: the demo streams the digits images; this export's model has "
                         f"{manifest.num_classes} classes (export a model trained with --data digits)")
    device_name = device_name or socket.gethostname()
    table = _resolve_lut(lut, manifest, backend, device_name, Path(out), log, reports_dir)
    rt = Runtime(export_dir, lut=table, device=device_name, backend=backend, budget_ms=budget_ms)
    log(f"runtime: {rt.backend_name} on {rt.file} (k in {rt.heads} at {'/'.join(rt.precisions)}, materialize {rt.materialize}, memory budget "
        f"{rt.memory_budget_mb:.0f} MB), first k ready in {rt.load_ms:.1f} ms; policy: {rt.policy_source}")

    images, labels = _digits_images(manifest.img_size)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(labels)) for _ in range(passes)])
    n = len(order)
    cfg = HydraConfig.from_dict(dict(manifest.config))
    macs = {k: macs_for(cfg, k) for k in rt.heads}
    rows: list[dict] = []
    switches = 0
    t_wall = time.perf_counter()
    for i, j in enumerate(order):
        t = trace.time_s[0] + trace.duration_s * i / max(1, n - 1)
        st = trace.state_at(t)
        power = PolicyInput(battery=st["percent"], charging=st["charging"], low_power=st["low_power"],
                            thermal=st["thermal"])
        pred = rt.predict(images[j], power=power)
        switches += int(pred.switched)
        rows.append({**st, "image": int(j), "label": int(labels[j]), "pred": int(pred.indices[0]),
                     "correct": bool(pred.indices[0] == labels[j]), "k": pred.k, "precision": pred.precision,
                     "latency_ms": pred.latency_ms,
                     "limit": pred.decision.limit, "reason": pred.decision.reason, "switched": pred.switched,
                     "wanted_k": pred.wanted, "waited": pred.waited})
    wall = time.perf_counter() - t_wall

    # the same stream at fixed k, for comparison
    kmax, kmin = max(rt.heads), min(rt.heads)
    fixed = {}
    for k in sorted({kmax, kmin}):
        logits = rt.predict(images[order], heads=k).logits
        fixed[k] = float(np.mean(logits.argmax(-1) == labels[order]))
    ph = phases(rows)
    show(_phase_table(ph, f"battery demo: {n} digits images, trace {trace.path.name} "
                          f"({trace.duration_s / 60:.0f} min) stretched over the stream"))
    for p in ph:
        log(f"  phase {p['phase']} (k={p['k']}): {p['reason']}")
    acc = float(np.mean([r["correct"] for r in rows]))
    mean_macs = float(np.mean([macs[r["k"]] for r in rows]))
    summary = {
        "export": str(manifest.dir), "artifact": rt.file, "backend": rt.backend_name, "device": device_name,
        "policy": rt.policy_source, "trace": str(trace.path), "images": n, "passes": passes,
        "accuracy": acc, "accuracy_fixed_k": {str(k): v for k, v in fixed.items()},
        "mean_macs": mean_macs, "macs_fraction_of_kmax": mean_macs / macs[kmax], "k_switches": switches,
        "materialize": rt.materialize, "memory_budget_mb": rt.memory_budget_mb,
        "builds": rt.loads, "artifact_loads": 1 if rt.materialize == "eager" else 0,
        "waited_calls": sum(bool(r["waited"]) for r in rows), "load_ms": rt.load_ms, "wall_s": wall,
        "latency_median_ms": float(np.median([r["latency_ms"] for r in rows])),
        "phases": ph,
        "precisions": rt.precisions,
        "served": {f"k={k} {p}": c for (k, p), c in sorted(
            collections.Counter((r["k"], r["precision"]) for r in rows).items())},
    }
    log(f"adaptive k: top-1 {100 * acc:.1f}% at {100 * summary['macs_fraction_of_kmax']:.0f}% of the MACs of "
        f"always k={kmax} (always k={kmax}: {100 * fixed[kmax]:.1f}%, always k={kmin}: {100 * fixed[kmin]:.1f}%); "
        f"{switches} k switches; "
        + (f"served {', '.join(f'{o} x{c}' for o, c in summary['served'].items())}; " if len(rt.precisions) > 1 else "")
        + (f"{rt.loads} k built ({rt.materialize}), {summary['waited_calls']} call(s) waited for a build"
           if rt.materialize == "lazy" else "artifact loaded 1x, every k resident (eager)"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timeline = plot_demo_timeline(rows, out / "timeline.png",
                                  title=f"HydraViT battery demo: {rt.backend_name}, {manifest.dir.name}, "
                                        f"top-1 {100 * acc:.1f}%")
    log_path = out / "demo_log.csv"
    fields = ["time_s", "percent", "charging", "thermal", "low_power", "image", "label", "pred", "correct", "k",
              "precision", "latency_ms", "limit", "switched", "wanted_k", "waited"]
    lines = [",".join(fields)] + [",".join(str(r[f]) for f in fields) for r in rows]
    atomic_write_text(log_path, "\n".join(lines) + "\n")
    summary_path = out / "summary.json"
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    log(f"timeline: [bold]{timeline}[/bold]; per-image log: {log_path}; summary: {summary_path}")
    rt.close()
    return DemoResult(rows, ph, summary, timeline, log_path, summary_path)
