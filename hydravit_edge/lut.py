"""The per-device lookup table (``lut.json``) and the ``hydravit-edge lut`` commands.

``hydravit-edge lut build reports/*.json --out lut.json`` turns benchmark reports into one
table: per device (and per runtime configuration measured on it) the per-k p90 latency and
memory rows, plus a ``policy`` section holding the battery/thermal thresholds as data
(:data:`hydravit_edge.policy.DEFAULT_POLICY`).  The paper's published A100 reference is
added unless ``--no-reference``.  ``hydravit-edge lut pick --device NAME --battery 35`` prints
the k the policy chooses and why; ``lut show`` prints the table.

Schema: ``hydravit_edge/schemas/lut.schema.json``.  Reading a LUT needs neither torch nor
numpy (the Python runtime and the demo apps' ports read the same file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from .errors import HydraEdgeError, UsageError
from .policy import DEFAULT_POLICY, Decision, PolicyConfig, PolicyError, PolicyInput, PolicyState, decide

__all__ = [
    "LUT_FORMAT", "LUT_SCHEMA_VERSION", "LUT_SCHEMA_PATH", "LutError", "UnknownDeviceError", "Lut", "LutDevice",
    "lut_schema", "validate_lut", "load_lut", "save_lut", "build_lut", "device_rows", "match_name", "register",
]

LUT_FORMAT = "hydravit-edge-lut"
LUT_SCHEMA_VERSION = 1
LUT_SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "lut.schema.json"

#: Preference among runtimes when one device has several configurations with the same coverage.
_BACKEND_ORDER = ("onnxruntime", "executorch", "tflite", "coreml", "torch")


class LutError(HydraEdgeError):
    """A lookup table that is missing, unreadable or does not match its schema."""


class UnknownDeviceError(UsageError):
    """The LUT has no entry for the requested device (or backend)."""

    code = "unknown_device"


# =========================================================================== names

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.").lower()


def match_name(wanted: str, names: Iterable[str]) -> Optional[str]:
    """The name in ``names`` that ``wanted`` refers to: exact, else case-insensitive, else by file-name slug."""
    names = list(names)
    if wanted in names:
        return wanted
    for n in names:
        if n.lower() == wanted.lower():
            return n
    for n in names:
        if _slug(n) == _slug(wanted):
            return n
    return None


# =========================================================================== schema

@lru_cache(maxsize=1)
def lut_schema() -> dict:
    return json.loads(LUT_SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_lut(data: Any, where: str = "lut") -> dict:
    """Check ``data`` against the LUT schema and the policy rules; raises :class:`LutError`."""
    import jsonschema

    if not isinstance(data, dict):
        raise LutError(f"{where}: not a lookup table (expected a JSON object)")
    if data.get("format") != LUT_FORMAT:
        if "rows" in data and "device" in data:
            raise LutError(f"{where}: this is a benchmark report, not a lookup table; "
                           f"build one with `hydravit-edge lut build {where} --out lut.json`")
        raise LutError(f"{where}: not a hydravit-edge lookup table (format is {data.get('format')!r}, "
                       f"expected '{LUT_FORMAT}')")
    if data.get("schema_version") != LUT_SCHEMA_VERSION:
        raise LutError(f"{where}: LUT schema_version {data.get('schema_version')!r} is not supported; this "
                       f"hydravit-edge reads {LUT_SCHEMA_VERSION} (rebuild it with `hydravit-edge lut build`)")
    errors = list(jsonschema.Draft202012Validator(lut_schema()).iter_errors(data))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path).lstrip(".")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise LutError(f"{where}: {path or '(top level)'}: {best.message}{more}")
    try:
        PolicyConfig.from_dict(data["policy"])
        for i, dev in enumerate(data["devices"]):
            PolicyConfig.from_dict({**data["policy"], **dev.get("policy", {})})
            ks = [r["k"] for r in dev["rows"]]
            if len(set(ks)) != len(ks):
                raise LutError(f"{where}: devices[{i}] ('{dev['name']}') lists a k twice: {sorted(ks)}")
    except PolicyError as exc:
        raise LutError(f"{where}: {exc}") from None
    return data


# =========================================================================== reading

@dataclass
class LutDevice:
    """One device entry of a LUT with its effective policy."""

    entry: dict
    policy: PolicyConfig

    @property
    def name(self) -> str:
        return self.entry["name"]

    @property
    def backend(self) -> str:
        return self.entry["backend"]

    @property
    def rows(self) -> list[dict]:
        return self.entry["rows"]

    @property
    def ks(self) -> list[int]:
        return sorted(r["k"] for r in self.rows)

    @property
    def latency(self) -> dict[int, float]:
        """k -> p90 ms, what the policy compares with the budget."""
        return {r["k"]: r["p90_ms"] for r in self.rows}

    def row(self, k: int) -> dict:
        for r in self.rows:
            if r["k"] == k:
                return r
        raise UsageError(f"device '{self.name}' has no k={k} in the LUT; it has {self.ks}")

    def decide(self, inputs: PolicyInput, previous_k: Optional[int] = None) -> Decision:
        return decide(self.latency, self.policy, inputs, previous_k)

    def state(self, previous_k: Optional[int] = None) -> PolicyState:
        """A :class:`PolicyState` (remembers the previous k for hysteresis) for this device."""
        return PolicyState(self.latency, self.policy, previous_k)

    def label(self) -> str:
        bits = [self.backend] + [b for b in (self.entry.get("mode"), self.entry.get("compute")) if b]
        return f"{self.name} ({', '.join(bits)}, {self.entry['source']})"


class Lut:
    """A validated lookup table."""

    def __init__(self, data: dict, path: Optional[Path] = None):
        self.path = path
        self.data = validate_lut(data, where=str(path) if path else "lut")
        self.policy = PolicyConfig.from_dict(self.data["policy"])

    @property
    def devices(self) -> list[dict]:
        return self.data["devices"]

    def device_names(self) -> list[str]:
        return list(dict.fromkeys(d["name"] for d in self.devices))

    def device(self, name: str, backend: Optional[str] = None) -> LutDevice:
        """The entry for ``name`` (exact, case-insensitive or file-name match); the first one unless ``backend``.

        Raises :class:`UnknownDeviceError` naming the devices (or backends) the table has.
        """
        where = f"LUT {self.path}" if self.path else "the LUT"
        found = match_name(name, self.device_names())
        if found is None:
            raise UnknownDeviceError(f"{where} has no device '{name}'; it has: {', '.join(self.device_names())}")
        entries = [d for d in self.devices if d["name"] == found]
        if backend is not None:
            picked = [d for d in entries if d["backend"] == backend]
            if not picked:
                raise UnknownDeviceError(f"{where} has no '{backend}' rows for device '{found}'; it has: "
                                         f"{', '.join(sorted({d['backend'] for d in entries}))}")
            entries = picked
        entry = entries[0]
        policy = PolicyConfig.from_dict({**self.data["policy"], **entry.get("policy", {})})
        return LutDevice(entry, policy)


def load_lut(path: str | os.PathLike) -> Lut:
    """Read and validate ``lut.json``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LutError(f"{path}: no such lookup table (build one with `hydravit-edge lut build reports/*.json "
                       f"--out {path}`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LutError(f"{path}: cannot read the lookup table ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LutError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return Lut(data, path)


def save_lut(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate and write a LUT atomically."""
    from hydravit_edge.bench.report import atomic_write_text

    validate_lut(dict(data), where=str(path))
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# =========================================================================== building

def _lut_row(r: Mapping[str, Any]) -> Optional[dict]:
    if (r.get("latency_p90_ms") or 0) > 0:
        p90, basis = r["latency_p90_ms"], "p90"
    elif (r.get("latency_median_ms") or 0) > 0:
        p90, basis = r["latency_median_ms"], "median"
    elif (r.get("throughput_per_s") or 0) > 0:
        p90, basis = 1000.0 / r["throughput_per_s"], "throughput"
    else:
        return None
    acc = r.get("accuracy") or {}
    return {
        "k": r["k"], "p90_ms": round(float(p90), 6), "latency_basis": basis,
        "median_ms": r.get("latency_median_ms"), "min_ms": r.get("latency_min_ms"),
        "throughput_per_s": r.get("throughput_per_s"), "throughput_batch": r.get("throughput_batch"),
        "load_ms": r.get("load_ms"), "switch_ms": r.get("switch_ms"), "peak_rss_mb": r.get("peak_rss_mb"),
        "paper_ram_mb": r.get("paper_ram_mb"), "file_bytes": r.get("file_bytes"), "params": r.get("params"),
        "macs": r.get("macs"), "top1": acc.get("top1"), "artifact": r.get("artifact"), "entry": r.get("entry"),
    }


def device_rows(report: Mapping[str, Any], backends: Optional[Sequence[str]] = None) -> list[dict]:
    """The LUT device entries of one report: one per runtime configuration, the preferred first.

    Preferred: the configuration covering the most k, then a single artifact over per-k files,
    then by runtime (onnxruntime, executorch, tflite, coreml, torch).
    """
    from hydravit_edge.bench.report import group_key

    groups: dict[tuple, list[dict]] = {}
    for r in report["rows"]:
        if backends and r["backend"] not in backends:
            continue
        groups.setdefault(group_key(r), []).append(r)
    entries = []
    dev = report["device"]
    for (backend, mode, compute, precision), rows in groups.items():
        lut_rows = sorted((x for x in map(_lut_row, rows) if x is not None), key=lambda x: x["k"])
        if not lut_rows:
            continue
        artifacts = {x["artifact"] for x in lut_rows}
        entries.append({
            "name": dev["name"], "description": dev.get("description") or dev.get("cpu") or dev.get("model"),
            "source": report["source"], "backend": backend, "mode": mode, "compute": compute, "precision": precision,
            "artifact": artifacts.pop() if len(artifacts) == 1 else None,
            "manifest_sha256": report.get("manifest_sha256"), "rows": lut_rows,
        })

    def order(e):
        b = _BACKEND_ORDER.index(e["backend"]) if e["backend"] in _BACKEND_ORDER else len(_BACKEND_ORDER)
        return (-len(e["rows"]), e["mode"] != "single", b, str(e["compute"]), str(e["precision"]))

    return sorted(entries, key=order)


def build_lut(reports: Sequence[tuple[Optional[str], Mapping[str, Any]]], *,
              policy: Optional[Mapping[str, Any]] = None, include_reference: bool = True,
              backends: Optional[Sequence[str]] = None, created: Optional[str] = None) -> dict:
    """A LUT dict from ``(path, report)`` pairs (validated reports).

    ``policy`` overrides fields of :data:`DEFAULT_POLICY`.  The shipped published A100 reference
    is appended when ``include_reference`` and no report of that device was given.  Two reports
    of the same device are an error.
    """
    from hydravit_edge.bench.report import REFERENCE_REPORT_PATH, load_reference, utc_now

    items = list(reports)
    names: dict[str, str] = {}
    for path, rep in items:
        name = rep["device"]["name"]
        other = match_name(name, names)
        if other is not None:
            raise UsageError(f"two reports for device '{name}': {names[other]} and {path}; keep one per device")
        names[name] = str(path)
    if include_reference:
        ref = load_reference()
        if match_name(ref["device"]["name"], names) is None:
            items.append((str(REFERENCE_REPORT_PATH), ref))
    pol = PolicyConfig.from_dict(policy).to_dict()
    devices, sources = [], []
    for path, rep in items:
        entries = device_rows(rep, backends)
        text = json.dumps(rep, sort_keys=True).encode()
        sources.append({"path": str(path) if path else None, "device": rep["device"]["name"], "source": rep["source"],
                        "sha256": hashlib.sha256(text).hexdigest(), "created": rep.get("created")})
        devices.extend(entries)
    if not devices:
        what = f" for backend(s) {', '.join(backends)}" if backends else ""
        raise UsageError(f"the reports have no rows with a latency or throughput{what}; nothing to put in a LUT")
    try:
        from importlib.metadata import version

        tool_version = version("hydravit-edge")
    except Exception:  # pragma: no cover
        tool_version = "unknown"
    data = {
        "format": LUT_FORMAT, "schema_version": LUT_SCHEMA_VERSION, "created": created or utc_now(),
        "tool": {"name": "hydravit-edge", "version": tool_version},
        "sources": sources, "policy": pol, "devices": devices,
    }
    return validate_lut(data, where="built LUT")


# =========================================================================== CLI

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

    from .console import console

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
        no_reference: bool = typer.Option(False, "--no-reference", help="Leave out the paper's published A100 reference."),
    ) -> None:
        """Build lut.json from benchmark reports: per-device per-k rows and the policy thresholds."""
        from hydravit_edge.bench.report import load_reports

        loaded = load_reports(reports)
        if not loaded:
            raise UsageError(f"no report files in {', '.join(map(str, reports))}")
        try:
            overrides = _policy_overrides(budget_ms, no_budget, hysteresis, policy_file)
            data = build_lut(loaded, policy=overrides, include_reference=not no_reference, backends=backend or None)
        except PolicyError as exc:
            raise UsageError(str(exc)) from None
        save_lut(data, out)
        _print_lut(Lut(data, out), console, Table)
        console.print(f"wrote {out} ({len(data['devices'])} device entr{'y' if len(data['devices']) == 1 else 'ies'})",
                      soft_wrap=True)

    @lut_app.command("show")
    def show_cmd(lut: Path = typer.Argument(Path("lut.json"), help="The lookup table.")) -> None:
        """Print a LUT: per device, p90 latency per k, and its policy."""
        _print_lut(load_lut(lut), console, Table)

    @lut_app.command("pick")
    def pick_cmd(
        device: Optional[str] = typer.Option(None, "--device", "-d", help="Device name in the LUT (default: its first device)."),
        battery: Optional[str] = typer.Option(None, "--battery", help="Battery percent 0..100 or 'unknown' (default: unknown, or this machine's with --from-system)."),
        charging: Optional[bool] = typer.Option(None, "--charging/--discharging", help="Charging state (default: not charging)."),
        low_power: Optional[bool] = typer.Option(None, "--low-power/--no-low-power", help="Low-power / power-save mode."),
        thermal: Optional[str] = typer.Option(None, "--thermal", help="Thermal state: nominal, fair, serious or critical."),
        budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Latency budget in ms (default: the LUT's)."),
        previous_k: Optional[int] = typer.Option(None, "--previous-k", help="k in use now (applies hysteresis)."),
        backend: Optional[str] = typer.Option(None, "--backend", help="Use this runtime's rows of the device."),
        lut: Path = typer.Option(Path("lut.json"), "--lut", help="The lookup table."),
        from_system: bool = typer.Option(False, "--from-system", help="Read battery, charging, power-save and thermal state of this machine (options still override)."),
        as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    ) -> None:
        """Print the k the policy picks for a device and power state, and why."""
        table = load_lut(lut)
        name = device if device is not None else table.device_names()[0]
        dev = table.device(name, backend)
        state = None
        if from_system:
            from .battery import read_power_state

            state = read_power_state()
        inputs = PolicyInput(
            battery=battery if battery is not None else (state.battery_percent if state else None),
            charging=charging if charging is not None else bool(state and state.charging),
            low_power=low_power if low_power is not None else bool(state and state.low_power),
            thermal=thermal if thermal is not None else (state.thermal if state else None),
            budget_ms=budget_ms,
        )
        decision = dev.decide(inputs, previous_k)
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
        console.print(f"[bold green]k = {decision.k}[/bold green]  (limited by: {decision.limit}; p90 "
                      f"{decision.p90_ms:.3g} ms)", soft_wrap=True)
        console.print(f"why: {decision.reason}", soft_wrap=True)


def _print_lut(table: Lut, console, Table) -> None:
    ks = sorted({r["k"] for d in table.devices for r in d["rows"]})
    t = Table(title=f"p90 latency (ms) per k{f': {table.path}' if table.path else ''}")
    t.add_column("k", justify="right")
    for d in table.devices:
        runtime = "/".join(str(x) for x in (d["backend"], d.get("mode"), d.get("compute")) if x)
        t.add_column(f"{d['name']}\n{runtime}\n({d['source']})", justify="right")
    for k in ks:
        cells = []
        for d in table.devices:
            r = next((r for r in d["rows"] if r["k"] == k), None)
            cells.append("" if r is None else f"{r['p90_ms']:.3g}" + ("*" if r["latency_basis"] == "throughput" else ""))
        t.add_row(str(k), *cells)
    console.print(t)
    p = table.policy
    bands = ", ".join(f"{b.name} >= {b.min_percent:g}%: k <= {b.max_k_fraction:g} x max" for b in p.battery_bands)
    thermal = ", ".join(f"{s} {f:g}" for s, f in p.thermal_max_k_fraction.items())
    budget = "none" if p.budget_ms is None else f"{p.budget_ms:g} ms"
    console.print(f"policy: budget {budget}; bands {bands}; hysteresis {p.hysteresis_percent:g}%; charging "
                  f"{p.charging_max_k_fraction:g}; low-power {p.low_power_max_k_fraction:g}; thermal {thermal}; "
                  f"unknown battery = {p.unknown_battery_percent:g}%", soft_wrap=True)
    if any(r["latency_basis"] == "throughput" for d in table.devices for r in d["rows"]):
        console.print("* per-image time 1000/throughput from published figures (no latency published)")
