"""The lookup table: building from reports, schema validation, device lookup, `lut build/show/pick`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hydravit_edge.bench.lut_build import build_lut
from hydravit_edge.bench.report import make_row, save_report, upsert_rows
from hydravit_edge.bench.stats import latency_stats
from hydravit_edge.contract.lut import Lut, LutError, UnknownDeviceError, load_lut, save_lut
from hydravit_edge.errors import UsageError
from hydravit_edge.policy import DEFAULT_POLICY, PolicyInput

from test_reports import sample_report


def two_devices(tmp_path: Path) -> list[Path]:
    """A laptop with onnxruntime (single, all k) and executorch (3 k), a phone with per-k files."""
    laptop = sample_report("laptop", ks=range(3, 13))
    for k in (3, 6, 12):
        upsert_rows(laptop, [make_row(k, "executorch", "executorch/hydravit.pte", mode="single", entry=f"forward_k{k}",
                                      compute="xnnpack", **latency_stats([k * 0.5, k * 0.6, k * 0.7]))])
    phone = sample_report("Pixel 8", ks=())
    for k in (3, 6, 9, 12):
        upsert_rows(phone, [make_row(k, "onnxruntime", f"onnx/k{k}.onnx", mode="per-k", compute="cpu",
                                     latency_median_ms=4.0 * k, latency_p90_ms=5.0 * k)])
    paths = [tmp_path / "reports" / "laptop.json", tmp_path / "reports" / "Pixel-8.json"]
    save_report(laptop, paths[0])
    save_report(phone, paths[1])
    return paths


def _loaded(paths):
    from hydravit_edge.bench.report import load_reports

    return load_reports(paths)


def test_build_from_reports(tmp_path):
    data = build_lut(_loaded(two_devices(tmp_path)))
    names = [(d["name"], d["backend"], d["mode"]) for d in data["devices"]]
    # per device: the configuration covering most k first; the published reference last
    assert names == [("laptop", "onnxruntime", "single"), ("laptop", "executorch", "single"),
                     ("Pixel 8", "onnxruntime", "per-k"), ("a100-paper", "torch", "eager")]
    assert data["policy"] == DEFAULT_POLICY
    laptop = data["devices"][0]
    assert laptop["artifact"] == "onnx/hydravit.onnx" and [r["k"] for r in laptop["rows"]] == list(range(3, 13))
    row6 = laptop["rows"][3]
    assert row6["latency_basis"] == "p90" and row6["p90_ms"] == pytest.approx(6 * 1.081)
    assert row6["peak_rss_mb"] == 106.0 and row6["macs"] == 6 * 10**6
    assert data["devices"][2]["artifact"] is None  # per-k files
    ref = data["devices"][3]
    assert ref["source"] == "published" and ref["rows"][-1]["latency_basis"] == "throughput"
    assert ref["rows"][-1]["p90_ms"] == pytest.approx(1000 / 1754.1) and ref["rows"][-1]["top1"] == 0.811
    assert [s["device"] for s in data["sources"]] == ["laptop", "Pixel 8", "a100-paper"]


def test_build_options(tmp_path):
    loaded = _loaded(two_devices(tmp_path))
    data = build_lut(loaded, include_reference=False, backends=["executorch"], policy={"budget_ms": None})
    assert [(d["name"], d["backend"]) for d in data["devices"]] == [("laptop", "executorch")]
    assert data["policy"]["budget_ms"] is None
    with pytest.raises(UsageError, match="nothing to put in a LUT"):
        build_lut(loaded, include_reference=False, backends=["tflite"])
    with pytest.raises(UsageError, match="two reports for device 'laptop'"):
        build_lut(loaded + loaded[:1])


def test_lut_round_trip_and_policy(tmp_path):
    data = build_lut(_loaded(two_devices(tmp_path)))
    path = save_lut(data, tmp_path / "lut.json")
    lut = load_lut(path)
    dev = lut.device("pixel 8")
    assert dev.name == "Pixel 8" and dev.ks == [3, 6, 9, 12]
    assert dev.decide(PolicyInput(battery=90)).k == 6  # 9 and 12 exceed 33 ms at p90 (45, 60)
    assert lut.device("laptop", backend="executorch").latency[12] == pytest.approx(12 * 0.68)
    state = lut.device("a100-paper").state()
    assert [state.update(PolicyInput(battery=b)).k for b in (100, 45, 52, 60)] == [12, 6, 6, 12]
    with pytest.raises(UnknownDeviceError, match="it has: laptop, Pixel 8, a100-paper"):
        lut.device("iphone")


def _lut_dict():
    return json.loads((Path(__file__).parent / "policy_vectors.json").read_text())["luts"]["A"]


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(schema_version=3), "schema_version 3 is not supported"),
    (lambda d: d.update(format="other"), "not a hydravit-edge lookup table"),
    (lambda d: d["policy"].pop("budget_ms"), "'budget_ms' is a required property"),
    (lambda d: d["policy"].update(battery_bands=[{"name": "x", "min_percent": 5, "max_k_fraction": 1}]), "min_percent 0"),
    (lambda d: d["policy"]["thermal_max_k_fraction"].update(critical=2), "policy.thermal_max_k_fraction.critical"),
    (lambda d: d["devices"][0]["rows"].append(dict(d["devices"][0]["rows"][0])), "lists a k twice"),
    (lambda d: d["devices"][0]["rows"][0].update(p90_ms=0), "devices[0].rows[0].p90_ms"),
    (lambda d: d["devices"][2]["policy"].update(budget=3), "devices[2].policy"),
    (lambda d: d.update(devices=[]), "devices"),
])
def test_lut_validation_errors(mutate, words):
    data = copy.deepcopy(_lut_dict())
    mutate(data)
    with pytest.raises(LutError) as info:
        Lut.check(data, where="lut.json")
    assert words in str(info.value)


def test_a_report_is_not_a_lut(tmp_path):
    path = tmp_path / "report.json"
    save_report(sample_report(), path)
    with pytest.raises(LutError, match="this is a benchmark report, not a lookup table"):
        load_lut(path)
    with pytest.raises(LutError, match="no such lookup table"):
        load_lut(tmp_path / "nothing.json")


# ------------------------------------------------------------------ CLI

def _cli(args, capsys):
    from hydravit_edge.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def test_cli_build_show_pick(tmp_path, capsys):
    paths = two_devices(tmp_path)
    out_path = tmp_path / "lut.json"
    code, out, err = _cli(["lut", "build", *map(str, paths), "--out", str(out_path), "--budget-ms", "50"], capsys)
    assert code == 0, err
    assert "wrote" in out and out_path.exists()
    lut = load_lut(out_path)
    assert lut.policy.budget_ms == 50.0 and "a100-paper" in lut.device_names()
    code, out, _ = _cli(["lut", "show", str(out_path)], capsys)
    assert code == 0 and "Pixel 8" in out and "budget 50 ms" in out
    code, out, _ = _cli(["lut", "pick", "--lut", str(out_path), "--device", "Pixel 8", "--battery", "80", "--json"], capsys)
    assert code == 0 and json.loads(out)["k"] == 9  # p90 45 ms fits 50 ms
    code, out, _ = _cli(["lut", "build", str(paths[0].parent), "--out", str(out_path), "--no-reference", "--no-budget"],
                        capsys)
    assert code == 0 and "a100-paper" not in load_lut(out_path).device_names()
    assert load_lut(out_path).policy.budget_ms is None


def test_cli_build_bad_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    report = sample_report()
    report["schema_version"] = 9
    bad.write_text(json.dumps(report))
    out_path = tmp_path / "lut.json"
    code, _, err = _cli(["lut", "build", str(bad), "--out", str(out_path)], capsys)
    assert code == 1 and "schema_version 9 is not supported" in err
    assert not out_path.exists()
    code, _, err = _cli(["lut", "build", str(tmp_path / "empty-dir"), "--out", str(out_path)], capsys)
    assert code == 2 and "no such report" in err
    code, _, err = _cli(["lut", "build", str(bad), "--budget-ms", "-3", "--out", str(out_path)], capsys)
    assert code != 0
