"""The ``hydravit-edge`` command line.

Commands live next to what they drive: ``info`` and ``speed`` here, ``train``/``eval`` in
``hydravit_edge.train``, ``export``/``validate`` in ``hydravit_edge.export``,
``bench``/``demo`` in ``hydravit_edge.bench.cli``, ``lut`` in ``hydravit_edge.bench.cli_lut``.  Each of those modules exposes
``register(app)``.  Errors meant for the user (:class:`~hydravit_edge.errors.HydraEdgeError`)
are printed as one line and exit non-zero; usage errors exit with 2.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .console import console, err_console
from .errors import HydraEdgeError, UsageError, missing_dependency

def _flag_type_hidden() -> None:
    """Show no value placeholder for flags in ``--help``.

    typer 0.29's rich help prints a type for every option, ``<bool>`` for flags (``--json``,
    ``--help``) that take no value; its plain formatter already leaves flags without one.
    """
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_hydravit_flags_hidden", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._hydravit_flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flag_type_hidden()

app = typer.Typer(
    name="hydravit-edge",
    help="HydraViT on-device toolkit: train one ViT, export every head count, benchmark, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules that add their commands with ``register(app)``.
COMMAND_MODULES: List[str] = [
    "hydravit_edge.predict_cli",
    "hydravit_edge.train.cli",
    "hydravit_edge.export.cli",
    "hydravit_edge.bench.cli",
    "hydravit_edge.bench.cli_lut",
]


def resolve_model_config(checkpoint: Optional[Path], config_name: str):
    """(config, model or None, source text) from ``--checkpoint`` (a file or a run directory) or a
    named preset (``--model``)."""
    from .checkpoints import load_checkpoint, resolve_checkpoint
    from .config import preset

    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)
        model = load_checkpoint(checkpoint)
        return model.config, model, str(checkpoint)
    return preset(config_name), None, f"config '{config_name}' (random weights)"


def heads_option(spec: Optional[str], available) -> tuple[int, ...]:
    from .heads import parse_heads

    return parse_heads(spec, available) if spec is not None else tuple(available)


@app.command()
def info(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint to describe (any supported format), or a training run directory (its best.safetensors, else last.safetensors)."),
    config_name: str = typer.Option("base", "--model", help="Model preset when no checkpoint is given: base or tiny."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Head counts: '3..12', '3,6,12' or '6' (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per-k profile: parameters, MACs, the paper's RAM figure and weight sizes."""
    from .profile import profile

    config, _, source = resolve_model_config(checkpoint, config_name)
    ks = heads_option(heads, config.heads)
    rows = profile(config, ks)
    if as_json:
        print(json.dumps({"source": source, "config": config.to_dict(), "profile": [r.as_dict() for r in rows]}, indent=2))
        return
    console.print(profile_table(rows, title=f"HydraViT per-k profile: {source}"))
    console.print(
        f"{config.num_heads} heads x {config.head_dim} dims, depth {config.depth}, {config.img_size}px / patch "
        f"{config.patch_size}, {config.num_classes} classes; MACs at batch 1 incl. attention matmuls; "
        "RAM = torchinfo 'Estimated Total Size' (paper convention)."
    )


def profile_table(rows, title: str = "per-k profile") -> Table:
    table = Table(title=title)
    for col in ("k", "embed dim", "params (M)", "MACs (G)", "RAM (MB)", "fp32 weights (MB)", "fp16 weights (MB)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.k), str(r.embed_dim), f"{r.params / 1e6:.2f}", f"{r.macs / 1e9:.3f}",
                      f"{r.ram_mb:.2f}", f"{r.fp32_bytes / 1e6:.1f}", f"{r.fp16_bytes / 1e6:.1f}")
    return table


@app.command()
def speed(
    config_name: str = typer.Option("base", "--model", help="Model preset: base or tiny."),
    heads: Optional[str] = typer.Option("1,3,6,9,12", "--heads", help="Head counts to measure."),
    batch: int = typer.Option(8, "--batch-size", "-b", help="Images per batch."),
    runs: int = typer.Option(5, "--runs", help="Timed runs per measurement (median reported)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Eager PyTorch: sliced ``model(x, heads=k)`` against the extracted ``model.subnet(k)``.

    Each measurement runs in its own process; reports median latency and peak resident memory.
    """
    from .config import preset
    from .speed import compare

    config = preset(config_name)
    ks = heads_option(heads, config.heads)
    if batch < 1 or runs < 1:
        raise UsageError("--batch-size and --runs must be >= 1")
    rows = compare(config_name, ks, batch=batch, runs=runs, threads=threads, progress=not as_json)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"sliced vs extracted subnetwork, eager PyTorch CPU, batch {batch}, config '{config_name}'")
    for col in ("k", "sliced ms", "subnet ms", "ratio", "sliced peak RSS MB", "subnet peak RSS MB", "extra MB", "full weights MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["k"]), f"{r['sliced_ms']:.1f}", f"{r['subnet_ms']:.1f}", f"{r['ratio']:.3f}",
                      f"{r['sliced_peak_mb']:.0f}", f"{r['subnet_peak_mb']:.0f}",
                      f"{r['sliced_peak_mb'] - r['subnet_peak_mb']:.0f}", f"{r['full_weights_mb']:.0f}")
    console.print(table)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # the command package is not part of this install
                continue
            raise
        module.register(app)


_register_commands()


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: runs the app and turns user errors into one-line messages."""
    try:
        app(args=argv, prog_name="hydravit-edge")
    except HydraEdgeError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:  # a command of an extra that is not installed
        err = missing_dependency(exc)
        if err is None:
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(err))}")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
