"""One contract: the manifest, report and LUT models, their generated schemas, and the table of targets."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from hydravit_edge.contract import schemas
from hydravit_edge.contract.lut import Lut
from hydravit_edge.contract.manifest import Manifest, ManifestError
from hydravit_edge.contract.report import Report, ReportError
from hydravit_edge.targets import RUNTIMES, TARGETS, python_runtimes, runtime_for_target, runtime_names

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "policy_vectors.json").read_text())
REFERENCE = ROOT / "bench" / "data" / "reference_a100_paper.json"


# ------------------------------------------------------------------ generated schemas

def test_committed_schema_files_are_the_generated_ones():
    """The Kotlin/Swift apps and their tests read these files; they must be what the models say."""
    assert schemas.stale() == [], "run `python -m hydravit_edge.contract.schemas --write` and commit the result"
    assert schemas.main(["--check"]) == 0


def test_schema_paths_are_the_ones_the_apps_read():
    assert schemas.schema_path(Manifest) == ROOT / "export" / "schemas" / "manifest.schema.json"
    assert schemas.schema_path(Report) == ROOT / "bench" / "schemas" / "report.schema.json"
    assert schemas.schema_path(Lut) == ROOT / "hydravit_edge" / "schemas" / "lut.schema.json"


def test_a_stale_schema_file_fails_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(schemas, "schema_path", lambda model: tmp_path / f"{model.__name__}.json")
    (tmp_path / "Lut.json").write_text(schemas.render(Lut).replace('"minimum": 1', '"minimum": 2', 1))
    assert tmp_path / "Lut.json" in schemas.stale([Lut])
    assert schemas.write([Lut]) == [tmp_path / "Lut.json"] and schemas.stale([Lut]) == []


def _validator(model):
    schema = json.loads(schemas.schema_path(model).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_shipped_documents_match_model_and_schema():
    ref = json.loads(REFERENCE.read_text())
    Report.check(ref, "reference")
    _validator(Report).validate(ref)
    for name, lut in VECTORS["luts"].items():
        Lut.check(lut, name)
        _validator(Lut).validate(lut)


def test_schema_rejects_what_the_model_rejects():
    ref = json.loads(REFERENCE.read_text())
    v = _validator(Report)
    for mutate in (lambda r: r["rows"][0].update(backend="tensorrt"), lambda r: r.update(source="guessed"),
                   lambda r: r["rows"][0].update(k=0), lambda r: r.update(extra_field=1),
                   lambda r: r["rows"][0].update(latency_p90_ms=None, throughput_per_s=None)):
        bad = copy.deepcopy(ref)
        mutate(bad)
        assert not v.is_valid(bad)
        with pytest.raises(ReportError):
            Report.check(bad)


def test_a_written_manifest_reads_back_as_written(tmp_path):
    from helpers import tiny_model

    from hydravit_edge.export.api import export_model

    rep = export_model(tiny_model(), heads=(1, 2), targets="onnx", mode="single", out=tmp_path / "e", validate=False)
    man = Manifest.load(rep.out_dir)
    assert man.data == rep.manifest and man.to_dict() == rep.manifest  # nothing lost or added
    _validator(Manifest).validate(man.data)
    assert man.dir == rep.out_dir and man.target_names() == ["onnx"] and man.target_mode("onnx") == "single"
    assert man.heads == [1, 2] and man.img_size == 32 and man.in_chans == 3 and man.labels == [str(i) for i in range(5)]
    files = man.files_by_artifact("onnx")
    assert list(files) == ["onnx/hydravit.onnx"] and [r["k"] for r in files["onnx/hydravit.onnx"]] == [1, 2]
    assert man.file_bytes("onnx", "onnx/hydravit.onnx") == sum(  # the graph and its weights, stored once
        (rep.out_dir / "onnx" / f).stat().st_size for f in ("hydravit.onnx", "hydravit.onnx.data"))
    assert sorted(man.lazy_graphs("onnx")) == [1, 2] and man.lazy_graphs("onnx")[2][0] == "onnx/hydravit.k2.onnx"
    with pytest.raises(ManifestError, match="has no 'coreml' artifacts"):
        man.target("coreml")

    broken = copy.deepcopy(rep.manifest)
    broken["targets"]["onnx"]["artifacts"][1]["entry_kind"] = "tensor"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(ManifestError, match=r"targets\.onnx\.artifacts\[1\]\.entry_kind"):
        Manifest.load(tmp_path / "b")
    assert not _validator(Manifest).is_valid(broken)
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(dict(rep.manifest, manifest_version=2)))
    with pytest.raises(ManifestError, match="manifest version 2 is not supported"):
        Manifest.load(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_text("{ no")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(tmp_path / "b")


def test_manifest_reader_errors(tmp_path):
    with pytest.raises(ManifestError, match="no such export directory"):
        Manifest.load(tmp_path / "missing")
    with pytest.raises(ManifestError, match="no manifest.json here"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(ManifestError, match="expected a JSON object"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ManifestError, match="not a hydravit-edge export manifest"):
        Manifest.load(tmp_path)


def test_the_contract_imports_no_torch_and_no_tool_package():
    code = ("import sys\nimport hydravit_edge.contract.schemas, hydravit_edge.targets\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('hydravit_edge.bench', "
            "'hydravit_edge.export', 'hydravit_edge.train'))]\nprint(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ the table of targets

def test_targets_table_matches_the_exporters():
    from hydravit_edge.export import exporter_names, get_exporter

    names = [t.name for t in TARGETS]
    assert [n for n in exporter_names() if n in names] == names  # tests may register more (fake targets)
    for t in TARGETS:
        ex = get_exporter(t.name)
        assert (ex.suffix, ex.title, ex.extra, tuple(ex.modes)) == (t.suffix, t.title, t.extra, t.modes), t.name
        assert runtime_for_target(t.name).name == t.runtime


def test_runtimes_table_matches_the_engines():
    from hydravit_edge.bench.harness import bench_engines
    from hydravit_edge.engines import engine_names, get_engine

    assert engine_names() == list(runtime_names())  # one engine per runtime of the table, in its order
    for r in RUNTIMES:
        e = get_engine(r.name)
        assert (e.target, tuple(e.modules), e.extra) == (r.target, r.modules, r.extra), r.name
    assert [e.name for e in bench_engines()] == [r.name for r in RUNTIMES if r.bench]
    assert python_runtimes() == ("onnxruntime", "executorch", "tflite")
    schema = json.loads(schemas.schema_path(Report).read_text())
    assert tuple(schema["$defs"]["row"]["properties"]["backend"]["enum"]) == runtime_names()
