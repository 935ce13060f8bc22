"""The benchmark harness: reports from a tiny export, the command group, interruption, CUDA and adb paths.

The tiny artifacts are exported once per test run (shared by the xdist workers through a file
lock) with the export API; ``tests/test_runtime.py`` and ``tests/test_demo.py`` reuse them.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from hydravit_edge.bench.report import load_report, make_row, new_report, report_path, save_report
from hydravit_edge.cli import main

HEADS = (1, 2, 4)
PER_K_HEADS = (1, 2)


# =========================================================================== shared fixtures

def _shared_root(tmp_path_factory) -> Path:
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid:  # every xdist worker of this run sees the same folder
        return tmp_path_factory.getbasetemp().parent / f"hydravit-bench-{uid}"
    return tmp_path_factory.getbasetemp() / "hydravit-bench"


def tiny_config():
    from helpers import TINY

    return TINY.replace(num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        labels=tuple(str(i) for i in range(10)))


def tiny_hydra():
    from helpers import tiny_model

    return tiny_model(tiny_config())


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict:
    """{"single": dir, "per-k": dir}: ONNX exports of a tiny 10-class HydraViT (single: heads 1,2,4; per-k: 1,2)."""
    from filelock import FileLock

    root = _shared_root(tmp_path_factory)
    root.parent.mkdir(parents=True, exist_ok=True)
    dirs = {"single": root / "single", "per-k": root / "per-k"}
    with FileLock(str(root) + ".lock"):
        if not all((d / "manifest.json").exists() for d in dirs.values()):
            from hydravit_edge.export.api import export_model

            model = tiny_hydra()
            for mode, d in dirs.items():
                if not (d / "manifest.json").exists():
                    heads = HEADS if mode == "single" else PER_K_HEADS
                    export_model(model, heads=",".join(map(str, heads)), targets="onnx", mode=mode, out=d,
                                 data="digits")  # accuracy: on the digits held-out split
    return dirs


def bench_args(export_dir, reports, *extra):
    return ["bench", str(export_dir), "--runs", "3", "--warmup", "1", "--batch-size", "2", "--reports-dir", str(reports),
            "--device-name", "test-box", "--no-accuracy", *extra]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


#: the published reference's geometry (the full-size model)
FULL_SIZE = {"name": "hydravit", "num_heads": 12, "head_dim": 64, "depth": 12, "img_size": 224, "patch_size": 16}


def sample_report(name="phone", ks=(1, 2, 4), p90=(1.0, 2.0, 4.0), manifest="c" * 64, model=None, export_dir=None,
                  created="2025-01-01T00:00:00Z"):
    dev = {"name": name, "platform": "android", "cpu": "Test SoC", "cpu_cores": 8, "runtimes": {"onnxruntime": "1.20"}}
    rows = [make_row(k, "onnxruntime", "onnx/hydravit.onnx", target="onnx", mode="single", compute="cpu",
                     precision="fp32", latency_median_ms=v * 0.9, latency_p90_ms=v, latency_min_ms=v * 0.8, runs=10,
                     accuracy={"dataset": "digits-heldout", "top1": 0.5 + 0.1 * i})
            for i, (k, v) in enumerate(zip(ks, p90))]
    return new_report(dev, manifest_sha256=manifest, rows=rows, created=created, model=model, export_dir=export_dir)


# =========================================================================== bench run

def test_bench_single_export_writes_a_valid_report(tiny_exports, tmp_path, capsys):
    from hydravit_edge import profile

    code, out, err = run_cli(bench_args(tiny_exports["single"], tmp_path), capsys)
    assert code in (0, None), err
    rep = load_report(report_path(tmp_path, "test-box"))  # validates against the schema
    rows = {r["k"]: r for r in rep["rows"] if r["materialize"] == "eager"}
    lazy = {r["k"]: r for r in rep["rows"] if r["materialize"] == "lazy"}
    assert sorted(rows) == sorted(lazy) == list(HEADS) and len(rep["rows"]) == 2 * len(HEADS)
    size = sum((tiny_exports["single"] / "onnx" / f).stat().st_size for f in ("hydravit.onnx", "hydravit.onnx.data"))
    for k, r in lazy.items():  # the graph of k over the shared weights: its own session, built when needed
        assert r["artifact"] == f"onnx/hydravit.k{k}.onnx" and r["mode"] == "single" and r["file_bytes"] == size
        assert r["cold_switch_ms"] > 0 and r["switch_ms"] >= 0 and r["extra"]["switch_from_k"] != k
        assert r["rss_anon_mb"] > 0 and r["rss_file_mb"] > 0 and r["peak_switch_rss_mb"] >= r["rss_anon_mb"]
    prof = {p.k: p for p in profile(tiny_config(), HEADS)}
    for k, r in rows.items():
        assert r["backend"] == "onnxruntime" and r["mode"] == "single" and r["artifact"] == "onnx/hydravit.onnx"
        assert r["cold_switch_ms"] is None  # every k resident
        assert r["runs"] == 3 and 0 < r["latency_min_ms"] <= r["latency_median_ms"] <= r["latency_p90_ms"]
        assert r["throughput_batch"] == 2 and r["throughput_per_s"] > 0 and r["load_ms"] > 0
        assert r["switch_ms"] is not None and r["switch_ms"] >= 0  # one artifact, several k
        assert r["extra"]["switch_from_k"] in HEADS and r["extra"]["switch_from_k"] != k
        # measured in the worker, not estimated: above what the bare interpreter held before loading
        assert r["peak_rss_mb"] >= r["extra"]["rss_before_load_mb"] > 10
        assert r["macs"] == prof[k].macs and r["params"] == prof[k].params and r["paper_ram_mb"] == prof[k].ram_mb
        assert r["file_bytes"] == size  # the graph and its external data
    assert rep["manifest_sha256"] and rep["device"]["name"] == "test-box" and rep["source"] == "measured"
    assert "onnxruntime" in rep["device"]["runtimes"]
    assert "report:" in out and "onnxruntime single" in out
    code, out, err = run_cli(["bench", "report", "--reports-dir", str(tmp_path), "--plots", str(tmp_path / "p")], capsys)
    assert code in (0, None), err
    assert "steady memory with k active" in " ".join(out.split())  # lazy / eager memory and switch times


def test_bench_per_k_default_dir_and_heads_filter(tiny_exports, tmp_path, capsys):
    """`bench` without DIR takes the newest export (and says so); --heads limits the k; per-k has no switch cost."""
    root = tmp_path / "exports"
    root.mkdir()
    (root / "only").symlink_to(tiny_exports["per-k"], target_is_directory=True)
    code, out, err = run_cli(["bench", "--exports-root", str(root), "--heads", "2", "--runs", "2", "--warmup", "0",
                              "--reports-dir", str(tmp_path / "r"), "--device-name", "box2", "--accuracy",
                              "--rounds", "2"], capsys)
    assert code in (0, None), err
    assert "newest export" in out
    rep = load_report(tmp_path / "r" / "box2.json")
    assert [(r["k"], r["mode"], r["artifact"], r["switch_ms"]) for r in rep["rows"]] == [(2, "per-k", "onnx/k2.onnx", None)]
    assert rep["rows"][0]["runs"] == 4 and rep["settings"]["rounds"] == 2  # two rounds of 2 runs, pooled
    from hydravit_edge.train.data import DigitsDataset

    acc = rep["rows"][0]["accuracy"]
    assert acc["dataset"] == "digits-heldout" and acc["samples"] == len(DigitsDataset("val", 32))
    assert 0 <= acc["top1"] <= 1


def test_a_second_export_keeps_the_first_exports_rows(tiny_exports, tmp_path, capsys):
    """Finding 6: bench two exports under one device name; each re-run replaces only its own export's rows."""
    from hydravit_edge.bench.report import export_groups, manifest_sha256

    single, per_k = (manifest_sha256(tiny_exports[m]) for m in ("single", "per-k"))
    for export_dir in (tiny_exports["single"], tiny_exports["per-k"]):
        code, out, err = run_cli(bench_args(export_dir, tmp_path, "--heads", "1", "--runs", "2"), capsys)
        assert code in (0, None), err
    assert "row(s) of 1 other export(s) are kept (single)" in " ".join(out.split())
    rep = load_report(report_path(tmp_path, "test-box"))
    assert [(r["manifest_sha256"], r["export_dir"], r["mode"], r.get("materialize"), r["k"]) for r in rep["rows"]] == [
        (single, str(tiny_exports["single"]), "single", "lazy", 1),
        (single, str(tiny_exports["single"]), "single", "eager", 1),
        (per_k, str(tiny_exports["per-k"]), "per-k", None, 1)]
    assert rep["manifest_sha256"] == per_k and [e["manifest_sha256"] for e in rep["exports"]] == [single, per_k]
    before = rep["rows"][2]
    code, out, err = run_cli(bench_args(tiny_exports["single"], tmp_path, "--heads", "1", "--runs", "2"), capsys)
    assert code in (0, None), err
    rep = load_report(report_path(tmp_path, "test-box"))
    assert [(r["manifest_sha256"], r["k"]) for r in rep["rows"]] == [(single, 1), (single, 1), (per_k, 1)]
    assert rep["rows"][2] == before  # the other export's row is untouched
    assert [g.label for g in export_groups(rep)] == ["single", "per-k"]


