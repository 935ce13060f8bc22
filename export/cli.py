"""``hydravit-edge export`` and ``hydravit-edge validate`` (``export-bench`` is registered by
:mod:`hydravit_edge.bench.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hydravit_edge.console import console, err_console, human_bytes


def results_table(report, title: str) -> Table:
    """Rich table target x k x check: status, max abs error, top-1 agreement, tolerance, artifact size."""
    table = Table(title=title)
    for col, just in (("target", "left"), ("k", "right"), ("check", "left"), ("status", "left"),
                      ("max abs err / tol", "right"), ("top-1", "right"), ("file", "left"), ("size", "right")):
        table.add_column(col, justify=just, no_wrap=col in ("file", "size", "k"))
    style = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}
    for r in report.results:
        size = report.sizes.get((r.target, r.k))
        err = "" if r.max_abs_err is None else f"{r.max_abs_err:.1e}"
        if r.tolerance is not None and err and not (r.details or {}).get("precision"):
            err += f" / {r.tolerance:.0e}"
        table.add_row(
            r.target, str(r.k), r.check, f"[{style[r.status.value]}]{r.summary()}[/]", err,
            "" if r.top1_agreement is None else f"{100 * r.top1_agreement:.0f}% of {r.batch}",
            Path((r.details or {}).get("file") or report.files.get((r.target, r.k), "")).name,
            "" if size is None or (r.details or {}).get("file") else human_bytes(size),
        )
    return table


def precision_table(report, title: str) -> Optional[Table]:
    """fp32 / fp16 / int8 side by side per target and k: the figure each precision is judged by
    (fp32: max abs error; quantized: top-1 on the held-out images and its drop from fp32, or the
    top-1 agreement with fp32 without labels) and its status.  None with a single precision."""
    from hydravit_edge.precision import precision_names, split_variant_key

    cells: dict[tuple[str, int], dict[str, str]] = {}
    rules: dict[str, str] = {}
    for r in report.results:
        if r.check not in ("runtime", "structure"):
            continue
        target, prec = split_variant_key(r.target)
        d = r.details or {}
        if r.status.value in ("skipped", "error"):
            text = f"[yellow]{r.status.value}[/]"
        elif prec == "fp32":
            text = "" if r.max_abs_err is None else f"err {r.max_abs_err:.1e}"
        elif "top1" in d:
            text = f"{100 * d['top1']:.1f}% ({round(-d['top1_drop_points'], 1) + 0.0:+.1f})"
        elif r.top1_agreement is not None:
            text = f"agree {100 * r.top1_agreement:.0f}%, err {r.max_abs_err:.2g}"
        else:
            text = ""
        mark = "[green]ok[/]" if r.status.value == "passed" else ("" if r.status.value == "skipped" else "[bold red]FAIL[/]")
        cells.setdefault((target, r.k), {})[prec] = f"{text} {mark}".strip()
        if d.get("rule"):
            rules.setdefault(prec, d["rule"])
    precs = [p for p in precision_names() if any(p in c for c in cells.values())]
    if len(precs) < 2:
        return None
    table = Table(title=title)
    table.add_column("target")
    table.add_column("k", justify="right")
    for p in precs:
        rule = "max abs error <= 1e-4" if p == "fp32" else rules.get(p, "")
        table.add_column(f"{p}\n[dim]{rule}[/]", justify="right")
    for (target, k), row in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        table.add_row(target, str(k), *[row.get(p, "") for p in precs])
    return table


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        checkpoint: Optional[Path] = typer.Option(
            None, "--checkpoint", "-c",
            help="Checkpoint file, or a training run directory (its best.safetensors, else last.safetensors) "
                 "(default: the newest run under runs/)."),
        heads: Optional[str] = typer.Option(None, "--heads", help="Head counts: '3..12', '3,6,12' or '6' (default: all)."),
        target: str = typer.Option("all", "--target", "-t",
                                   help="onnx, executorch, coreml, tflite, a comma list, or all (every target whose "
                                        "dependencies are installed)."),
        mode: str = typer.Option("single", "--mode", help="single: one artifact holding every k; per-k: one file per k."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: exports/<run>-<target>-<mode>)."),
        force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
        runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where to look for runs without --checkpoint."),
        no_validate: bool = typer.Option(False, "--no-validate", help="Skip validation (the manifest says 'not run')."),
        batch: int = typer.Option(8, "--batch-size", "-b", help="Validation batch size (fixed random inputs)."),
        jobs: Optional[int] = typer.Option(
            None, "--jobs", "-j",
            help="Worker processes for the per-k export work (default: one per core as memory allows; for "
                 "targets other than ExecuTorch only for models of 20M+ parameters)."),
        precision: str = typer.Option(
            "fp32", "--precision", "-p",
            help="fp32, fp16, int8 (int8 weights per output channel, activations quantized per call), "
                 "int8-static (activation ranges from calibration images), or a comma list: each precision "
                 "gets its own folder and manifest entry (onnx, onnx-int8, ...)."),
        calibration: Optional[str] = typer.Option(
            None, "--calibration",
            help="Calibration images for int8-static: 'digits' or an ImageFolder root (its train/ split is "
                 "sampled). Default: the data the checkpoint was trained on."),
        calibration_size: int = typer.Option(64, "--calibration-size", help="Calibration images to sample."),
        data: Optional[str] = typer.Option(
            None, "--data",
            help="Labelled data quantized artifacts are judged on ('digits' or an ImageFolder root with val/); "
                 "default: the data the checkpoint was trained on."),
    ) -> None:
        """Export HydraViT for on-device runtimes, validate every artifact against PyTorch, write manifest.json."""
        from hydravit_edge.checkpoints import resolve_checkpoint
        from hydravit_edge.errors import UsageError

        from .api import export_model, find_checkpoint
        from .errors import ValidationError

        if checkpoint is None:
            checkpoint = find_checkpoint(runs_dir)
            err_console.print(f"using checkpoint [bold]{checkpoint}[/] (newest run under {runs_dir}/)")
        elif not checkpoint.exists():
            raise UsageError(f"{checkpoint}: no such checkpoint file or run directory")
        else:
            checkpoint = resolve_checkpoint(checkpoint)  # a run directory: its best (else last) checkpoint
        try:
            report = export_model(checkpoint=checkpoint, heads=heads, targets=target, mode=mode, out=out, force=force,
                                  validate=not no_validate, batch=batch, show_progress=True, jobs=jobs,
                                  precisions=precision, calibration=calibration, calibration_size=calibration_size,
                                  data=data)
        except ValidationError as exc:
            rep = getattr(exc, "report", None)
            if rep is not None:
                console.print(results_table(rep, f"validation of {rep.directory}"))
            raise
        for name, why in report.skipped_targets.items():
            err_console.print(f"[yellow]skipped target {name}:[/] {why}")
        if report.results:
            console.print(results_table(report, f"validation vs PyTorch: {report.out_dir}"))
            side = precision_table(report, "precisions side by side (vs PyTorch fp32)")
            if side is not None:
                console.print(side)
        for name, t in report.manifest["targets"].items():
            total = sum(f["bytes"] for f in t["files"])
            notes = ("; " + "; ".join(t["notes"])) if t["notes"] else ""
            console.print(f"{name}: {t['mode']}, {len(t['files'])} file(s), {human_bytes(total)}, "
                          f"exported in {t['export_seconds']:.1f} s ({t['export_jobs']} job(s)){notes}")
        console.print(f"wrote [bold]{report.out_dir}[/] (manifest.json, reference.npz)")

    @app.command("validate")
    def validate_cmd(
        directory: Path = typer.Argument(..., help="Export directory (holding manifest.json)."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="Only these targets (comma list)."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Re-check an export: file sizes and sha256 against the manifest, and every artifact in its own runtime."""
        from .validation import validate_dir

        targets = [t.strip() for t in target.split(",")] if target else None
        report = validate_dir(directory, targets, show_progress=not as_json)
        if as_json:
            print(json.dumps({"directory": str(directory), "passed": report.passed,
                              "results": [r.to_dict() for r in report.results]}, indent=2))
        else:
            console.print(results_table(report, f"validation of {directory}"))
            side = precision_table(report, "precisions side by side (vs PyTorch fp32)")
            if side is not None:
                console.print(side)
        report.raise_for_failures()
        if not as_json:
            console.print(f"[green]{directory}: every check passed[/] (skipped checks are listed as skipped)")
