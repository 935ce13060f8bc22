"""Benchmark reports: schema, validation errors, atomic saving, import, and the published A100 reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hydravit_edge.bench.device import device_info
from hydravit_edge.bench.report import (
    REFERENCE_REPORT_PATH, ReportError, ReportWriter, device_slug, load_reference, load_report, make_row,
    manifest_sha256, new_report, report_path, save_report, upsert_rows, validate_report,
)
from hydravit_edge.bench.report_import import import_report
from hydravit_edge.bench.stats import latency_stats, percentile
from hydravit_edge.errors import UsageError

SHA_A = "a" * 64
SHA_B = "b" * 64


def sample_report(name: str = "test-box", manifest: str = SHA_A, ks=(3, 6, 12), backend: str = "onnxruntime",
                  scale: float = 1.0) -> dict:
    dev = {"name": name, "platform": "linux", "cpu": "Test CPU", "cpu_cores": 2, "runtimes": {"onnxruntime": "1.31.0"}}
    report = new_report(dev, manifest_sha256=manifest, settings={"threads": 2, "batch": 8, "runs": 10, "warmup": 2},
                        created="2025-01-01T00:00:00Z")
    for k in ks:
        samples = [scale * k * (1 + 0.01 * i) for i in range(10)]
        upsert_rows(report, [make_row(k, backend, "onnx/hydravit.onnx", target="onnx", mode="single", compute="cpu",
                                      precision="fp32", **latency_stats(samples), throughput_batch=8,
                                      throughput_per_s=1000.0 / k, load_ms=20.0, switch_ms=0.1, peak_rss_mb=100.0 + k,
                                      file_bytes=1000, params=k * 1000, macs=k * 10**6, paper_ram_mb=1.0 * k)])
    return report


# ------------------------------------------------------------------ the published reference

def test_reference_is_published_and_valid():
    ref = load_reference()
    assert ref["source"] == "published" and ref["device"]["gpu"] == "NVIDIA A100 80GB PCIe"
    assert [r["k"] for r in ref["rows"]] == list(range(3, 13))
    by_k = {r["k"]: r for r in ref["rows"]}
    assert by_k[12]["throughput_per_s"] == 1754.1 and by_k[12]["throughput_batch"] == 512
    assert by_k[3]["throughput_per_s"] == 10047.6 and by_k[3]["accuracy"]["top1"] == 0.7056
    assert by_k[6]["extra"]["embed_dim"] == 384
    assert all(r["latency_p90_ms"] is None for r in ref["rows"])  # nothing made up


def test_reference_matches_the_profile():
    """The paper's params/MACs/RAM per width agree with the analytic profile of the base config."""
    from hydravit_edge import preset, profile

    rows = {r["k"]: r for r in load_reference()["rows"]}
    for p in profile(preset("base"), range(3, 13)):
        r = rows[p.k]
        assert abs(r["macs"] - p.macs) <= 0.006e9, p.k
        assert abs(r["paper_ram_mb"] - p.ram_mb) <= 0.02, p.k
        assert abs(r["params"] - p.params) <= 0.2e6, p.k  # the paper prints 72.7 M for k=11 (72.87 M)


# ------------------------------------------------------------------ building and saving

def test_round_trip_and_atomic_save(tmp_path):
    report = sample_report()
    path = save_report(report, report_path(tmp_path / "reports", "test box"))
    assert path.name == "test-box.json"
    assert load_report(path) == report
    assert [p.name for p in path.parent.iterdir()] == ["test-box.json"]  # no temporary files left


def test_device_info_is_valid():
    info = device_info("this one", detect_gpu=False, runtimes={"onnxruntime": "1.0"})
    assert info["cpu_cores"] >= 1 and info["platform"] in ("linux", "macos", "windows", "other")
    validate_report(new_report(info))