def test_bench_errors(tmp_path, capsys):
    code, _, err = run_cli(["bench", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such export directory" in err
    code, _, err = run_cli(["bench", "--exports-root", str(tmp_path)], capsys)
    assert code == 1 and "no export directory" in err
    code, _, err = run_cli(["bench", str(tmp_path), "--backend", "nosuch"], capsys)
    assert code == 2 and "unknown backend" in err
    code, _, err = run_cli(["bench", str(tmp_path), "--backend", "onnxruntime", "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda is not supported by the onnxruntime backend" in err
    code, _, err = run_cli(["bench", str(tmp_path), "--rounds", "0"], capsys)
    assert code == 2 and "--rounds must be >= 1" in err
    code, _, err = run_cli(["bench", str(tmp_path), "--runs", "0"], capsys)
    assert code == 2 and "--runs" in err


def test_interrupted_bench_keeps_finished_rows(tiny_exports, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second measurement: the first row is on disk, valid, and the exit code is 130."""
    from hydravit_edge.bench import harness

    real = harness.run_job
    calls = []

    def flaky(job, *a, **kw):
        calls.append(job.k)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, *a, **kw)

    monkeypatch.setattr(harness, "run_job", flaky)
    code, _, err = run_cli(bench_args(tiny_exports["single"], tmp_path), capsys)
    assert code == 130 and "interrupted: the rows finished so far are kept" in err
    rep = load_report(tmp_path / "test-box.json")
    assert [r["k"] for r in rep["rows"]] == [calls[0]]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no half-written file left


@pytest.mark.slow
def test_killed_bench_process_keeps_rows(tiny_exports, tmp_path):
    """kill -9 of the bench command after its first row: the report on disk is complete and valid."""
    import signal
    import subprocess
    import time

    exe = Path(sys.executable).parent / "hydravit-edge"
    proc = subprocess.Popen([str(exe), *bench_args(tiny_exports["per-k"], tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    path = tmp_path / "test-box.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and json.loads(path.read_text())["rows"]:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    rep = load_report(path)
    assert 1 <= len(rep["rows"]) <= len(PER_K_HEADS)


def test_cuda_reference_without_gpu_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for args in (["--backend", "torch", "--device", "cuda", "--model", "tiny"], ["--device", "cuda"]):
        code, _, err = run_cli(["bench", *args, "--reports-dir", str(tmp_path)], capsys)
        assert code == 1 and "no CUDA GPU is available" in err, args
    assert not list(tmp_path.iterdir())


def test_eager_torch_backend_on_cpu(tmp_path, capsys):
    code, out, err = run_cli(["bench", "--backend", "torch", "--model", "tiny", "--heads", "12", "--runs", "2",
                              "--warmup", "1", "--batch-size", "2", "--threads", "1", "--reports-dir", str(tmp_path),
                              "--device-name", "eager"], capsys)
    assert code in (0, None), err
    rep = load_report(tmp_path / "eager.json")
    assert [(r["k"], r["backend"], r["mode"], r["compute"]) for r in rep["rows"]] == [(12, "torch", "eager", "cpu")]
    assert rep["manifest_sha256"] is None and rep["model"]["num_heads"] == 12 and rep["rows"][0]["peak_rss_mb"] > 100


# =========================================================================== the command group

def test_bench_group_dispatch(tiny_exports, tmp_path, capsys, monkeypatch):
    """`bench`, `bench DIR`, `bench run DIR`, `bench report`, `bench import F` reach the right command."""
    from hydravit_edge.bench import cli as bench_cli
    from hydravit_edge.errors import HydraEdgeError

    seen = []

    def fake_run_bench(export_dir, **kw):
        seen.append((export_dir, kw["settings"].runs))
        raise HydraEdgeError("dispatched to run")

    monkeypatch.setattr("hydravit_edge.bench.harness.run_bench", fake_run_bench)
    for args, want in ((["bench"], (None, 30)), (["bench", "exports/x"], (Path("exports/x"), 30)),
                       (["bench", "run", "exports/y", "--runs", "7"], (Path("exports/y"), 7)),
                       (["bench", "--runs", "5", "exports/z"], (Path("exports/z"), 5))):
        seen.clear()
        code, _, err = run_cli(args, capsys)
        assert code == 1 and "dispatched to run" in err, args
        assert seen == [want], args
    code, out, _ = run_cli(["bench", "--help"], capsys)
    assert code == 0 and all(c in out for c in ("run", "report", "import", "android"))
    assert bench_cli.DefaultRunGroup.default_command == "run"


def test_bench_report_tables_and_plots(tmp_path, capsys):
    reports = tmp_path / "reports"
    save_report(sample_report("phone", model=FULL_SIZE), report_path(reports, "phone"))
    code, out, err = run_cli(["bench", "report", "--reports-dir", str(reports)], capsys)
    assert code in (0, None), err
    assert "phone (onnxruntime, single, cpu)" in out and "a100-paper" in out  # the reference: same geometry
    assert (reports / "plots" / "latency_vs_k.png").stat().st_size > 1000
    assert (reports / "plots" / "accuracy_vs_latency.png").stat().st_size > 1000


def test_bench_report_groups_rows_by_export_and_leaves_out_a_foreign_reference(tmp_path, capsys):
    """One device, two exports: a series per export, labelled; the A100 rows only next to the full-size model."""
    from hydravit_edge.bench.report import merge_reports

    small = dict(FULL_SIZE, head_dim=16, depth=3, img_size=32, patch_size=4)
    first = sample_report("phone", model=small, export_dir="exports/digits-single")
    second = sample_report("phone", ks=(1, 2), p90=(3.0, 5.0), manifest="d" * 64, model=small,
                           export_dir="exports/digits-per-k", created="2025-02-01T00:00:00Z")
    reports = tmp_path / "reports"
    save_report(merge_reports(first, second)[0], report_path(reports, "phone"))
    code, out, err = run_cli(["bench", "report", "--reports-dir", str(reports), "--metric", "p90"], capsys)
    assert code in (0, None), err
    flat = " ".join(out.split())
    assert "a100-paper reference is left out" in flat and "12 heads x 16, depth 3, 32 px, patch 4" in flat
    assert "[published]" not in out and "eager, cuda" not in out  # no A100 series
    from hydravit_edge.bench.plots import series
    from hydravit_edge.bench.report import load_reports

    labels = [s["label"] for s in series(load_reports([reports]))]
    assert labels == ["phone digits-single (onnxruntime, single, cpu)", "phone digits-per-k (onnxruntime, single, cpu)"]
    assert "digits-single (3), digits-per-k (2)" in flat


def test_bench_report_with_no_reports_still_shows_the_reference(tmp_path, capsys):
    code, out, err = run_cli(["bench", "report", "--reports-dir", str(tmp_path / "none")], capsys)
    assert code in (0, None), err
    assert "a100-paper" in out and "no measured reports" in out
    assert (tmp_path / "none" / "plots" / "latency_vs_k.png").exists()


def test_bench_import_validates(tmp_path, capsys):
    good = tmp_path / "phone.json"
    good.write_text(json.dumps(sample_report("pixel")))
    code, out, err = run_cli(["bench", "import", str(good), "--reports-dir", str(tmp_path / "r")], capsys)
    assert code in (0, None), err
    assert load_report(tmp_path / "r" / "pixel.json")["device"]["name"] == "pixel"
    bad = sample_report("pixel")
    bad["schema_version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _, err = run_cli(["bench", "import", str(tmp_path / "bad.json"), "--reports-dir", str(tmp_path / "r")], capsys)
    assert code == 1 and "schema_version" in err


# =========================================================================== android over adb

def _fake_adb(bin_dir: Path, devices: str, report: Path | None) -> None:
    """An `adb` that answers devices/pm/am/ls/rm/pull like a phone with the demo app installed."""
    remote = "/sdcard/Android/data/org.hydravit.edge.demo/files/hydravit-bench-report.json"
    script = f"""#!/bin/sh
if [ "$1" = "-s" ]; then shift 2; fi
case "$1" in
  devices) printf 'List of devices attached\\n{devices}\\n' ;;
  shell)
    case "$2" in
      pm) echo "package:/data/app/base.apk" ;;
      am) echo "Status: ok" ;;
      ls) {"echo " + remote if report else "echo 'ls: No such file or directory' >&2; exit 1"} ;;
      rm) exit 0 ;;
    esac ;;
  pull) cp "{report}" "$3" ;;
