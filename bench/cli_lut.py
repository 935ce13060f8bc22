"""``hydravit-edge lut``: build the lookup table from reports, show it, and pick (k, precision) for a power state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from hydravit_edge.contract.lut import Lut, row_precision, save_lut
from hydravit_edge.errors import UsageError
from hydravit_edge.policy import DEFAULT_POLICY, PolicyError, PolicyInput
from hydravit_edge.policy_options import precision_rank

__all__ = ["register"]


def _policy_overrides(budget_ms: Optional[float], no_budget: bool, hysteresis: Optional[float],
                      policy_file: Optional[Path]) -> dict:
    over: dict[str, Any] = {}
    if policy_file is not None:
        try:
            over.update(json.loads(policy_file.read_text()))
        except FileNotFoundError:
            raise UsageError(f"{policy_file}: no such policy file") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{policy_file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(over, dict):
            raise UsageError(f"{policy_file}: a policy file is a JSON object of policy fields")
    if budget_ms is not None and no_budget:
        raise UsageError("--budget-ms and --no-budget contradict each other")
    if budget_ms is not None:
        if budget_ms <= 0:
            raise UsageError(f"--budget-ms must be > 0, got {budget_ms:g}")
        over["budget_ms"] = budget_ms
    if no_budget:
        over["budget_ms"] = None
    if hysteresis is not None:
        over["hysteresis_percent"] = hysteresis
    return over


def register(app) -> None:
    """Add the ``lut`` sub-app (``build``, ``pick``, ``show``) to the main typer app."""
    import typer
    from rich.table import Table

    from hydravit_edge.console import console

    lut_app = typer.Typer(help="Per-device k lookup table and the battery policy.", no_args_is_help=True)
    app.add_typer(lut_app, name="lut")

    @lut_app.command("build")
    def build_cmd(
        reports: list[Path] = typer.Argument(..., help="Benchmark reports (reports/*.json) or folders of them."),
        out: Path = typer.Option(Path("lut.json"), "--out", "-o", help="Where to write the table."),
        backend: Optional[list[str]] = typer.Option(None, "--backend", help="Keep only rows of this runtime (repeatable)."),
        budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help=f"Default latency budget in ms (default {DEFAULT_POLICY['budget_ms']:g})."),
        no_budget: bool = typer.Option(False, "--no-budget", help="No latency budget: battery/thermal caps only."),
        hysteresis: Optional[float] = typer.Option(None, "--hysteresis", help=f"Hysteresis in battery percent (default {DEFAULT_POLICY['hysteresis_percent']:g})."),
        policy_file: Optional[Path] = typer.Option(None, "--policy", help="JSON file with policy fields to override."),
        no_reference: bool = typer.Option(False, "--no-reference", help="Leave out the paper's published A100 reference (it is only added for a model of its geometry: 12 heads x 64, depth 12, 224 px, patch 16)."),
        export: Optional[str] = typer.Option(None, "--export", help="Use the rows of this export (its directory, its name, or the start of its manifest sha256) where a report holds several; default: per device and runtime, the newest measured."),
        memory_budget_mb: Optional[float] = typer.Option(None, "--memory-budget-mb", help="Most resident memory the runtime's materialised k may take together on the measured devices (default there: a quarter of the device's memory)."),
    ) -> None:
        """Build lut.json from benchmark reports: per-device per-k rows and the policy thresholds."""
        from .lut_build import build_lut
        from .report import load_reports, manifest_sha256

        loaded = load_reports(reports)
        if not loaded:
            raise UsageError(f"no report files in {', '.join(map(str, reports))}")
        if export is not None and (Path(export) / "manifest.json").is_file():
            export = manifest_sha256(export)  # an export directory here: its manifest identifies it exactly
        try:
            overrides = _policy_overrides(budget_ms, no_budget, hysteresis, policy_file)
            data = build_lut(loaded, policy=overrides, include_reference=not no_reference, backends=backend or None,
                             export=export, memory_budget_mb=memory_budget_mb, on_note=lambda line: console.print(f"note: {line}", soft_wrap=True,
                                                                              markup=False))
        except PolicyError as exc:
            raise UsageError(str(exc)) from None
        save_lut(data, out)
        _print_lut(Lut.check(data, str(out)).with_path(out), console, Table)
        console.print(f"wrote {out} ({len(data['devices'])} device entr{'y' if len(data['devices']) == 1 else 'ies'})",
                      soft_wrap=True)

    @lut_app.command("show")
    def show_cmd(lut: Path = typer.Argument(Path("lut.json"), help="The lookup table.")) -> None:
        """Print a LUT: per device, p90 latency per (k, precision) with top-1 and the frontier mark, and its policy."""
        _print_lut(Lut.load(lut), console, Table)

    @lut_app.command("pick")
    def pick_cmd(
        device: Optional[str] = typer.Option(None, "--device-name", help="Device name in the LUT (default: its first device)."),
        battery: Optional[str] = typer.Option(None, "--battery", help="Battery percent 0..100 or 'unknown' (default: unknown, or this machine's with --from-system)."),
        charging: Optional[bool] = typer.Option(None, "--charging/--discharging", help="Charging state (default: not charging)."),
        low_power: Optional[bool] = typer.Option(None, "--low-power/--no-low-power", help="Low-power / power-save mode."),
        thermal: Optional[str] = typer.Option(None, "--thermal", help="Thermal state: nominal, fair, serious or critical."),
        budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Latency budget in ms (default: the LUT's)."),
        previous_k: Optional[int] = typer.Option(None, "--previous-k", help="k in use now (applies hysteresis)."),
        previous_precision: Optional[str] = typer.Option(None, "--previous-precision", help="Precision of the k in use now (default: fp32 where the device has it at that k, else its first)."),
        backend: Optional[str] = typer.Option(None, "--backend", help="Use this runtime's rows of the device."),
        lut: Path = typer.Option(Path("lut.json"), "--lut", help="The lookup table."),
        from_system: bool = typer.Option(False, "--from-system", help="Read battery, charging, power-save and thermal state of this machine (options still override)."),
        as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    ) -> None:
        """Print the (k, precision) the policy picks for a device and power state, and why."""
        table = Lut.load(lut)
        name = device if device is not None else table.device_names()[0]
        dev = table.device(name, backend)
        state = None
        if from_system:
            from hydravit_edge.battery import read_power_state

            state = read_power_state()
        inputs = PolicyInput(
            battery=battery if battery is not None else (state.battery_percent if state else None),
            charging=charging if charging is not None else bool(state and state.charging),
            low_power=low_power if low_power is not None else bool(state and state.low_power),
            thermal=thermal if thermal is not None else (state.thermal if state else None),
            budget_ms=budget_ms,
        )
        if previous_precision is not None and previous_k is None:
            raise UsageError("--previous-precision needs --previous-k")
        previous = previous_k if previous_precision is None else f"{previous_k}@{previous_precision}"
        decision = dev.decide(inputs, previous)
        if as_json:
            print(json.dumps({"device": dev.name, "backend": dev.backend, **decision.as_dict()}, indent=2))
            return
        inp = inputs.checked()
        batt = "unknown" if inp.battery is None else f"{inp.battery:g}%"
        flags = ", ".join(x for x in ("charging" if inp.charging else "not charging",
                                       "low-power" if inp.low_power else None,
                                       f"thermal {inp.thermal}" if inp.thermal else None) if x)
        budget = "none" if decision.budget_ms is None else f"{decision.budget_ms:g} ms"
        console.print(f"device [bold]{dev.label()}[/bold]; battery {batt} ({flags}); budget {budget}", soft_wrap=True)
        top1 = "" if decision.top1 is None else f"; top-1 {100 * decision.top1:.1f}%"
        console.print(f"[bold green]k = {decision.k}, precision {decision.precision}[/bold green]  (limited by: "
                      f"{decision.limit}; p90 {decision.p90_ms:.3g} ms{top1})", soft_wrap=True)
        console.print(f"why: {decision.reason}", soft_wrap=True)


def _print_lut(table: Lut, console, Table) -> None:
    rows = {(r.k, row_precision(d, r)) for d in table.devices for r in d.rows}
    t = Table(title=f"p90 latency (ms) per k and precision{f': {table.path}' if table.path else ''}")
    t.add_column("k", justify="right")
    t.add_column("precision")
    for d in table.devices:
        runtime = "/".join(str(x) for x in (d.backend, d.mode, d.compute) if x)
        t.add_column(f"{d.name}\n{runtime}\n({d.source})", justify="right")
    for k, precision in sorted(rows, key=lambda kp: (kp[0], precision_rank(kp[1]))):
        cells = []
        for d in table.devices:
            r = next((r for r in d.rows if r.k == k and row_precision(d, r) == precision), None)
            cells.append("" if r is None else _cell(r))
        t.add_row(str(k), precision, *cells)
    console.print(t)
    p = table.policy_config
    bands = ", ".join(f"{b.name} >= {b.min_percent:g}%: k <= {b.max_k_fraction:g} x max" for b in p.battery_bands)
    thermal = ", ".join(f"{s} {f:g}" for s, f in p.thermal_max_k_fraction.items())
    budget = "none" if p.budget_ms is None else f"{p.budget_ms:g} ms"
    console.print(f"policy: budget {budget}; bands {bands}; hysteresis {p.hysteresis_percent:g}%; charging "
                  f"{p.charging_max_k_fraction:g}; low-power {p.low_power_max_k_fraction:g}; thermal {thermal}; "
                  f"unknown battery = {p.unknown_battery_percent:g}%", soft_wrap=True)
    if any(r.latency_basis == "throughput" for d in table.devices for r in d.rows):
        console.print("* per-image time 1000/throughput from published figures (no latency published)")
    if any(r.frontier is not None for d in table.devices for r in d.rows):
        console.print("f: on the entry's accuracy/latency frontier (a policy candidate); (x): dominated, another row "
                      "is at least as fast and as accurate, not a candidate", markup=False)
    if any(r.top1 is not None for d in table.devices for r in d.rows):
        console.print("@x%: top-1 accuracy", markup=False)


def _cell(r) -> str:
    text = f"{r.p90_ms:.3g}" + ("*" if r.latency_basis == "throughput" else "")
    if r.top1 is not None:
        text += f" @{100 * r.top1:.1f}%"
    if r.frontier is False:
        return f"({text})"
    return text + (" f" if r.frontier else "")
