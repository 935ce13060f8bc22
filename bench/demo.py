"""The battery demo (``hydravit-edge demo``) and the end-to-end story (``hydravit-edge demo --all``, ``make demo``).

:func:`run_demo` streams the digits held-out images through :class:`hydravit_edge.runtime.Runtime`
while a battery trace (CSV: ``time_s, percent, charging, thermal``, optionally ``low_power``)
drives the policy: the trace is stretched over the stream, every image is one ``predict``
call with the trace's state at that moment, and k changes without reloading the artifact.
It prints per-phase k, latency and accuracy, and writes a PNG timeline, the per-image log
(CSV) and a summary (JSON).

:func:`run_all` runs every step as its own ``hydravit-edge`` process: train on digits, export
single and per-k artifacts for every target this machine can run, validate, bench on this
CPU, build the LUT, run the battery demo, and print where each output is.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydravit_edge.errors import HydraEdgeError, UsageError

__all__ = ["DEFAULT_TRACE", "Trace", "TraceError", "load_trace", "run_demo", "run_all", "DemoResult", "phases"]

DEFAULT_TRACE = Path(__file__).resolve().parent / "data" / "battery_trace_default.csv"
THERMAL_STATES = ("nominal", "fair", "serious", "critical")
REQUIRED = ("time_s", "percent", "charging", "thermal")
_ALIASES = {"time": "time_s", "t": "time_s", "battery": "percent", "battery_percent": "percent", "level": "percent"}
_TRUE = {"1", "true", "yes", "y", "on", "charging"}
_FALSE = {"0", "false", "no", "n", "off", "discharging", ""}


class TraceError(UsageError):
    """A battery trace that cannot be used (message names the file, line and column)."""


@dataclass
class Trace:
    path: Path
    time_s: list[float]
    percent: list[float]
    charging: list[bool]
    thermal: list[str]
    low_power: list[bool]

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def duration_s(self) -> float:
        return self.time_s[-1] - self.time_s[0]

    def state_at(self, t: float) -> dict:
        """Battery interpolated linearly; charging/thermal/low-power from the last row at or before ``t``."""
        ts = self.time_s
        if t <= ts[0]:
            i = 0
            pct = self.percent[0]
        elif t >= ts[-1]:
            i = len(ts) - 1
            pct = self.percent[-1]
        else:
            import bisect

            i = bisect.bisect_right(ts, t) - 1
            t0, t1 = ts[i], ts[i + 1]
            w = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            pct = self.percent[i] + w * (self.percent[i + 1] - self.percent[i])
        return {"time_s": t, "percent": round(pct, 1), "charging": self.charging[i], "thermal": self.thermal[i],
                "low_power": self.low_power[i]}


def _bool(text: str, where: str, column: str) -> bool:
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise TraceError(f"{where}: {column} must be 0/1 or true/false, got {text!r}")


def load_trace(path: Optional[str | os.PathLike] = None) -> Trace:
    """Read and check a battery trace CSV (header row required)."""
    path = Path(path) if path is not None else DEFAULT_TRACE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such battery trace file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a CSV file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the battery trace ({exc})") from None
    reader = csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{path}: empty battery trace; expected a header row {','.join(REQUIRED)}") from None
    cols = [_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in header]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; a battery trace needs a header row "
                         f"{','.join(REQUIRED)} (optional: low_power); found: {','.join(h.strip() for h in header)}")
    idx = {c: cols.index(c) for c in cols}
    t, pct, chg, th, lp = [], [], [], [], []
    for n, row in enumerate(reader, start=2):
        where = f"{path}: row {n}"
        if len(row) < len(header):
            raise TraceError(f"{where}: {len(row)} values for {len(header)} columns")
        try:
            ti = float(row[idx["time_s"]])
            p = float(row[idx["percent"]])
        except ValueError:
            raise TraceError(f"{where}: time_s and percent must be numbers, got {row[idx['time_s']]!r}, "
                             f"{row[idx['percent']]!r}") from None
        if not math.isfinite(ti) or not math.isfinite(p):
            raise TraceError(f"{where}: time_s and percent must be finite numbers")
        if not 0.0 <= p <= 100.0:
            raise TraceError(f"{where}: battery percent {p:g} is outside 0..100")
        if t and ti < t[-1]:
            raise TraceError(f"{where}: time_s {ti:g} goes back in time (previous row {t[-1]:g}); rows must be in time order")
        thermal = row[idx["thermal"]].strip().lower() or "nominal"
        if thermal not in THERMAL_STATES:
            raise TraceError(f"{where}: thermal must be one of {', '.join(THERMAL_STATES)}, got {row[idx['thermal']]!r}")
        t.append(ti)
        pct.append(p)
        chg.append(_bool(row[idx["charging"]], where, "charging"))
        th.append(thermal)
        lp.append(_bool(row[idx["low_power"]], where, "low_power") if "low_power" in idx else False)
    if len(t) < 2:
        raise TraceError(f"{path}: a battery trace needs at least 2 rows, found {len(t)}")
    if t[-1] == t[0]:
        raise TraceError(f"{path}: all rows have the same time_s; the trace must span some time")
    return Trace(path, t, pct, chg, th, lp)


# =========================================================================== the demo

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
    log(f"runtime: {rt.backend_name} on {rt.file} (k in {rt.heads}, materialize {rt.materialize}, memory budget "
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
                     "correct": bool(pred.indices[0] == labels[j]), "k": pred.k, "latency_ms": pred.latency_ms,
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
    }
    log(f"adaptive k: top-1 {100 * acc:.1f}% at {100 * summary['macs_fraction_of_kmax']:.0f}% of the MACs of "
        f"always k={kmax} (always k={kmax}: {100 * fixed[kmax]:.1f}%, always k={kmin}: {100 * fixed[kmin]:.1f}%); "
        f"{switches} k switches; "
        + (f"{rt.loads} k built ({rt.materialize}), {summary['waited_calls']} call(s) waited for a build"
           if rt.materialize == "lazy" else "artifact loaded 1x, every k resident (eager)"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timeline = plot_demo_timeline(rows, out / "timeline.png",
                                  title=f"HydraViT battery demo: {rt.backend_name}, {manifest.dir.name}, "
                                        f"top-1 {100 * acc:.1f}%")
    log_path = out / "demo_log.csv"
    fields = ["time_s", "percent", "charging", "thermal", "low_power", "image", "label", "pred", "correct", "k",
              "latency_ms", "limit", "switched", "wanted_k", "waited"]
    lines = [",".join(fields)] + [",".join(str(r[f]) for f in fields) for r in rows]
    atomic_write_text(log_path, "\n".join(lines) + "\n")
    summary_path = out / "summary.json"
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    log(f"timeline: [bold]{timeline}[/bold]; per-image log: {log_path}; summary: {summary_path}")
    rt.close()
    return DemoResult(rows, ph, summary, timeline, log_path, summary_path)


# =========================================================================== make demo

def _cli(args: list[str], log: Callable[[str], None], cwd: Optional[Path] = None) -> None:
    """Run one ``hydravit-edge`` step in its own process (output streams through)."""
    cmd = [sys.executable, "-m", "hydravit_edge.cli", *args]
    log(f"[bold cyan]$ hydravit-edge {' '.join(args)}[/bold cyan]")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd)
    if proc.returncode != 0:
        raise HydraEdgeError(f"step `hydravit-edge {' '.join(args)}` failed (exit {proc.returncode})")
    log(f"[dim]   ({time.perf_counter() - t0:.0f} s)[/dim]")


def runnable_targets() -> list[str]:
    """Export targets whose exporter and runtime both work on this machine (and that ``bench`` runs)."""
    from hydravit_edge.engines import engine_for_target
    from hydravit_edge.export.registry import exporters

    out = []
    for e in exporters():
        b = engine_for_target(e.name)
        if (e.missing("export") is None and e.runtime_skip_reason() is None and b is not None and b.info.bench
                and b.missing() is None):
            out.append(e.name)
    return out


#: Head counts ``make demo`` exports: the smallest useful k and the DeiT-tiny/small/base widths, which are
#: what the default policy picks (critical -> smallest, low battery -> k_max/4, medium -> k_max/2, high -> k_max).
DEMO_HEADS = "2,3,6,12"


def run_all(*, workdir: Path = Path("."), battery_trace: Optional[Path] = None, force: bool = False,
            passes: int = 2, device_name: str = "local-cpu", runs: int = 20, heads: str = DEMO_HEADS,
            per_k_targets: str = "all", log: Callable[[str], None] = print,
            show: Optional[Callable[[Any], None]] = None) -> dict:
    """train -> export (single, per-k) -> validate -> bench -> lut build -> demo; returns the output paths.

    Single artifacts and per-k files are exported for every target this machine can export and
    run (``per_k_targets="onnx"`` limits the per-k files to ONNX, two minutes less on 2 cores).
    After training, ``eval --profile`` prints the per-k accuracy next to each k's parameters,
    MACs and RAM.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if battery_trace is not None:
        load_trace(battery_trace)  # a bad trace fails now, not after ten minutes
        battery_trace = Path(battery_trace).resolve()
    t0 = time.perf_counter()
    run_dir = Path("runs/digits")
    if force and (workdir / run_dir).exists():  # a new run; the old one is kept
        run_dir = Path(f"runs/digits-{time.strftime('%Y%m%d-%H%M%S')}")
    ckpt = run_dir / "best.safetensors"
    step = lambda args: _cli(args, log, cwd=workdir)  # noqa: E731
    if (workdir / ckpt).exists():
        log(f"using the trained model {workdir / ckpt} (pass --force to train a new one)")
    elif (workdir / run_dir).exists():
        step(["train", "--resume", str(run_dir)])  # an interrupted run continues where it stopped
    else:
        step(["train", "--data", "digits", "--out", str(run_dir)])
    step(["eval", str(run_dir), "--data", "digits", "--profile"])  # per-k accuracy next to the profile
    targets = runnable_targets()
    log(f"targets this machine can export and run: {', '.join(targets)}")
    if per_k_targets == "all":
        per_k = targets
    else:
        per_k = [t for t in per_k_targets.split(",") if t]
        unknown = [t for t in per_k if t not in targets]
        if unknown:
            raise UsageError(f"per-k targets {unknown} cannot be exported and run here (runnable: {', '.join(targets)})")
    exports = {}
    for mode, mode_targets in (("single", targets), ("per-k", per_k)):
        out = Path("exports") / f"digits-{mode}"
        exports[mode] = out
        if (workdir / out / "manifest.json").exists() and not force:
            log(f"using the existing export {workdir / out} (pass --force to re-export)")
            step(["validate", str(out)])
            continue
        step(["export", "--checkpoint", str(ckpt), "--heads", heads, "--target", ",".join(mode_targets), "--mode",
              mode, "--out", str(out), "--force"])  # validated against PyTorch before it is renamed into place
    reports = Path("reports")
    step(["bench", str(exports["single"]), "--device-name", device_name, "--runs", str(runs)])
    step(["bench", str(exports["per-k"]), "--device-name", f"{device_name}-per-k", "--runs", str(runs)])
    demo_out = Path("reports/local-demo")
    lut = demo_out / "lut.json"
    step(["lut", "build", str(reports / f"{device_name}.json"), str(reports / f"{device_name}-per-k.json"),
          "--out", str(lut)])
    step(["bench", "report", "--reports-dir", str(reports), "--plots", str(demo_out / "plots")])
    demo_args = ["demo", "--export", str(exports["single"]), "--lut", str(lut), "--device-name", device_name,
                 "--out", str(demo_out), "--passes", str(passes)]
    if battery_trace is not None:
        demo_args += ["--battery-trace", str(battery_trace)]
    step(demo_args)
    outputs = {
        "trained model": workdir / ckpt,
        "training metrics": workdir / run_dir,
        "single-artifact export": workdir / exports["single"],
        "per-k export": workdir / exports["per-k"],
        "bench report (this CPU)": workdir / reports / f"{device_name}.json",
        "bench report (per-k files)": workdir / reports / f"{device_name}-per-k.json",
        "lookup table": workdir / lut,
        "comparison plots": workdir / demo_out / "plots",
        "battery demo timeline": workdir / demo_out / "timeline.png",
        "battery demo log": workdir / demo_out / "demo_log.csv",
        "battery demo summary": workdir / demo_out / "summary.json",
    }
    from rich.table import Table

    table = Table(title=f"make demo: done in {time.perf_counter() - t0:.0f} s")
    table.add_column("output")
    table.add_column("where")
    for name, p in outputs.items():
        table.add_row(name, str(p))
    (show or log)(table)
    return outputs
