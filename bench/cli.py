"""``hydravit-edge bench`` (run / report / import / android) and ``hydravit-edge demo``.

``hydravit-edge export-bench`` (:mod:`.export_bench`) measures the export side: sizes, export times
and latencies of single vs per-k artifacts.

``bench`` is a command group whose default command is ``run``: ``hydravit-edge bench``,
``hydravit-edge bench exports/x --runs 50`` and ``hydravit-edge bench run exports/x`` all
benchmark; ``bench report``, ``bench import FILE`` and ``bench android`` are subcommands.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from hydravit_edge.console import console, err_console
from hydravit_edge.errors import HydraEdgeError, UsageError

DEFAULT_REPORTS = Path("reports")
DEFAULT_EXPORTS = Path("exports")


class DefaultRunGroup(TyperGroup):
    """A group that runs ``run`` when the first argument is not one of its subcommands."""

    default_command = "run"

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help",)):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def rows_table(rows, title: str):
    from rich.table import Table

    table = Table(title=title)
    cols = ("runtime", "precision", "k", "median ms", "p90 ms", "min ms", "img/s @B", "load ms", "switch ms", "cold switch ms",
            "anon MB", "file-backed MB", "peak RSS MB", "switch peak MB", "file MB", "GMACs", "params M",
            "paper RAM MB", "top-1 %")
    for c in cols:
        table.add_column(c, justify="left" if c == "runtime" else "right")
    for r in rows:
        acc = (r.get("accuracy") or {}).get("top1")
        table.add_row(
            " ".join(x for x in (r["backend"], r.get("mode"), r.get("materialize")) if x), r.get("precision") or "fp32",
            str(r["k"]),
            _fmt(r.get("latency_median_ms"), ".3f"),
            _fmt(r.get("latency_p90_ms"), ".3f"), _fmt(r.get("latency_min_ms"), ".3f"),
            (f"{r['throughput_per_s']:.1f} @{r.get('throughput_batch')}" if r.get("throughput_per_s") else "-"),
            _fmt(r.get("load_ms"), ".1f"), _fmt(r.get("switch_ms"), ".3f"), _fmt(r.get("cold_switch_ms"), ".1f"),
            _fmt(r.get("rss_anon_mb"), ".0f"), _fmt(r.get("rss_file_mb"), ".0f"), _fmt(r.get("peak_rss_mb"), ".0f"),
            _fmt(r.get("peak_switch_rss_mb"), ".0f"),
            _fmt(r["file_bytes"] / 1e6 if r.get("file_bytes") is not None else None, ".2f"),
            _fmt(r["macs"] / 1e9 if r.get("macs") is not None else None, ".3f"),
            _fmt(r["params"] / 1e6 if r.get("params") is not None else None, ".2f"),
            _fmt(r.get("paper_ram_mb"), ".2f"), _fmt(acc * 100 if acc is not None else None, ".1f"),
        )
    return table


def print_wide(renderable) -> None:
    """Tables keep their columns when the output is a pipe or a file (rich assumes 80 columns there)."""
    if console.is_terminal:
        console.print(renderable)
        return
    from rich.console import Console

    Console(width=max(console.width, 160), file=console.file, highlight=False).print(renderable)


def _parse_heads(spec: Optional[str]):
    if not spec:
        return None
    from hydravit_edge.heads import parse_heads

    return parse_heads(spec)


def bench_run(
    export_dir: Optional[Path] = typer.Argument(None, help="Export directory (manifest.json). Default: the newest under exports/."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", help="onnxruntime | executorch | tflite | torch (repeatable). Default: every runtime whose artifacts the export holds."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda: eager PyTorch with the paper's reference protocol (CUDA events, batch 512)."),
    device_name: Optional[str] = typer.Option(None, "--device-name", help="Name of this device in reports and the LUT (default: host name)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own default)."),
    batch: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Throughput batch size (default 8; 512 on CUDA as in the paper)."),
    runs: int = typer.Option(30, "--runs", help="Timed batch-1 runs per k (after warm-up)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed warm-up runs per k."),
    rounds: int = typer.Option(1, "--rounds", help="Sweeps over every k, each in a fresh process, interleaved; statistics pool all rounds' samples (steadier medians on a shared machine)."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Only these k: '3..12', '3,12' (default: all in the export)."),
    reports_dir: Path = typer.Option(DEFAULT_REPORTS, "--reports-dir", help="Where reports/<device>.json is written."),
    exports_root: Path = typer.Option(DEFAULT_EXPORTS, "--exports-root", help="Where to look for the newest export."),
    config_name: Optional[str] = typer.Option(None, "--model", help="--backend torch without an export: model preset (base or tiny)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="--backend torch: weights (default: random; latency does not depend on them)."),
    accuracy: Optional[bool] = typer.Option(None, "--accuracy/--no-accuracy", help="Measure top-1 on the held-out split of the dataset the model was trained on (default: when that data is here; never on another dataset)."),
) -> None:
    """Benchmark every k of every artifact in an export; writes reports/DEVICE.json after every row."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .harness import CUDA_BATCH, DEFAULT_BATCH, BenchSettings, run_bench

    settings = BenchSettings(runs=runs, warmup=warmup, batch=batch or (CUDA_BATCH if device == "cuda" else DEFAULT_BATCH),
                             threads=threads, device=device, rounds=rounds)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False)
    state: dict = {}

    def on_event(kind, payload):
        if kind == "plan":
            d, jobs, skipped = payload
            if d is not None:
                how = "" if export_dir is not None else " (the newest export; pass DIR to choose another)"
                console.print(f"benchmarking [bold]{d}[/bold]{how}")
            for s in skipped:
                console.print(f"[yellow]skipped[/yellow] {s}")
            state["task"] = progress.add_task("starting", total=len(jobs))
            progress.start()
        elif kind == "note":
            console.print(f"note: {payload}")
        elif kind == "start":
            progress.update(state["task"], description=payload.label)
        elif kind == "row":
            job, row, path = payload
            state["report"] = path
            progress.advance(state["task"])
            progress.console.print(f"  {job.label}: median {row['latency_median_ms']:.3f} ms, p90 "
                                   f"{row['latency_p90_ms']:.3f} ms, {row['throughput_per_s']:.1f} img/s @"
                                   f"{row['throughput_batch']}")
        elif kind == "fail":
            job, msg = payload
            progress.advance(state["task"])
            progress.console.print(f"  [red]{job.label} failed:[/red] {msg}")

    try:
        outcome = run_bench(export_dir, backend_names=backend, device_name=device_name, settings=settings,
                            heads=_parse_heads(heads), reports_dir=reports_dir, exports_root=exports_root,
                            config_name=config_name, checkpoint=checkpoint, accuracy=accuracy, on_event=on_event)
    except KeyboardInterrupt:
        progress.stop()
        where = state.get("report")
        err_console.print("[yellow]interrupted[/yellow]: the rows finished so far are kept"
                          + (f" in {where}" if where else ""))
        raise
    finally:
        progress.stop()
    print_wide(rows_table(outcome.rows, f"{outcome.report['device']['name']}: {settings.protocol()}"))
    console.print(f"report: [bold]{outcome.report_path}[/bold] ({len(outcome.report['rows'])} rows)")
    if outcome.failures:
        raise HydraEdgeError(f"{len(outcome.failures)} of {len(outcome.failures) + len(outcome.rows)} measurements "
                             f"failed (first: {outcome.failures[0][0].label}: {outcome.failures[0][1]}); the finished "
                             f"rows are in {outcome.report_path}")


