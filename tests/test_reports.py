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
#: the published reference's geometry (the full-size model) and a small one
FULL_SIZE = {"name": "hydravit", "num_heads": 12, "head_dim": 64, "depth": 12, "img_size": 224, "patch_size": 16}
SMALL = {"name": "hydravit", "num_heads": 12, "head_dim": 16, "depth": 3, "img_size": 16, "patch_size": 4}


def sample_report(name: str = "test-box", manifest: str = SHA_A, ks=(3, 6, 12), backend: str = "onnxruntime",
                  scale: float = 1.0, model=None, created: str = "2025-01-01T00:00:00Z",
                  export_dir=None) -> dict:
    dev = {"name": name, "platform": "linux", "cpu": "Test CPU", "cpu_cores": 2, "runtimes": {"onnxruntime": "1.31.0"}}
    report = new_report(dev, manifest_sha256=manifest, settings={"threads": 2, "batch": 8, "runs": 10, "warmup": 2},
                        created=created, model=model, export_dir=export_dir)
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
    # another export of the same device: its rows join the first export's, which stay
    other = ReportWriter(path, sample_report(ks=(), manifest=SHA_B), resume=True)
    assert [(r["k"], r["manifest_sha256"]) for r in other.report["rows"]] == [(3, SHA_A), (4, SHA_A)]
    other.add(make_row(3, "onnxruntime", "onnx/hydravit.onnx", mode="single", **latency_stats([5.0])))
    rows = load_report(path)["rows"]
    assert [(r["k"], r["manifest_sha256"]) for r in rows] == [(3, SHA_A), (4, SHA_A), (3, SHA_B)]


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        values = rng.random(n).tolist()
        for q in (0, 10, 50, 90, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    stats = latency_stats([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats == {"latency_median_ms": 3.0, "latency_p90_ms": 4.6, "latency_min_ms": 1.0, "runs": 5}


def test_device_info_takes_the_cpu_model_from_py_cpuinfo(monkeypatch):
    import sys

    import cpuinfo

    from hydravit_edge.bench import device

    device._cpu_model.cache_clear()
    monkeypatch.setattr(cpuinfo, "get_cpu_info", lambda: {"brand_raw": "Test CPU 9000"})
    assert device_info("x", detect_gpu=False, runtimes={})["cpu"] == "Test CPU 9000"
    device._cpu_model.cache_clear()
    monkeypatch.setitem(sys.modules, "cpuinfo", None)  # not installed: /proc/cpuinfo or platform
    monkeypatch.setattr(device, "_cpu_model_fallback", lambda: "from /proc/cpuinfo")
    assert device_info("x", detect_gpu=False, runtimes={})["cpu"] == "from /proc/cpuinfo"
    device._cpu_model.cache_clear()


def test_memory_and_cpus_come_from_psutil(monkeypatch):
    import psutil

    from hydravit_edge import memory

    class VM:
        available = 3e9
        total = 8e9

    monkeypatch.setattr(psutil, "virtual_memory", lambda: VM())
    assert memory.available_bytes() == 3e9
    assert 1 <= memory.cpu_count() <= (psutil.cpu_count() or 1)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 6 if logical else 3)
    info = device_info("x", detect_gpu=False, runtimes={})
    assert (info["cpu_cores"], info["cpu_physical_cores"], info["memory_mb"]) == (6, 3, 8000.0)


def test_one_clock_and_byte_sizes():
    import re

    from hydravit_edge.clock import parse_time, utc_now
    from hydravit_edge.console import human_bytes

    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now) and parse_time(now).tzinfo is not None
    assert parse_time("2025-01-01T00:00:00Z") < parse_time("2025-01-01T00:00:01+00:00") and parse_time("x") is None
    assert new_report({"name": "a", "platform": "linux"})["created"][:4] == now[:4]
    assert (human_bytes(500), human_bytes(1_234_567), human_bytes(2.5e9)) == ("500 bytes", "1.23 MB", "2.50 GB")


# ------------------------------------------------------------------ several exports of one device

def test_rows_of_two_exports_live_side_by_side():
    """The same k and configuration may appear once per export; twice in one export is an error."""
    report = sample_report(ks=(3,))
    row = dict(report["rows"][0], manifest_sha256=SHA_B)
    validate_report(dict(report, rows=report["rows"] + [row]))
    with pytest.raises(ReportError, match="repeats rows"):
        validate_report(dict(report, rows=report["rows"] + [dict(row, manifest_sha256=SHA_A)]))
    with pytest.raises(ReportError, match="repeats rows"):  # a row without one belongs to the report's
        validate_report(dict(report, rows=report["rows"] + [{k: v for k, v in row.items() if k != "manifest_sha256"}]))


def test_merge_keeps_other_exports_and_replaces_only_the_same_artifact():
    from hydravit_edge.bench.report import export_groups, merge_reports

    old = sample_report(ks=(3, 6), model=SMALL, export_dir="exports/a")
    second, counts = merge_reports(old, sample_report(ks=(3,), manifest=SHA_B, scale=2.0, export_dir="exports/b",
                                                      created="2025-02-01T00:00:00Z"))
    assert (counts.replaced, counts.kept_other, counts.other_exports) == (0, 2, ["a"])
    assert [(r["manifest_sha256"], r["k"], r["export_dir"]) for r in second["rows"]] == [
        (SHA_A, 3, "exports/a"), (SHA_A, 6, "exports/a"), (SHA_B, 3, "exports/b")]
    validate_report(second)
    # the first export again, k=6 only: its k=6 row is replaced, everything else stays
    third, counts = merge_reports(second, sample_report(ks=(6,), scale=3.0, export_dir="exports/a"))
    assert (counts.replaced, counts.kept_same, counts.kept_other) == (1, 1, 1)
    by = {(r["manifest_sha256"], r["k"]): r["latency_median_ms"] for r in third["rows"]}
    assert sorted(by) == [(SHA_A, 3), (SHA_A, 6), (SHA_B, 3)]
    assert by[(SHA_A, 6)] == pytest.approx(3 * 6 * 1.045) and by[(SHA_B, 3)] == pytest.approx(2 * 3 * 1.045)
    groups = export_groups(third)
    assert [(g.label, len(g.rows)) for g in groups] == [("a", 2), ("b", 1)]
    assert groups[0].model["head_dim"] == 16  # each export keeps its model


def test_an_older_report_reads_as_one_export():
    """Rows without manifest_sha256 (reports before it, the apps' reports) take the report's."""
    from hydravit_edge.bench.report import export_groups, merge_reports

    old = sample_report(ks=(3, 6), model=FULL_SIZE)
    old.pop("exports")
    old["settings"]["export_dir"] = "exports/old"
    for r in old["rows"]:
        assert "manifest_sha256" not in r
    validate_report(old)
    [group] = export_groups(old)
    assert (group.manifest_sha256, group.export_dir, group.model, len(group.rows)) == (SHA_A, "exports/old",
                                                                                       FULL_SIZE, 2)
    merged, counts = merge_reports(old, sample_report(ks=(3,), manifest=SHA_B))
    assert counts.kept_other == 2 and {r["manifest_sha256"] for r in merged["rows"]} == {SHA_A, SHA_B}
    assert merged["manifest_sha256"] == SHA_B  # the export measured last
    assert next(e for e in merged["exports"] if e["manifest_sha256"] == SHA_A)["model"] == FULL_SIZE


def test_export_labels_tell_apart_exports_of_one_directory():
    from hydravit_edge.bench.report import export_groups, merge_reports

    merged, _ = merge_reports(sample_report(ks=(3,), export_dir="exports/x"),
                              sample_report(ks=(3,), manifest=SHA_B, export_dir="exports/x"))
    assert [g.label for g in export_groups(merged)] == ["x@aaaaaaaa", "x@bbbbbbbb"]
    assert [g.label for g in export_groups(sample_report(ks=(3,)))] == ["aaaaaaaa"]


def test_reference_only_for_a_model_of_its_geometry():
    from hydravit_edge.bench.reference import reference_if_matching, same_geometry

    ref, why = reference_if_matching([FULL_SIZE])
    assert ref is not None and ref["device"]["name"] == "a100-paper" and why is None
    ref, why = reference_if_matching([{"name": "x", "config": dict(FULL_SIZE)}])  # the harness's config dict
    assert ref is not None
    ref, why = reference_if_matching([SMALL])
    assert ref is None and why.count("\n") == 0
    assert "left out" in why and "12 heads x 64, depth 12, 224 px, patch 16" in why and "12 heads x 16, depth 3" in why
    ref, why = reference_if_matching([None])  # a report that does not say its model
    assert ref is None and "unstated geometry" in why
    assert not same_geometry(FULL_SIZE, dict(FULL_SIZE, depth=None))


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
    # another export: its rows join the stored ones, which are kept (finding 6)
    save_report(sample_report("Pixel 8", ks=(3,), manifest=SHA_B), src)
    res = import_report(src, reports)
    assert (res.rows, res.replaced, res.kept, res.dropped) == (4, 0, 3, 0) and "other export" in res.note
    stored = load_report(res.path)
    assert sorted((r["manifest_sha256"][0], r["k"]) for r in stored["rows"]) == [("a", 3), ("a", 6), ("a", 12),
                                                                                ("b", 3)]
    assert [e["manifest_sha256"] for e in stored["exports"]] == [SHA_A, SHA_B]
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
