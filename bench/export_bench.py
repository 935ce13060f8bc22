"""Export benchmark: sizes, export times and latencies of single vs per-k artifacts.

``hydravit-edge export-bench`` (or ``python -m hydravit_edge.bench.export_bench``) exports a
HydraViT with random weights (default: the 12-head base config, k=3..12) in both modes for
ONNX and ExecuTorch and reports

* file sizes: the single artifact vs the per-k file of the largest k, and vs the sum of the
  per-k files;
* export time per target and mode;
* latency at batch 1 on CPU, each measurement in a fresh process of the runtime
  (:mod:`hydravit_edge.bench.export_latency`, through :mod:`hydravit_edge.engines`), single vs
  per-k at every k, interleaved over ``rounds`` (the order alternates each round) so that a
  shared machine's drift hits both; the ratio per k is the median over rounds of the per-round ratio;
* for ONNX: the per-k k=3/6/12 graphs vs timm's DeiT-tiny/small/base exported the same way
  (only for the 12 x 64 base config), and the runtime-slice design the single graph avoids
  (weights sliced on every run instead of folded at session creation);
* session memory (resident MB after loading) of the single artifact vs the per-k file.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from hydravit_edge.console import console, human_bytes
from hydravit_edge.export.hashing import path_size
from hydravit_edge.export.parallel import ExportPool, auto_jobs
from hydravit_edge.export.records import ArtifactRecord
from hydravit_edge.export.registry import get_exporter

from .export_latency import Server, alternate, measure, median_of, median_ratio, summary

DEIT = {3: "deit_tiny_patch16_224", 6: "deit_small_patch16_224", 12: "deit_base_patch16_224"}


def runtime_slice_variant(single: Path, dest: Path) -> Path:
    """The ONNX single graph with every weight slice made to depend on the ``heads`` input.

    Same graph, but onnxruntime can no longer fold the slices at session creation, so every run
    slices (copies) the weights and MatMul/Gemm cannot prepack them -- the cost of the design a
    graph with a symbolic k (torch.export) has.  Used only to measure that alternative.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(single))
    params = {i.name for i in model.graph.initializer}
    g = model.graph
    g.node.insert(0, helper.make_node("Sub", ["heads", "heads"], ["runtime_slice/zero"], name="runtime_slice/zero"))

    def patch(graph) -> None:
        extra = []
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    patch(a.g)
            if node.op_type == "Slice" and node.input[0] in params:
                ends = node.input[2]
                out = f"{ends}/runtime"
                extra.append(helper.make_node("Add", [ends, "runtime_slice/zero"], [out], name=out))
                node.input[2] = out
        for n in reversed(extra):
            graph.node.insert(0, n)

    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                patch(a.g)
    onnx.save(model, str(dest))
    return dest


