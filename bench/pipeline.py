"""``make demo`` (``hydravit-edge demo --all``): the whole story on the embedded digits.

train -> eval -> export (single, per-k) -> bench -> lut build -> bench report -> battery demo, each
step the command the README documents.  Training and export run as processes of their own:
training sets torch's thread count and its DataLoader state, and an export imports ExecuTorch's
compiler and coremltools, which slowed eager PyTorch 20x when they shared a process (and the export
keeps its worker pool's lifetime to itself).  The other steps run in this process (``main(args)``):
the benchmark isolates each runtime in worker processes of its own anyway.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from hydravit_edge.errors import HydraEdgeError, UsageError

from .trace import load_trace

__all__ = ["run_all", "runnable_targets", "DEMO_HEADS", "DEMO_PRECISIONS"]

#: steps that get a process of their own (see the module docstring)
ISOLATED = ("train", "export")


def _cli(args: list[str], log: Callable[[str], None], cwd: Optional[Path] = None) -> None:
    """Run one ``hydravit-edge`` step: train and export in a process of their own, the rest here."""
    log(f"[bold cyan]$ hydravit-edge {' '.join(args)}[/bold cyan]")
    t0 = time.perf_counter()
    if args[0] in ISOLATED:
        code = subprocess.run([sys.executable, "-m", "hydravit_edge.cli", *args], cwd=cwd).returncode
    else:
        from hydravit_edge.cli import main

        here = os.getcwd()
        os.chdir(cwd or here)
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:  # typer ends every command with SystemExit
            code = exc.code or 0
        finally:
            os.chdir(here)
    if code != 0:
        raise HydraEdgeError(f"step `hydravit-edge {' '.join(args)}` failed (exit {code})")
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


#: Precisions ``make demo`` exports: int8 next to fp32, for every target that makes both (the int8
#: artifacts are judged on the digits held-out split: top-1 within 1 point of fp32).
DEMO_PRECISIONS = "fp32,int8"


def run_all(*, workdir: Path = Path("."), battery_trace: Optional[Path] = None, force: bool = False,
            passes: int = 2, device_name: str = "local-cpu", runs: int = 20, heads: str = DEMO_HEADS,
            per_k_targets: str = "all", precisions: str = DEMO_PRECISIONS, log: Callable[[str], None] = print,
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
              mode, "--out", str(out), "--precision", precisions, "--force"])  # validated before it is renamed into place
    reports = Path("reports")
    step(["bench", str(exports["single"]), "--device-name", device_name, "--runs", str(runs)])
    step(["bench", str(exports["per-k"]), "--device-name", f"{device_name}-per-k", "--runs", str(runs)])
    demo_out = Path("reports/local-demo")
    lut = demo_out / "lut.json"
    step(["lut", "build", str(reports / f"{device_name}.json"), str(reports / f"{device_name}-per-k.json"),
          "--out", str(lut)])
    step(["lut", "show", str(lut)])  # the (k, precision) frontier per configuration: top-1 and p90 latency
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
