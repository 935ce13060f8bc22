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

from test_reports import FULL_SIZE, SHA_A, SHA_B, SMALL, sample_report


def two_devices(tmp_path: Path) -> list[Path]:
    """A laptop with onnxruntime (single, all k) and executorch (3 k), a phone with per-k files."""
    laptop = sample_report("laptop", ks=range(3, 13), model=FULL_SIZE)  # the reference's geometry
    for k in (3, 6, 12):
        upsert_rows(laptop, [make_row(k, "executorch", "executorch/hydravit.pte", mode="single", entry=f"forward_k{k}",
                                      compute="xnnpack", **latency_stats([k * 0.5, k * 0.6, k * 0.7]))])
    phone = sample_report("Pixel 8", ks=(), model=FULL_SIZE)
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


def _two_exports(tmp_path: Path) -> Path:
    """One device, two exports: 'old' (k 3, 6, 12; measured in January), 'new' (k 3, 6, twice as slow; February)."""
    from hydravit_edge.bench.report import merge_reports

    first = sample_report("laptop", ks=(3, 6, 12), model=SMALL, export_dir="exports/old")
    second = sample_report("laptop", ks=(3, 6), manifest=SHA_B, scale=2.0, model=SMALL, export_dir="exports/new",
                           created="2025-02-01T00:00:00Z")
    merged, _ = merge_reports(first, second)
    path = tmp_path / "reports" / "laptop.json"
    save_report(merged, path)
    return path


def test_lut_takes_one_export_per_device_and_runtime(tmp_path):
    """A report with rows of two exports: the newest export's rows, or the named one's; never a mix (finding 6)."""
    loaded = _loaded([_two_exports(tmp_path)])
    notes: list[str] = []
    data = build_lut(loaded, on_note=notes.append)
    [entry] = data["devices"]
    assert entry["manifest_sha256"] == SHA_B and [r["k"] for r in entry["rows"]] == [3, 6]
    assert entry["rows"][0]["p90_ms"] == pytest.approx(2 * 3 * 1.081)
    assert any("laptop onnxruntime/single/cpu/fp32: export exports/new" in n and "newest of 2" in n for n in notes)
    for wanted in ("aaaaaaaa", "exports/old", "old", "/elsewhere/exports/old"):
        notes.clear()
        [entry] = build_lut(loaded, export=wanted, on_note=notes.append)["devices"]
        assert entry["manifest_sha256"] == SHA_A and [r["k"] for r in entry["rows"]] == [3, 6, 12], wanted
        assert any("export exports/old" in n and "named by --export" in n for n in notes)
    with pytest.raises(UsageError, match="no rows of that export .*it has: old .*new"):
        build_lut(loaded, export="cafe12")


def test_reference_rows_only_for_a_model_of_their_geometry(tmp_path):
    """The published A100 rows are the full-size model's: a LUT of another model leaves them out and says so."""
    small = tmp_path / "small.json"
    save_report(sample_report("laptop", model=SMALL), small)
    notes: list[str] = []
    data = build_lut(_loaded([small]), on_note=notes.append)
    assert [d["name"] for d in data["devices"]] == ["laptop"]
    [line] = [n for n in notes if "reference" in n]
    assert "a100-paper reference is left out" in line and "12 heads x 16, depth 3, 16 px, patch 4" in line
    unknown = tmp_path / "unknown.json"
    save_report(sample_report("phone"), unknown)  # no model section: its geometry is unknown
    assert [d["name"] for d in build_lut(_loaded([unknown]))["devices"]] == ["phone"]
    full = tmp_path / "full.json"
    save_report(sample_report("laptop", model=FULL_SIZE), full)
    assert [d["name"] for d in build_lut(_loaded([full]))["devices"]] == ["laptop", "a100-paper"]


def test_cli_build_names_the_export(tmp_path, capsys):
    from hydravit_edge.bench.report import load_report, manifest_sha256, merge_reports

    path = _two_exports(tmp_path)
    code, out, err = _cli(["lut", "build", str(path), "--out", str(tmp_path / "lut.json")], capsys)
    assert code == 0, err
    out = " ".join(out.split())
    assert "export exports/new (bbbbbbbbbbbb), the newest of 2 measured" in out
    assert "a100-paper reference is left out" in out and "a100-paper" not in load_lut(tmp_path / "lut.json").device_names()
    # an export directory here: its manifest's hash picks the rows
    exp = tmp_path / "exports" / "third"
    exp.mkdir(parents=True)
    (exp / "manifest.json").write_text("{}")
    sha = manifest_sha256(exp)
    merged, _ = merge_reports(load_report(path), sample_report("laptop", ks=(12,), manifest=sha, model=SMALL))
    save_report(merged, path)
    code, out, err = _cli(["lut", "build", str(path), "--out", str(tmp_path / "lut.json"), "--export", str(exp)],
                          capsys)
    assert code == 0, err
    [entry] = load_lut(tmp_path / "lut.json").devices
    assert entry.manifest_sha256 == sha and [r.k for r in entry.rows] == [12]


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
    code, out, _ = _cli(["lut", "pick", "--lut", str(out_path), "--device-name", "Pixel 8", "--battery", "80", "--json"], capsys)
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
