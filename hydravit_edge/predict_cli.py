"""``hydravit-edge predict``: classify image files with an exported model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .console import console, err_console
from .errors import UsageError

__all__ = ["register"]

#: above this many images the results come as one table (a row per image) instead of a table each
TABLE_EACH_MAX = 20


def predict_cmd(
    export_dir: Path = typer.Argument(..., help="Export directory (its manifest.json)."),
    images: List[Path] = typer.Argument(..., help="Image files or folders (walked recursively)."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Run subnetwork k (default: the policy picks k "
                                        "from battery and thermal state)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime, executorch or tflite "
                                          "(default: the first the export and this machine have)."),
    top: int = typer.Option(5, "--top", help="Labels to show per image."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per runtime call."),
    lut: Optional[Path] = typer.Option(None, "--lut", help="Lookup table for the policy (default: lut.json "
                                       "when it exists)."),
    device_name: Optional[str] = typer.Option(None, "--device-name", help="Device entry of the lookup table."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Classify images: the model's evaluation transform, then the runtime; unreadable files are skipped."""
    from rich.progress import Progress

    from .predict import predict_files
    from .runtime import Runtime

    if lut is None and Path("lut.json").is_file():
        lut = Path("lut.json")
    rt = Runtime(export_dir, backend=backend, lut=str(lut) if lut else None, device=device_name)
    try:
        if as_json:
            run = predict_files(rt, images, heads=heads, top=top, batch_size=batch_size)
        else:
            with Progress(console=err_console, transient=True) as bar:
                task = bar.add_task("classifying", total=None)
                run = predict_files(rt, images, heads=heads, top=top, batch_size=batch_size,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        rt.close()
    if as_json:
        print(json.dumps(dict(run.as_dict(), export=str(export_dir), backend=rt.backend_name), indent=2))
    else:
        _print(run, top)
    for path, why in run.errors:
        err_console.print(f"[yellow]skipped[/yellow] {path}: {why}")
    if not run.results:
        raise UsageError("no image could be read" + (f" ({len(run.errors)} skipped)" if run.errors else ""))


def _print(run, top: int) -> None:
    from rich.table import Table

    if len(run.results) <= TABLE_EACH_MAX:
        for r in run.results:
            t = Table(title=f"{r.path}  (k={r.k}, {r.latency_ms:.2f} ms)", title_justify="left")
            t.add_column("label")
            t.add_column("index", justify="right")
            t.add_column("probability", justify="right")
            for label, i, p in r.top:
                t.add_row(label, str(i), f"{p:.4f}")
            console.print(t)
    else:
        from .predict import iter_rows

        t = Table(title=f"{len(run.results)} images")
        t.add_column("image", overflow="fold")
        t.add_column("k", justify="right")
        for i in range(len(run.results[0].top)):
            t.add_column(f"top-{i + 1} (p)")
        t.add_column("ms/image", justify="right")
        for row in iter_rows(run):
            t.add_row(*row)
        console.print(t)
    line = f"{len(run.results)} image(s) in {run.seconds:.2f} s"
    if run.top1 is not None:
        scored = sum(r.expected is not None for r in run.results)
        line += f"; top-1 against the folder names: {run.top1:.2f} % of {scored}"
    if run.errors:
        line += f"; {len(run.errors)} unreadable file(s) skipped"
    console.print(line)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
