"""Tables and PNG plots comparing device reports, and the battery demo's timeline.

Rows without a batch-1 latency (the paper's published A100 figures are throughput at batch
512) are shown as milliseconds per image, ``1000 / throughput``, and labelled so.  A device
whose report holds rows of several exports gets one series per export and configuration,
labelled with the export (:func:`~hydravit_edge.bench.report.export_groups`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .report import export_groups, group_key

__all__ = ["comparison_tables", "report_plots", "plot_latency_vs_k", "plot_accuracy_vs_latency",
           "plot_demo_timeline", "series"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _row_ms(row: dict, metric: str = "median") -> tuple[float | None, str]:
    """(milliseconds, basis) of a row: batch-1 latency, else 1000/throughput."""
    key = "latency_p90_ms" if metric == "p90" else "latency_median_ms"
    if row.get(key):
        return float(row[key]), metric
    if row.get("throughput_per_s"):
        return 1000.0 / float(row["throughput_per_s"]), f"1000/throughput @{row.get('throughput_batch')}"
    return None, "none"


def series(loaded: Sequence[tuple[Any, dict]], metric: str = "median") -> list[dict]:
    """One series per (device, export, backend, mode, compute, precision): label, source, points [(k, ms, row)].

    The label names the export (its directory's name, or its manifest hash's start) where the
    device's report holds rows of more than one.
    """
    out = []
    for _, report in loaded:
        exports = export_groups(report)
        groups: dict[tuple, list[dict]] = {}
        for g in exports:
            for row in g.rows:
                groups.setdefault((g.label,) + group_key(row), []).append(row)
        for (export, backend, mode, compute, precision, materialize), rows in groups.items():
            pts = []
            basis = None
            for r in sorted(rows, key=lambda r: r["k"]):
                ms, b = _row_ms(r, metric)
                if ms is not None:
                    pts.append((r["k"], ms, r))
                    basis = b
            if not pts:
                continue
            bits = [backend] + [x for x in (mode, materialize, compute, precision if precision != "fp32" else None) if x]
            name = report["device"]["name"] + (f" {export}" if len(exports) > 1 else "")
            label = f"{name} ({', '.join(bits)})"
            if report["source"] == "published":
                label += " [published]"
            out.append({"label": label, "device": report["device"]["name"], "source": report["source"],
                        "export": export, "backend": backend, "mode": mode, "basis": basis, "points": pts,
                        "precision": precision or "fp32"})
    return out


def comparison_tables(loaded: Sequence[tuple[Any, dict]], metric: str = "median") -> list:
    """Rich tables: the devices, then per k the latency (ms) of every device configuration side by side."""
    from rich.table import Table

    devices = Table(title="devices")
    for c in ("device", "source", "cpu / gpu", "cores", "os", "rows", "exports", "created"):
        devices.add_column(c)
    for path, r in loaded:
        d = r["device"]
        hw = " / ".join(x for x in (d.get("cpu"), d.get("gpu")) if x) or d.get("model") or "-"
        exports = export_groups(r)
        names = ", ".join(f"{g.label} ({len(g.rows)})" for g in exports) if len(exports) > 1 else "1"
        devices.add_row(d["name"], r["source"], hw, str(d.get("cpu_cores") or "-"), str(d.get("os") or "-"),
                        str(len(r["rows"])), names, str(r.get("created", "-")))
    ss = series(loaded, metric)
    ks = sorted({k for s in ss for k, _, _ in s["points"]})
    tables = [devices,
              _per_k_table(f"latency per k, ms ({metric} at batch 1; published rows: 1000/throughput)", ss, ks,
                           lambda ms, r: f"{ms:.3f}"),
              _per_k_table("per k: throughput (img/s @batch), peak RSS (MB), top-1 (%)", ss, ks, _extra_cell)]
    if any(r.get("rss_anon_mb") is not None or r.get("cold_switch_ms") is not None
           for s in ss for _, _, r in s["points"]):
        tables.append(_per_k_table("per k: steady memory with k active, anon + file-backed MB; switch to k, "
                                   "cold / warm ms", ss, ks, _memory_cell))
    return tables


def _per_k_table(title: str, ss: Sequence[dict], ks: Sequence[int], cell: Callable[[float, dict], str]):
    """A row per k, a column per series; ``cell(ms, row)`` fills a cell, '-' where the series lacks k."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("k", justify="right")
    for s in ss:
        table.add_column(s["label"], justify="right")
    for k in ks:
        cells = []
        for s in ss:
            hit = [(ms, r) for kk, ms, r in s["points"] if kk == k]
            cells.append((cell(*hit[0]) or "-") if hit else "-")
        table.add_row(str(k), *cells)
    return table