esac
"""
    exe = bin_dir / "adb"
    exe.write_text(script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_android_without_adb_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere
    code, _, err = run_cli(["bench", "android"], capsys)
    assert code == 1 and "adb was not found on PATH" in err and "bench import" in err


def test_android_without_device_is_a_clear_error(tmp_path, capsys, monkeypatch):
    _fake_adb(tmp_path, "", None)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    code, _, err = run_cli(["bench", "android"], capsys)
    assert code == 1 and "no Android device is connected" in err
    code, _, err = run_cli(["bench", "android", "--serial", "XYZ"], capsys)
    assert code == 1 and "no device with serial 'XYZ'" in err


def test_android_pulls_and_imports_the_report(tmp_path, capsys, monkeypatch):
    report = tmp_path / "from_phone.json"
    report.write_text(json.dumps(sample_report("pixel-8")))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_adb(bindir, "emulator-5554\\tdevice", report)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    code, out, err = run_cli(["bench", "android", "--reports-dir", str(tmp_path / "r"), "--timeout", "5"], capsys)
    assert code in (0, None), err
    assert "pixel-8" in out
    assert [r["k"] for r in load_report(tmp_path / "r" / "pixel-8.json")["rows"]] == [1, 2, 4]


# =========================================================================== ExecuTorch and LiteRT

@pytest.mark.slow  # exporting costs 20-60 s per target on 2 cores
@pytest.mark.parametrize("target, backend", [("executorch", "executorch"), ("tflite", "tflite")])
def test_other_runtimes_bench_and_runtime(tmp_path, capsys, target, backend):
    """Single ExecuTorch / TFLite artifacts: bench rows with a switch cost, and the runtime matches PyTorch."""
    import numpy as np
    import torch

    from hydravit_edge.export.api import export_model
    from hydravit_edge.runtime import Runtime

    model = tiny_hydra()
    out = tmp_path / "export"
    export_model(model, heads="1,4", targets=target, mode="single", out=out)
    code, _, err = run_cli(bench_args(out, tmp_path / "r"), capsys)
    assert code in (0, None), err
    rows = load_report(tmp_path / "r" / "test-box.json")["rows"]
    # ExecuTorch: each k's own program (lazy) and the one holding every k (eager); TFLite: only the latter
    modes = ["lazy", "eager"] if target == "executorch" else ["eager"]
    assert [(r["k"], r["backend"], r["mode"], r["materialize"]) for r in rows] == [
        (k, backend, "single", m) for k in (1, 4) for m in modes]
    assert all(r["switch_ms"] is not None and r["throughput_batch"] == 2 for r in rows)
    rt = Runtime(out, backend=backend)
    lazy = target == "executorch"
    assert rt.materialize == ("lazy" if lazy else "eager") and (rt.materialize_note is None) == lazy
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    for k in (4, 1, 4):
        with torch.no_grad():
            ref = model(torch.from_numpy(rt.preprocess(x)), heads=k).numpy()
        np.testing.assert_allclose(rt.predict(x, heads=k).logits, ref, atol=1e-4, rtol=0)
    assert rt.loads == (2 if lazy else 1)  # lazy: k=4, then k=1 built once each; eager: one session