def test_writer_keeps_finished_rows_when_interrupted(tmp_path):
    path = tmp_path / "r.json"
    writer = ReportWriter(path, sample_report(ks=()))
    for k in (3, 4, 5):
        if k == 5:
            break  # the benchmark is killed here
        writer.add(make_row(k, "onnxruntime", "onnx/hydravit.onnx", mode="single", **latency_stats([1.0, 2.0, 3.0])))
    assert [r["k"] for r in load_report(path)["rows"]] == [3, 4]
    resumed = ReportWriter(path, sample_report(ks=()), resume=True)
    assert [r["k"] for r in resumed.report["rows"]] == [3, 4]
    other = ReportWriter(path, sample_report(ks=(), manifest=SHA_B), resume=True)
    assert other.report["rows"] == []  # rows of another export are not resumed


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        values = rng.random(n).tolist()
        for q in (0, 10, 50, 90, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    stats = latency_stats([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats == {"latency_median_ms": 3.0, "latency_p90_ms": 4.6, "latency_min_ms": 1.0, "runs": 5}


def test_make_row_rejects_unknown_fields():
    with pytest.raises(UsageError, match="latency_p90"):
        make_row(3, "onnxruntime", "a.onnx", latency_p90=3.0)


def test_device_slug():
    assert device_slug("Pixel 8 Pro") == "Pixel-8-Pro"
    assert device_slug("iPhone16,1") == "iPhone16-1"
    with pytest.raises(UsageError):
        device_slug(" // ")


def test_manifest_sha256(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    assert manifest_sha256(tmp_path) == manifest_sha256(tmp_path / "manifest.json")
    assert len(manifest_sha256(tmp_path)) == 64
    with pytest.raises(ReportError, match="no export manifest"):
        manifest_sha256(tmp_path / "nothing")


# ------------------------------------------------------------------ validation errors

def _mutate(fn):
    report = sample_report()
    fn(report)
    return report


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r.update(schema_version=2), "schema_version 2 is not supported"),
    (lambda r: r.pop("schema_version"), "no 'schema_version'"),
    (lambda r: r.update(source="guessed"), "source"),
    (lambda r: r["device"].pop("name"), "'name' is a required property"),
    (lambda r: r["rows"][1].update(backend="tensorrt"), "rows[1].backend"),
    (lambda r: r["rows"][0].update(latency_p90_ms=None, throughput_per_s=None), "needs a numeric latency_p90_ms or throughput_per_s"),
    (lambda r: r["rows"][0].update(latency_median_ms=99.0), "exceeds latency_p90_ms"),
    (lambda r: r["rows"][0].update(latency_min_ms=-1.0), "rows[0].latency_min_ms"),
    (lambda r: r["rows"].append(dict(r["rows"][0])), "repeats rows[0]"),
    (lambda r: r["rows"][0].update(k=0), "rows[0].k"),
    (lambda r: r.update(manifest_sha256="xyz"), "manifest_sha256"),
    (lambda r: r["rows"][0].update(accuracy={"dataset": "d", "top1": 81.1}), "rows[0].accuracy"),
    (lambda r: r.update(extra_field=1), "extra_field"),
])
def test_validation_errors(mutate, words):
    with pytest.raises(ReportError) as info:
        validate_report(_mutate(mutate), where="r.json")
    assert words in str(info.value) and str(info.value).startswith("r.json: ")


def test_not_a_report():
    with pytest.raises(ReportError, match="expected a JSON object"):
        validate_report([1, 2])


def test_load_errors(tmp_path):
    with pytest.raises(ReportError, match="no such report"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        load_report(bad)


def test_save_refuses_invalid_and_keeps_old(tmp_path):
    path = save_report(sample_report(), tmp_path / "r.json")
    before = path.read_text()
    broken = _mutate(lambda r: r["rows"][0].update(k="three"))
    with pytest.raises(ReportError):
        save_report(broken, path)
    assert path.read_text() == before


# ------------------------------------------------------------------ import

def test_import_stores_and_merges(tmp_path):
    reports = tmp_path / "reports"
    phone = sample_report("Pixel 8", ks=(3, 6))
    src = tmp_path / "phone.json"
    save_report(phone, src)
    res = import_report(src, reports)
    assert res.path == reports / "Pixel-8.json" and res.rows == 2
    # same manifest: new rows replace same k, others are kept
    save_report(sample_report("Pixel 8", ks=(6, 12), scale=2.0), src)
    res = import_report(src, reports)
    assert (res.rows, res.replaced, res.kept, res.dropped) == (3, 1, 1, 0)
    stored = load_report(res.path)
    assert {r["k"]: r["latency_median_ms"] for r in stored["rows"]}[6] == pytest.approx(2 * 6 * 1.045)
    # another export: stale rows are dropped
    save_report(sample_report("Pixel 8", ks=(3,), manifest=SHA_B), src)
    res = import_report(src, reports)
    assert (res.rows, res.dropped) == (1, 3) and "different export manifest" in res.note
    # --replace
    save_report(sample_report("Pixel 8", ks=(6,), manifest=SHA_B), src)
    assert import_report(src, reports, merge=False).rows == 1


def test_import_rejects_bad_report_and_writes_nothing(tmp_path):
    src = tmp_path / "phone.json"
    src.write_text(json.dumps(_mutate(lambda r: r.update(schema_version=7))))
    with pytest.raises(ReportError, match="schema_version 7"):
        import_report(src, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_bench_import_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    bench = typer.Typer()

    @bench.callback()
    def _group():  # a group, like the real `bench` sub-app
        pass

    from hydravit_edge.bench.cli import bench_import

    bench.command("import")(bench_import)
    src = tmp_path / "phone.json"
    save_report(sample_report("Galaxy S24"), src)
    result = CliRunner().invoke(bench, ["import", str(src), "--reports-dir", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    assert "Galaxy-S24.json" in result.output.replace("\n", "") and (tmp_path / "reports" / "Galaxy-S24.json").exists()


def test_reference_file_is_package_data():
    assert REFERENCE_REPORT_PATH.parent.name == "data" and REFERENCE_REPORT_PATH.exists()