def _extra_cell(ms: float, r: dict) -> str:
    bits = []
    if r.get("throughput_per_s"):
        bits.append(f"{r['throughput_per_s']:.0f}/s@{r.get('throughput_batch')}")
    if r.get("peak_rss_mb"):
        bits.append(f"{r['peak_rss_mb']:.0f}MB")
    acc = (r.get("accuracy") or {}).get("top1")
    if acc is not None:
        bits.append(f"{100 * acc:.1f}%")
    return " ".join(bits)


def _memory_cell(ms: float, r: dict) -> str:
    bits = []
    if r.get("rss_anon_mb") is not None:
        bits.append(f"{r['rss_anon_mb']:.0f}+{r.get('rss_file_mb') or 0:.0f}MB")
    cold, warm = r.get("cold_switch_ms"), r.get("switch_ms")
    if cold is not None or warm is not None:
        bits.append(f"{'-' if cold is None else format(cold, '.0f')}/{'-' if warm is None else format(warm, '.1f')}ms")
    return " ".join(bits)


def plot_latency_vs_k(loaded: Sequence[tuple[Any, dict]], path: Path, metric: str = "median") -> Path:
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for s in series(loaded, metric):
        ks = [k for k, _, _ in s["points"]]
        ms = [m for _, m, _ in s["points"]]
        style = "--" if s["source"] == "published" else "-"
        label = s["label"] + ("" if s["basis"] in ("median", "p90") else f"  ({s['basis']})")
        ax.plot(ks, ms, style, marker="o", label=label)
    ax.set_xlabel("heads k")
    ax.set_ylabel(f"latency per image, ms ({metric}, log scale)")
    ax.set_yscale("log")
    ax.set_title("HydraViT latency vs k per device")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: accuracy-vs-latency markers per precision
_PRECISION_MARKERS = {"fp32": "o", "fp16": "^", "int8": "s", "int8-static": "D"}


def plot_accuracy_vs_latency(loaded: Sequence[tuple[Any, dict]], path: Path, metric: str = "median") -> Path | None:
    """One panel per dataset: top-1 against ms per image, one line per device configuration and
    precision (marker per precision: o fp32, ^ fp16, s int8, D int8-static)."""
    by_ds: dict[str, list] = {}
    for s in series(loaded, metric):
        pts = [(ms, r["accuracy"]["top1"], k) for k, ms, r in s["points"] if r.get("accuracy")]
        if pts:
            ds = s["points"][0][2].get("accuracy", {}).get("dataset") or next(
                r["accuracy"]["dataset"] for _, _, r in s["points"] if r.get("accuracy"))
            by_ds.setdefault(ds, []).append((s, pts))
    if not by_ds:
        return None
    plt = _mpl()
    fig, axes = plt.subplots(1, len(by_ds), figsize=(6.5 * len(by_ds), 5), squeeze=False)
    for ax, (ds, items) in zip(axes[0], sorted(by_ds.items())):
        for s, pts in items:
            style = "--" if s["source"] == "published" else "-"
            marker = _PRECISION_MARKERS.get(s.get("precision") or "fp32", "o")
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, marker=marker, label=s["label"])
            for ms, acc, k in pts:
                ax.annotate(str(k), (ms, 100 * acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (log)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"accuracy vs latency: {ds}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_plots(loaded: Sequence[tuple[Any, dict]], out_dir: Path, metric: str = "median") -> list[Path]:
    out_dir = Path(out_dir)
    written = [plot_latency_vs_k(loaded, out_dir / "latency_vs_k.png", metric)]
    acc = plot_accuracy_vs_latency(loaded, out_dir / "accuracy_vs_latency.png", metric)
    if acc is not None:
        written.append(acc)
    return written


def plot_demo_timeline(log: Sequence[dict], path: Path, title: str = "battery-aware HydraViT") -> Path:
    """Four panels over trace time: battery (charging shaded), k, latency per image, running accuracy."""
    plt = _mpl()
    t = [r["time_s"] / 60.0 for r in log]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [r["percent"] for r in log], color="tab:green")
    charging = [r["charging"] for r in log]
    ymax = 100
    ax.fill_between(t, 0, ymax, where=charging, color="tab:green", alpha=0.12, step="post", label="charging")
    hot = [r["thermal"] in ("serious", "critical") for r in log]
    if any(hot):
        ax.fill_between(t, 0, ymax, where=hot, color="tab:red", alpha=0.12, step="post", label="thermal serious/critical")
    ax.set_ylabel("battery %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower left")
    axes[1].step(t, [r["k"] for r in log], where="post", color="tab:blue")
    axes[1].set_ylabel("heads k")
    axes[2].plot(t, [r["latency_ms"] for r in log], ".", markersize=2, color="tab:orange")
    axes[2].set_ylabel("latency ms")
    axes[2].set_yscale("log")
    correct = 0
    running = []
    for i, r in enumerate(log, 1):
        correct += int(r["correct"])
        running.append(100.0 * correct / i)
    axes[3].plot(t, running, color="tab:purple")
    axes[3].set_ylabel("running top-1 %")
    axes[3].set_xlabel("trace time (min)")
    for a in axes:
        a.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
