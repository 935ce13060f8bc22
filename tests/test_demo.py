"""The battery demo: a short trace drives k on a tiny model; bad traces are clear errors."""

from __future__ import annotations

import csv
import json

import pytest

from test_bench import run_cli, sample_report, tiny_exports  # noqa: F401  (fixture)

from hydravit_edge.bench.demo import DEFAULT_TRACE, TraceError, load_trace
from hydravit_edge.errors import UsageError

SHORT_TRACE = """time_s,percent,charging,thermal
0,100,0,nominal
60,70,0,nominal
120,45,0,nominal
180,30,0,serious
240,15,0,nominal
300,6,0,nominal
360,20,1,nominal
420,40,1,nominal
"""


@pytest.fixture()
def lut_file(tmp_path):
    from hydravit_edge.bench.lut_build import build_lut
    from hydravit_edge.contract.lut import save_lut

    path = tmp_path / "lut.json"
    save_lut(build_lut([("demo-box.json", sample_report("demo-box"))], include_reference=False), path)
    return path


def test_demo_on_a_tiny_model(tiny_exports, lut_file, tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_text(SHORT_TRACE)
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--export", str(tiny_exports["single"]), "--lut", str(lut_file),
                                 "--device-name", "demo-box", "--battery-trace", str(trace), "--out", str(out),
                                 "--passes", "1"], capsys)
    assert code in (0, None), err
    assert (out / "timeline.png").stat().st_size > 5000
    summary = json.loads((out / "summary.json").read_text())
    from hydravit_edge.train.data import DigitsDataset

    n = len(DigitsDataset("val", 32))
    assert summary["images"] == n and summary["k_switches"] >= 3
    # lazy (the default): each k the policy used was built once, in the background: no call waited
    assert summary["materialize"] == "lazy" and summary["builds"] <= 3 and summary["waited_calls"] == 0
    ks = [p["k"] for p in summary["phases"]]
    # full battery: k=4; medium band and the serious thermal state: 2; low band: 1; charging: 4 again
    assert ks[0] == 4 and ks[-1] == 4 and 1 in ks and 2 in ks
    limits = {p["limit"] for p in summary["phases"]}
    assert {"none", "battery"} <= limits
    with open(out / "demo_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and {r["k"] for r in rows} == {"1", "2", "4"}
    first_charging = next(r for r in rows if r["charging"] == "True")
    assert first_charging["k"] == "4"
    assert "phase" in stdout and "timeline" in stdout and "0 call(s) waited for a build" in stdout


def test_default_trace_drains_then_charges():
    t = load_trace()
    assert t.path == DEFAULT_TRACE
    assert t.percent[0] == 100 and min(t.percent) == 5 and t.charging[-1] and not t.charging[0]
    low = t.percent.index(min(t.percent))
    assert all(not c for c in t.charging[:low + 1]) and all(t.charging[low + 1:])
    assert {"nominal", "serious", "critical"} <= set(t.thermal)


@pytest.mark.parametrize("text, message", [
    ("time_s,percent,thermal\n0,100,nominal\n10,90,nominal\n", "missing column(s) charging"),
    ("time_s,percent,charging,thermal\n0,100,0,nominal\n10,120,0,nominal\n", "row 3: battery percent 120 is outside 0..100"),
    ("time_s,percent,charging,thermal\n0,-1,0,nominal\n10,50,0,nominal\n", "battery percent -1 is outside 0..100"),
    ("time_s,percent,charging,thermal\n0,100,0,warm\n10,90,0,nominal\n", "thermal must be one of"),
    ("time_s,percent,charging,thermal\n0,100,maybe,nominal\n10,90,0,nominal\n", "charging must be 0/1"),
    ("time_s,percent,charging,thermal\n10,100,0,nominal\n0,90,0,nominal\n", "goes back in time"),
    ("time_s,percent,charging,thermal\n0,100,0,nominal\n", "at least 2 rows"),
    ("", "empty battery trace"),
])
def test_bad_traces(tmp_path, text, message):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(TraceError) as exc:
        load_trace(p)
    assert message in str(exc.value)


def test_bad_trace_on_the_command_line(tmp_path, capsys):
    p = tmp_path / "t.csv"
    p.write_text("time,level\n0,100\n")
    code, _, err = run_cli(["demo", "--battery-trace", str(p), "--export", str(tmp_path)], capsys)
    assert code == 2 and "missing column(s) charging, thermal" in err
    code, _, err = run_cli(["demo", "--battery-trace", str(tmp_path / "none.csv")], capsys)
    assert code == 2 and "no such battery trace" in err


def test_make_demo_runs_every_step_in_order(tmp_path, monkeypatch):
    """`demo --all` (make demo): the steps, their order and arguments."""
    from hydravit_edge.bench import pipeline as demo

    calls = []
    monkeypatch.setattr(demo, "_cli", lambda args, log, cwd=None: calls.append(list(args)))
    monkeypatch.setattr(demo, "runnable_targets", lambda: ["onnx", "executorch", "tflite"])
    outputs = demo.run_all(workdir=tmp_path, log=lambda *a: None)
    steps = [c[0] if c[0] != "bench" else f"bench {c[1]}" for c in calls]
    assert steps == ["train", "eval", "export", "export", "bench exports/digits-single", "bench exports/digits-per-k",
                     "lut", "lut", "bench report", "demo"]
    assert calls[0] == ["train", "--data", "digits", "--out", "runs/digits"]
    assert calls[1] == ["eval", "runs/digits", "--data", "digits", "--profile"]
    single, per_k = calls[2], calls[3]
    assert single[single.index("--target") + 1] == "onnx,executorch,tflite" and "single" in single
    assert per_k[per_k.index("--target") + 1] == "onnx,executorch,tflite" and "per-k" in per_k
    assert single[single.index("--heads") + 1] == demo.DEMO_HEADS
    assert single[single.index("--precision") + 1] == per_k[per_k.index("--precision") + 1] == "fp32,int8"
    assert calls[6][:2] == ["lut", "build"] and "reports/local-demo/lut.json" in calls[6]
    assert calls[7] == ["lut", "show", "reports/local-demo/lut.json"]  # the (k, precision) frontier
    assert calls[9][calls[9].index("--lut") + 1] == "reports/local-demo/lut.json"
    assert outputs["battery demo timeline"] == tmp_path.resolve() / "reports/local-demo/timeline.png"
    # a second run reuses the trained model and the exports (validating them) instead of redoing them
    (tmp_path / "runs/digits").mkdir(parents=True)
    (tmp_path / "runs/digits/best.safetensors").write_bytes(b"x")
    for mode in ("single", "per-k"):
        (tmp_path / f"exports/digits-{mode}").mkdir(parents=True)
        (tmp_path / f"exports/digits-{mode}/manifest.json").write_text("{}")
    calls.clear()
    demo.run_all(workdir=tmp_path, log=lambda *a: None)
    assert [c[0] for c in calls][:4] == ["eval", "validate", "validate", "bench"]
    calls.clear()
    demo.run_all(workdir=tmp_path, per_k_targets="onnx", force=False, log=lambda *a: None)
    with pytest.raises(UsageError):
        demo.run_all(workdir=tmp_path, per_k_targets="coreml", log=lambda *a: None)
    with pytest.raises(TraceError):
        demo.run_all(workdir=tmp_path, battery_trace=tmp_path / "missing.csv", log=lambda *a: None)


def test_runnable_targets_really_runs_here():
    """The real call (the step test above replaces it): exporters and engines import and pair up."""
    from hydravit_edge.bench.pipeline import runnable_targets

    found = runnable_targets()
    assert "onnx" in found and "coreml" not in found  # Core ML runs on Apple devices only