def bench_report(
    reports_dir: Path = typer.Option(DEFAULT_REPORTS, "--reports-dir", help="Folder of device reports."),
    files: Optional[List[Path]] = typer.Argument(None, help="Report files (default: every reports/*.json)."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots", help="Where the PNG plots go (default: REPORTS_DIR/plots)."),
    metric: str = typer.Option("median", "--metric", help="Latency column: median or p90."),
) -> None:
    """All devices side by side (rich tables) and PNG plots, with the paper's published A100 reference where the model matches."""
    from . import plots
    from .reference import reference_if_matching
    from .report import REFERENCE_REPORT_PATH, export_groups, find_reports, load_reference, load_reports

    if metric not in ("median", "p90"):
        raise UsageError("--metric must be median or p90")
    paths = list(files) if files else find_reports(reports_dir)
    loaded = load_reports(paths)
    names = {r["device"]["name"] for _, r in loaded}
    if load_reference()["device"]["name"] not in names:
        models = [g.model for _, r in loaded if r["source"] == "measured" for g in export_groups(r)]
        ref, why = reference_if_matching(models)  # only next to a model of the reference's geometry
        if ref is not None:
            loaded.append((REFERENCE_REPORT_PATH, ref))
        else:
            console.print(f"note: {why}", soft_wrap=True, markup=False)
    if not any(r["source"] == "measured" for _, r in loaded):
        console.print(f"[yellow]no measured reports in {reports_dir}/ yet[/yellow] (run `hydravit-edge bench`); "
                      "showing the published reference")
    for table in plots.comparison_tables(loaded, metric):
        print_wide(table)
    out = plots_dir or (reports_dir / "plots")
    written = plots.report_plots(loaded, out, metric)
    for p in written:
        console.print(f"plot: [bold]{p}[/bold]")


def bench_android(
    serial: Optional[str] = typer.Option(None, "--serial", "-s", help="adb serial of the device (needed when several are attached)."),
    reports_dir: Path = typer.Option(DEFAULT_REPORTS, "--reports-dir", help="Where the imported report is stored."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds to wait for the benchmark to finish."),
    package: Optional[str] = typer.Option(None, "--package", help="Application id of the demo app (default org.hydravit.edge.demo)."),
    activity: Optional[str] = typer.Option(None, "--activity", help="Activity that runs the benchmark (default .MainActivity)."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Timed runs per k (passed to the app)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warm-up runs per k (passed to the app)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime or executorch (passed to the app; default: the app's)."),
) -> None:
    """Run the Android demo's benchmark mode over adb, pull its report and import it."""
    from . import android

    if backend is not None and backend not in ("onnxruntime", "executorch"):
        raise UsageError(f"--backend must be onnxruntime or executorch for the Android app, got {backend!r}")
    result = android.run_android_benchmark(
        serial=serial, reports_dir=reports_dir, timeout=timeout, package=package or android.DEFAULT_PACKAGE,
        activity=activity or android.DEFAULT_ACTIVITY, runs=runs, warmup=warmup, backend=backend, log=console.print)
    console.print(f"imported [bold]{result.device}[/bold] -> {result.path} ({result.rows} rows)")


def bench_import(
    file: Path = typer.Argument(..., help="Report JSON written by a demo app or another machine."),
    reports_dir: Path = typer.Option(DEFAULT_REPORTS, "--reports-dir", help="Where device reports are stored."),
    replace: bool = typer.Option(False, "--replace", help="Replace the stored report of this device instead of merging rows."),
) -> None:
    """Validate a benchmark report and store it as reports/DEVICE.json."""
    from .report_import import import_report

    result = import_report(file, reports_dir, merge=not replace)
    console.print(f"imported [bold]{result.device}[/bold] -> {result.path} ({result.rows} rows; "
                  f"{result.replaced} replaced, {result.kept} kept, {result.dropped} dropped)", soft_wrap=True)
    if result.note:
        console.print(f"note: {result.note}", soft_wrap=True)


def demo_cmd(
    battery_trace: Optional[Path] = typer.Option(None, "--battery-trace", help="CSV: time_s, percent, charging, thermal (default: the shipped drain-then-charge trace)."),
    export_dir: Optional[Path] = typer.Option(None, "--export", help="Export directory with a single artifact (default: the newest single export)."),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Training run to export first when no export is given."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint to export first when no export is given."),
    lut: Optional[Path] = typer.Option(None, "--lut", help="Lookup table (default: built from reports/DEVICE.json, measured first if missing)."),
    device_name: Optional[str] = typer.Option(None, "--device-name", help="Device name in the LUT (default: host name)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime | executorch | tflite (default: the first the export holds)."),
    out: Path = typer.Option(Path("reports/local-demo"), "--out", help="Where the timeline PNG and the log go."),
    passes: int = typer.Option(2, "--passes", help="Times the digits test images are streamed."),
    budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Latency budget overriding the LUT's policy."),
    all_steps: bool = typer.Option(False, "--all", help="The whole story: train, export, validate, bench, lut build, demo (make demo)."),
    workdir: Path = typer.Option(Path("."), "--workdir", help="--all: where runs/, exports/, reports/ go."),
    force: bool = typer.Option(False, "--force", help="--all: train a new run and re-export even when outputs exist."),
    heads: Optional[str] = typer.Option(None, "--heads", help="--all: head counts to export (default 2,3,6,12)."),
    per_k_targets: str = typer.Option("all", "--per-k-targets", help="--all: targets also exported per-k: 'all' (every runnable one, default) or a list such as 'onnx' (faster)."),
) -> None:
    """Stream the digits test images through the runtime while a battery trace drives k."""
    from . import demo

    if all_steps:
        from . import pipeline

        pipeline.run_all(workdir=workdir, battery_trace=battery_trace, force=force, passes=passes,
                         heads=heads or pipeline.DEMO_HEADS, per_k_targets=per_k_targets, log=console.print,
                         show=print_wide)
        return
    demo.run_demo(battery_trace=battery_trace, export_dir=export_dir, run_dir=run_dir, checkpoint=checkpoint,
                  lut=lut, device_name=device_name, backend=backend, out=out, passes=passes, budget_ms=budget_ms,
                  log=console.print, show=print_wide)


def export_bench_cmd(
    config_name: str = typer.Option("base", "--model", help="Model preset (random weights): base or tiny."),
    heads: str = typer.Option("3..12", "--heads", help="Head counts."),
    latency_heads: Optional[str] = typer.Option(None, "--latency-heads", help="Subset of --heads to time (default: all)."),
    target: str = typer.Option("onnx,executorch", "--target", "-t", help="Targets to measure (onnx, executorch)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Directory for the exported files (default: a temp dir)."),
    keep: bool = typer.Option(False, "--keep", help="Keep --work after the run."),
    reuse: bool = typer.Option(False, "--reuse", help="Reuse exports an earlier run left in --work."),
    runs: int = typer.Option(10, "--runs", help="Timed runs per latency measurement."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds (single, per-k, ... alternate)."),
    threads: int = typer.Option(0, "--threads", help="Runtime threads (0: runtime default)."),
    deit: bool = typer.Option(True, "--deit/--no-deit", help="Compare per-k ONNX k=3/6/12 with timm DeiT-tiny/small/base."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG plot of latency per k."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Export worker processes (default: as `export`)."),
) -> None:
    """Sizes, export times and latencies: single artifact vs per-k files (and per-k ONNX vs timm DeiT)."""
    from .export_bench import run_bench

    run_bench(config_name=config_name, heads=heads, targets=target, work=work, keep=keep, runs=runs,
              rounds=rounds, threads=threads, deit=deit, json_path=as_json, plot_path=plot, latency_heads=latency_heads,
              reuse=reuse, jobs=jobs)


def register(app: typer.Typer) -> None:
    bench_app = typer.Typer(
        cls=DefaultRunGroup,
        help="Benchmark exported artifacts per k (default command: run), compare devices, import phone reports.",
        add_completion=False,
    )
    bench_app.command("run")(bench_run)
    bench_app.command("report")(bench_report)
    bench_app.command("android")(bench_android)
    bench_app.command("import")(bench_import)
    app.add_typer(bench_app, name="bench")
    app.command("demo")(demo_cmd)
    app.command("export-bench")(export_bench_cmd)