def run_bench(config_name: str = "base", heads: str = "3..12", targets: str = "onnx,executorch",
              work: Optional[Path] = None, keep: bool = False, runs: int = 10, rounds: int = 3, threads: int = 0,
              deit: bool = True, json_path: Optional[Path] = None, plot_path: Optional[Path] = None,
              seed: int = 0, latency_heads: Optional[str] = None, reuse: bool = False,
              jobs: Optional[int] = None) -> dict[str, Any]:
    import torch

    from hydravit_edge.config import preset
    from hydravit_edge.heads import format_heads, parse_heads
    from hydravit_edge.model import HydraViT

    cfg = preset(config_name)
    ks = parse_heads(heads, cfg.heads)
    lat_ks = parse_heads(latency_heads, ks) if latency_heads else ks
    names = [t.strip() for t in targets.split(",") if t.strip()]
    for n in names:
        if n not in ("onnx", "executorch"):
            from hydravit_edge.errors import UsageError

            raise UsageError(f"export-bench measures onnx and executorch, not '{n}'")
        get_exporter(n).require("export")
    torch.manual_seed(seed)
    model = HydraViT(cfg).eval()
    narrowed = model.narrow(max(ks))  # what every export and its pool's workers hold
    tmp_root = Path(work) if work else Path(tempfile.mkdtemp(prefix="hydravit-export-bench-"))
    tmp_root.mkdir(parents=True, exist_ok=True)
    img = [1, cfg.in_chans, cfg.img_size, cfg.img_size]
    result: dict[str, Any] = {"config": cfg.to_dict(), "heads": list(ks), "latency_heads": list(lat_ks), "runs": runs,
                              "rounds": rounds, "threads": threads, "targets": {}}
    try:
        for name in names:
            ex = get_exporter(name)
            n_jobs = jobs if jobs is not None else auto_jobs(model, len(ks), ex.parallel_min_params)
            kind = name
            tres: dict[str, Any] = {"export_s": {}, "files": {}, "export_jobs": n_jobs}
            dirs = {}
            for mode in ("per-k", "single"):
                d = tmp_root / name / mode
                saved = d / "bench_export.json"
                if reuse and saved.exists() and json.loads(saved.read_text())["heads"] == list(ks):
                    info = json.loads(saved.read_text())
                    recs = [ArtifactRecord.from_dict(r) for r in info["records"]]
                    tres["export_s"][mode] = info["export_s"]
                    console.print(f"[bold]{name}[/] reusing the {mode} export in {d}")
                else:
                    if d.exists():
                        shutil.rmtree(d)
                    d.mkdir(parents=True)
                    console.print(f"[bold]{name}[/] exporting {mode} for k={format_heads(ks)} ...")
                    t0 = time.perf_counter()  # includes starting the workers
                    with ExportPool(narrowed, n_jobs) as pool:
                        recs = ex.export(narrowed, ks, d, mode, pool=pool)
                    tres["export_s"][mode] = time.perf_counter() - t0
                    saved.write_text(json.dumps({"heads": list(ks), "export_s": tres["export_s"][mode],
                                                 "records": [r.to_dict() for r in recs]}))
                dirs[mode] = (d, {r.k: r for r in recs})
                tres["files"][mode] = {f.name: path_size(f) for f in sorted(d.iterdir()) if f.name != "bench_export.json"}
                console.print(f"  {mode}: {tres['export_s'][mode]:.0f} s")
            per_k = {k: path_size(dirs["per-k"][0] / dirs["per-k"][1][k].file) for k in ks}
            single = path_size(dirs["single"][0] / ex.single_filename)
            kmax = max(ks)
            tres["sizes"] = {"single": single, "per_k": per_k, "per_k_sum": sum(per_k.values()),
                             "single_over_kmax": single / per_k[kmax], "sum_over_kmax": sum(per_k.values()) / per_k[kmax]}
            # ---- latency: the single artifact stays loaded; per k a per-k process alternates runs with it
            single_entries = [dirs["single"][1][k].to_dict() for k in lat_ks]
            single_path = dirs["single"][0] / ex.single_filename
            samples: dict[int, list[tuple[float, float]]] = {k: [] for k in lat_ks}
            mem: dict[str, float] = {}
            srv_single = Server(kind, single_path, single_entries, threads, img)
            try:
                mem["single"] = srv_single.info["rss_ready_mb"] - srv_single.info["rss_start_mb"]
                for rnd in range(rounds):
                    for k in lat_ks:
                        rec_p = dirs["per-k"][1][k]
                        srv_k = Server(kind, dirs["per-k"][0] / rec_p.file, [rec_p.to_dict()], threads, img)
                        try:
                            if k == max(lat_ks):
                                mem["per_k_max"] = srv_k.info["rss_ready_mb"] - srv_k.info["rss_start_mb"]
                            got = alternate(srv_single, srv_k, k, runs)
                        finally:
                            srv_k.close()
                        samples[k].extend(got)
                        console.print(f"  {name} pass {rnd + 1}/{rounds} k={k}: single {median_of(got, 0):.1f} ms, "
                                      f"per-k {median_of(got, 1):.1f} ms, ratio {median_ratio(got):.3f}")
            finally:
                srv_single.close()
            tres["latency"] = {k: summary(v, ("single", "per_k")) for k, v in samples.items()}
            tres["session_mb"] = mem
            # ---- switching k inside one loaded artifact (no reload)
            rec = [dirs["single"][1][k] for k in lat_ks]
            sw = measure(kind, dirs["single"][0] / ex.single_filename,
                          [r.to_dict() for r in rec],
                          max(3, runs // 2), threads, img)
            tres["switch"] = {"load_s": sw["load_s"], "session_mb": sw["rss_loaded_mb"] - sw["rss_start_mb"],
                              "peak_rss_mb": sw["peak_rss_mb"],
                              "first_call_s": {r["k"]: r["first_s"] for r in sw["results"]},
                              "median_ms": {r["k"]: r["median_ms"] for r in sw["results"]}}
            if name == "onnx":
                tres.update(_onnx_extras(model, cfg, dirs, lat_ks, runs, rounds, threads, img, deit, tmp_root, reuse))
            result["targets"][name] = tres
        _print(result)
        if json_path:
            Path(json_path).write_text(json.dumps(result, indent=2, default=str) + "\n")
            console.print(f"wrote {json_path}")
        if plot_path:
            _plot(result, Path(plot_path))
            console.print(f"wrote {plot_path}")
        return result
    finally:
        if not keep and not work:
            shutil.rmtree(tmp_root, ignore_errors=True)


def _onnx_extras(model, cfg, dirs, lat_ks, runs, rounds, threads, img, deit, tmp_root, reuse=False) -> dict[str, Any]:
    from hydravit_edge.export.onnx import export_onnx_proto, save_proto

    out: dict[str, Any] = {}
    single_dir, single_recs = dirs["single"]
    # the rejected design: weights sliced at every run
    rs = runtime_slice_variant(single_dir / "hydravit.onnx", tmp_root / "onnx" / "runtime_slice.onnx")
    ks = sorted({min(lat_ks), max(lat_ks)})
    entries = [{"k": k} for k in ks]  # both graphs take the heads input
    a = Server("onnx", rs, entries, threads, img)
    try:
        b = Server("onnx", single_dir / "hydravit.onnx", entries, threads, img)
        try:
            rs_mem = {"runtime_slice_mb": a.info["rss_ready_mb"] - a.info["rss_start_mb"],
                      "single_mb": b.info["rss_ready_mb"] - b.info["rss_start_mb"]}
            got = {k: alternate(a, b, k, runs * max(1, rounds - 1)) for k in ks}
        finally:
            b.close()
    finally:
        a.close()
    out["runtime_slice"] = {k: summary(v, ("runtime_slice", "single")) for k, v in got.items()}
    out["runtime_slice_memory_mb"] = rs_mem
    for k, v in out["runtime_slice"].items():
        console.print(f"  onnx runtime-slice k={k}: {v['runtime_slice_ms']:.1f} ms vs folded {v['single_ms']:.1f} ms")
    # timm DeiT exported the same way
    if deit and cfg.num_heads == 12 and cfg.head_dim == 64 and cfg.img_size == 224 and cfg.depth == 12:
        import timm

        per_k_dir, per_k_recs = dirs["per-k"]
        ks = [k for k in DEIT if k in per_k_recs]
        files = {}
        times = {}
        for k in ks:
            files[k] = tmp_root / "onnx" / f"{DEIT[k]}.onnx"
            if files[k].exists() and reuse:
                times[k] = float("nan")
                continue
            deit_model = timm.create_model(DEIT[k], pretrained=False).eval()
            t0 = time.perf_counter()
            proto = export_onnx_proto(deit_model, cfg)
            times[k] = time.perf_counter() - t0
            save_proto(proto, files[k])
        samples: dict[int, list] = {k: [] for k in ks}
        for rnd in range(rounds):
            for k in ks:
                e = [{"k": k}]
                a = Server("onnx", per_k_dir / per_k_recs[k].file, e, threads, img)
                try:
                    b = Server("onnx", files[k], e, threads, img)
                    try:
                        got = alternate(a, b, k, runs)
                    finally:
                        b.close()
                finally:
                    a.close()
                samples[k].extend(got)
                console.print(f"  onnx per-k vs DeiT pass {rnd + 1} k={k}: {median_of(got, 0):.1f} ms vs {median_of(got, 1):.1f} ms")
        out["deit"] = {k: dict(summary(v, ("per_k", "deit")), model=DEIT[k], deit_bytes=path_size(files[k]),
                               deit_export_s=times[k]) for k, v in samples.items()}
    return out


def _print(result: dict) -> None:
    from rich.table import Table

    for name, t in result["targets"].items():
        s = t["sizes"]
        kmax = max(s["per_k"])
        from hydravit_edge.heads import format_heads

        table = Table(title=f"{name}: file sizes (heads {format_heads(result['heads'])})")
        for col in ("single", f"per-k k={kmax}", "single / per-k kmax", "sum of per-k", "sum / per-k kmax",
                    "export single", "export per-k"):
            table.add_column(col, justify="right")
        table.add_row(human_bytes(s["single"]), human_bytes(s["per_k"][kmax]), f"{s['single_over_kmax']:.3f}x",
                      human_bytes(s["per_k_sum"]), f"{s['sum_over_kmax']:.2f}x", f"{t['export_s']['single']:.0f} s",
                      f"{t['export_s']['per-k']:.0f} s")
        console.print(table)
        table = Table(title=f"{name}: latency, batch 1, CPU, each artifact in its own runtime process; single runs "
                            f"alternating with the per-k process ({result['rounds']} passes x {result['runs']} pairs per k)")
        for col in ("k", "single ms", "per-k ms", "median of pair ratios", "single min ms", "per-k min ms",
                    "ratio of minima"):
            table.add_column(col, justify="right")
        for k, v in t["latency"].items():
            st = "green" if v["ratio"] <= 1.10 else "red"
            sm = "green" if v["ratio_min"] <= 1.10 else "red"
            table.add_row(str(k), f"{v['single_ms']:.1f}", f"{v['per_k_ms']:.1f}", f"[{st}]{v['ratio']:.3f}[/]",
                          f"{v['single_min_ms']:.1f}", f"{v['per_k_min_ms']:.1f}", f"[{sm}]{v['ratio_min']:.3f}[/]")
        console.print(table)
        sw = t["switch"]
        console.print(f"{name} single artifact: loaded in {sw['load_s']:.1f} s, +{sw['session_mb']:.0f} MB resident; "
                      f"switching k without reload, median ms per k: "
                      + ", ".join(f"k={k}: {v:.1f}" for k, v in sw["median_ms"].items()))
        if t.get("session_mb"):
            m = t["session_mb"]
            console.print(f"{name} session memory (resident MB after loading and warm-up): single "
                          f"{m.get('single', float('nan')):.0f}, per-k k={max(result['latency_heads'])} "
                          f"{m.get('per_k_max', float('nan')):.0f}")
        if "runtime_slice" in t:
            m = t.get("runtime_slice_memory_mb", {})
            console.print("onnx runtime-slice design (rejected): " + ", ".join(
                f"k={k}: {v['runtime_slice_ms']:.1f} ms vs {v['single_ms']:.1f} ms folded ({v['ratio']:.2f}x)"
                for k, v in t["runtime_slice"].items())
                + (f"; session memory {m['runtime_slice_mb']:.0f} MB vs {m['single_mb']:.0f} MB folded" if m else ""))
        if "deit" in t:
            table = Table(title="onnx per-k vs timm DeiT exported the same way (torch.onnx.export, dynamo)")
            for col in ("k", "DeiT", "per-k ms", "DeiT ms", "ratio (medians)", "ratio (minima)"):
                table.add_column(col, justify="right")
            for k, v in t["deit"].items():
                st = "green" if v["ratio"] <= 1.05 else "red"
                sm = "green" if v["ratio_min"] <= 1.05 else "red"
                table.add_row(str(k), v["model"], f"{v['per_k_ms']:.1f}", f"{v['deit_ms']:.1f}",
                              f"[{st}]{v['ratio']:.3f}[/]", f"[{sm}]{v['ratio_min']:.3f}[/]")
            console.print(table)


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, t in result["targets"].items():
        ks = sorted(t["latency"])
        axes[0].plot(ks, [t["latency"][k]["single_ms"] for k in ks], "o-", label=f"{name} single")
        axes[0].plot(ks, [t["latency"][k]["per_k_ms"] for k in ks], "s--", label=f"{name} per-k")
        axes[1].plot(ks, [t["latency"][k]["ratio"] for k in ks], "o-", label=name)
    axes[0].set_xlabel("heads k")
    axes[0].set_ylabel("latency, batch 1 (ms)")
    axes[0].legend()
    axes[1].axhline(1.10, color="r", ls=":", label="1.10x")
    axes[1].set_xlabel("heads k")
    axes[1].set_ylabel("single / per-k")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", dest="config", default="base", help="model preset: base or tiny")
    p.add_argument("--heads", default="3..12")
    p.add_argument("--latency-heads", default=None, help="subset of --heads to time (default: all)")
    p.add_argument("--target", default="onnx,executorch")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-deit", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="reuse exports left in --work by an earlier run")
    a = p.parse_args(argv)
    run_bench(a.config, a.heads, a.target, a.work, a.work is not None, a.runs, a.rounds, a.threads, not a.no_deit,
              a.json, a.plot, latency_heads=a.latency_heads, reuse=a.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
