"""Export framework and ONNX target: both modes, manifest + schema + sha256, validation catching a
corrupted artifact, weights stored once, and the user errors (missing checkpoint, k outside the
model, unknown target, unwritable or existing output) leaving nothing half-written."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import refresh_manifest_hashes, tiny_model
from hydravit_edge import HydraConfig, save_checkpoint
from hydravit_edge.cli import main
from hydravit_edge.contract.manifest import Manifest
from hydravit_edge.contract.schemas import schema_path
from hydravit_edge.errors import HydraEdgeError, MissingDependencyError, UsageError
from hydravit_edge.export import (ArtifactRecord, Exporter, ExportError, Status, TensorSpec, ValidationError, api,
                                  compare, register_exporter, registry)
from hydravit_edge.export.api import OutputExistsError, export_model, find_checkpoint, validate_dir
from hydravit_edge.export.hashing import path_sha256

#: weights dominate the file (~200k parameters) while export stays fast (depth 1, 4 patches)
#: the module's exports are shared fixtures: keep its tests on one xdist worker (``--dist loadgroup``)
pytestmark = pytest.mark.xdist_group("export-onnx")

CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
KS = (2, 4)


@pytest.fixture(scope="module")
def model():
    return tiny_model(CFG)


@pytest.fixture(scope="module")
def onnx_exports(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    reports = {}
    for mode in ("single", "per-k"):
        reports[mode] = export_model(model, heads=KS, targets="onnx", mode=mode, out=root / mode)
    return reports


def _entries(parent: Path) -> set[str]:
    return {p.name for p in parent.iterdir()}


# --------------------------------------------------------------------------- ONNX, both modes

def test_onnx_single_graph_switches_k_and_matches_pytorch(onnx_exports, model):
    rep = onnx_exports["single"]
    assert rep.passed and {r.k for r in rep.results} == set(KS)
    assert all(r.status is Status.PASSED and r.max_abs_err <= 1e-4 and r.top1_agreement == 1.0 for r in rep.results)
    t = rep.manifest["targets"]["onnx"]
    assert t["mode"] == "single" and [f["path"] for f in t["files"]] == [
        "onnx/hydravit.k2.onnx", "onnx/hydravit.k4.onnx", "onnx/hydravit.onnx", "onnx/hydravit.onnx.data"]
    assert {a["file"] for a in t["artifacts"]} == {"onnx/hydravit.onnx"}
    # every weight stored once, in the external data file (onnxruntime maps its large tensors);
    # the graph of each k references the same bytes, so the graphs themselves hold no weights
    sizes = {f["path"]: f["bytes"] for f in t["files"]}
    params = sum(p.numel() for p in model.parameters()) * 4
    assert params <= sizes["onnx/hydravit.onnx.data"] < params * 1.1 + 64 * 1024 * 40
    assert all(sizes[f"onnx/hydravit.k{k}.onnx"] < 0.05 * params for k in KS)
    import onnx

    for k in KS:
        g = onnx.load(str(rep.out_dir / f"onnx/hydravit.k{k}.onnx"), load_external_data=False)
        ext = [i for i in g.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        info = [dict((e.key, e.value) for e in i.external_data) for i in ext]
        assert ext and all(d["location"] == "hydravit.onnx.data" for d in info)
        # tensors of 64 KiB or more at 64 KiB-aligned offsets (mapped); the small ones packed after them
        big = [int(d["offset"]) for d in info if int(d["length"]) >= 65536]
        small = [int(d["offset"]) for d in info if int(d["length"]) < 65536]
        assert big and small and all(o % 65536 == 0 for o in big) and all(o % 64 == 0 for o in small)
        assert min(small) > max(big)
    lazy = [r for r in rep.results if r.check == "lazy"]
    assert sorted(r.k for r in lazy) == list(KS) and all(r.ok and r.max_abs_err <= 1e-4 for r in lazy)
    # one session, k chosen per run through the `heads` input (int64, shape [1]), no reload
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(rep.out_dir / "onnx/hydravit.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in sess.get_inputs()] == [("image", "tensor(float)"), ("heads", "tensor(int64)")]
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    for k in (4, 2, 4, 2):
        got = sess.run(["logits"], {"image": x, "heads": np.array([k])})[0]
        ref = model(torch.from_numpy(x), heads=k).detach().numpy()
        assert np.abs(got - ref).max() < 1e-4
    with pytest.raises(Exception, match="heads_must_be_one_of_2_4"):
        sess.run(["logits"], {"image": x, "heads": np.array([3])})


def test_onnx_per_k_files(onnx_exports):
    rep = onnx_exports["per-k"]
    assert rep.passed
    t = rep.manifest["targets"]["onnx"]
    assert t["mode"] == "per-k"
    assert sorted(f["path"] for f in t["files"]) == [f"onnx/k{k}.onnx" for k in KS]
    import onnx

    for a in t["artifacts"]:
        m = onnx.load(str(rep.out_dir / a["file"]))
        assert [i.name for i in m.graph.input] == ["image"] and a["entry"] is None


def test_onnx_single_stores_weights_once(onnx_exports):
    single = onnx_exports["single"].out_dir / "onnx/hydravit.onnx"
    per_k = {k: (onnx_exports["per-k"].out_dir / f"onnx/k{k}.onnx").stat().st_size for k in KS}
    ratio = single.stat().st_size / per_k[max(KS)]
    assert ratio <= 1.10, f"single is {ratio:.2f}x the k={max(KS)} file"
    assert sum(per_k.values()) / per_k[max(KS)] > 1.2  # what storing every k separately would cost


def test_onnx_single_for_a_head_subset_stores_only_those_heads(model, onnx_exports, tmp_path):
    from hydravit_edge.export import get_exporter

    get_exporter("onnx").export(model, (2,), tmp_path, "single")
    per_k2 = onnx_exports["per-k"].out_dir / "onnx/k2.onnx"
    assert (tmp_path / "hydravit.onnx").stat().st_size <= 1.10 * per_k2.stat().st_size


# --------------------------------------------------------------------------- manifest

def test_manifest_matches_schema_and_sha256(onnx_exports):
    import jsonschema

    for rep in onnx_exports.values():
        m = Manifest.load(rep.out_dir).data
        assert m == rep.manifest
        jsonschema.validate(m, json.loads(schema_path(Manifest).read_text()))
        assert m["manifest_version"] == 1 and m["format"] == "hydravit-edge-export"
        assert m["heads"] == list(KS) and m["model"]["config"]["num_heads"] == 4
        assert m["input"]["layout"] == "NCHW" and m["input"]["dtype"] == "float32" and m["input"]["shape"] == [1, 3, 16, 16]
        assert m["input"]["mean"] == list(CFG.mean) and m["labels"] == ["0", "1", "2", "3", "4"]
        for f in m["targets"]["onnx"]["files"]:
            p = rep.out_dir / f["path"]
            assert f["sha256"] == path_sha256(p) and f["bytes"] == p.stat().st_size
        v = m["targets"]["onnx"]["versions"]
        assert {"onnx", "onnxruntime", "torch"} <= set(v)
        ref = np.load(rep.out_dir / m["reference"]["file"])
        assert ref["inputs"].shape == (8, 3, 16, 16) and {f"logits_k{k}" for k in KS} <= set(ref.files)
        assert m["validation"]["status"] == "passed"
        assert _entries(rep.out_dir.parent) == {"single", "per-k"}  # no staging directories left behind


def test_directory_hash_is_a_tree_hash(tmp_path):
    d = tmp_path / "bundle.mlpackage"
    (d / "Data").mkdir(parents=True)
    (d / "Data/w.bin").write_bytes(b"abc")
    (d / "Manifest.json").write_text("{}")
    h1 = path_sha256(d)
    (d / "Data/w.bin").write_bytes(b"abd")
    assert path_sha256(d) != h1 and len(h1) == 64


# --------------------------------------------------------------------------- validation

def test_validate_dir_and_cli(onnx_exports, capsys):
    rep = validate_dir(onnx_exports["single"].out_dir)
    assert rep.passed and {r.check for r in rep.results} == {"integrity", "runtime", "lazy"}
    with pytest.raises(SystemExit) as e:
        main(["validate", str(onnx_exports["per-k"].out_dir)])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "passed" in out and "k4.onnx" in out


def test_validation_catches_a_corrupted_artifact(onnx_exports, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    d = tmp_path / "copy"
    shutil.copytree(onnx_exports["per-k"].out_dir, d)
    # change one weight and keep the manifest's sha256 consistent: only running the artifact can tell
    p = d / "onnx/k4.onnx"
    m = onnx.load(str(p))
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(p))
    refresh_manifest_hashes(d, "onnx", p)
    rep = validate_dir(d)
    bad = [r for r in rep.results if not r.ok]
    assert [(r.k, r.check, r.status) for r in bad] == [(4, "runtime", Status.FAILED)]
    assert "max abs error" in bad[0].reason
    # flipping bytes is caught by the sha256 check as well
    raw = bytearray((d / "onnx/k2.onnx").read_bytes())
    raw[-10] ^= 0xFF
    (d / "onnx/k2.onnx").write_bytes(bytes(raw))
    with pytest.raises(SystemExit) as e:
        main(["validate", str(d)])
    assert e.value.code == 1
    captured = capsys.readouterr()
    assert "sha256" in captured.out and "validation failed" in captured.err


def test_compare_rules():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=np.float32)
    assert compare("t", 1, ref + 5e-5, ref, 1e-4).status is Status.PASSED
    r = compare("t", 1, ref + 2e-4, ref, 1e-4)
    assert r.status is Status.FAILED and "tolerance" in r.reason
    flipped = ref[:, ::-1].copy()
    assert "top-1 differs on 1 of 2" in compare("t", 1, flipped, ref, 0.4).reason
    assert compare("t", 1, ref[:1], ref, 1e-4).status is Status.FAILED  # shape
    assert ValidationError  # exported name


# --------------------------------------------------------------------------- a fast fake target

class _Fake(Exporter):
    name = "fake-test"
    title = "fake"
    suffix = ".bin"
    wrong = False
    fail_after_write = False

    def export(self, model, heads, out_dir, mode, progress=None, pool=None, quant=None):
        recs = []
        for k in heads:
            f = self.single_filename if mode == "single" else self.per_k_filename(k)
            (Path(out_dir) / f).write_bytes(b"w" * 64)
            if self.fail_after_write:
                raise ExportError("fake exporter failed half-way")
            recs.append(ArtifactRecord(k, f, None, "graph", mode, [TensorSpec("image", [1, 3, 16, 16])],
                                       [TensorSpec("logits", [1, 5])]))
        return recs

    def validate(self, out_dir, records, reference, progress=None, quant=None, heldout=None):
        return [compare(self.name, r.k, reference.logits[r.k] + (1.0 if self.wrong else 0.0), reference.logits[r.k],
                        self.tolerance) for r in records]


@pytest.fixture()
def fake():
    register_exporter(_Fake)
    _Fake.wrong = _Fake.fail_after_write = False
    yield _Fake
    registry._REGISTRY.pop(_Fake.name, None)


@pytest.fixture()
def ckpt(tmp_path, model):
    p = tmp_path / "runs" / "r1" / "best.safetensors"
    save_checkpoint(model, p)
    return p


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return (e.value.code or 0), out.out, out.err


def test_existing_output_needs_force(fake, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["export", "--checkpoint", str(ckpt), "--target", "fake-test", "--out", str(out)], capsys)
    assert code == 0, err
    (out / "marker").write_text("keep me")
    code, _, err = _run(["export", "--checkpoint", str(ckpt), "--target", "fake-test", "--out", str(out)], capsys)
    assert code == 1 and "already exists" in err and "--force" in err
    assert (out / "marker").read_text() == "keep me"
    code, _, err = _run(["export", "--checkpoint", str(ckpt), "--target", "fake-test", "--out", str(out), "--force"], capsys)
    assert code == 0, err
    assert not (out / "marker").exists() and (out / "manifest.json").exists()
    assert _entries(tmp_path) == {"runs", "out"}


def test_validation_failure_exits_nonzero_and_keeps_previous_output(fake, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(["export", "-c", str(ckpt), "-t", "fake-test", "-o", str(out)], capsys)[0] == 0
    before = (out / "manifest.json").read_text()
    fake.wrong = True
    code, stdout, err = _run(["export", "-c", str(ckpt), "-t", "fake-test", "-o", str(out), "--force"], capsys)
    assert code == 1 and "validation failed" in err and "failed" in stdout
    assert (out / "manifest.json").read_text() == before  # the good export was not replaced
    failed = json.loads((tmp_path / "out.failed" / "manifest.json").read_text())
    assert failed["validation"]["status"] == "failed"


def test_failure_during_export_leaves_nothing(fake, model, tmp_path):
    fake.fail_after_write = True
    with pytest.raises(HydraEdgeError, match="half-way"):
        export_model(model, heads="2,4", targets="fake-test", out=tmp_path / "out")
    assert _entries(tmp_path) == set()


def test_unwritable_output(fake, model, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(HydraEdgeError, match="cannot write"):
        export_model(model, heads="2", targets="fake-test", out=tmp_path / "afile" / "out")
    assert _entries(tmp_path) == {"afile"}


def test_user_errors(fake, ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["export", "-c", str(tmp_path / "missing.safetensors"), "-t", "fake-test"], capsys)
    assert code == 2 and "no such checkpoint" in err
    code, _, err = _run(["export", "-c", str(ckpt), "--heads", "5", "-t", "fake-test"], capsys)
    assert code == 2 and "5" in err and "not available" in err
    code, _, err = _run(["export", "-c", str(ckpt), "-t", "tensorrt"], capsys)
    assert code == 2 and "unknown target 'tensorrt'" in err and "onnx" in err
    code, _, err = _run(["export", "-c", str(ckpt), "-t", "fake-test", "--mode", "both"], capsys)
    assert code == 2 and "unknown mode" in err
    code, _, err = _run(["export", "--runs-dir", str(tmp_path / "empty"), "-t", "fake-test"], capsys)
    assert code == 2 and "train" in err and "--checkpoint" in err
    code, _, err = _run(["validate", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such export directory" in err
    assert _entries(tmp_path) == {"runs"}  # nothing written by any of them


def test_newest_run_and_best_checkpoint_are_used(fake, model, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    old = save_checkpoint(model, runs / "old" / "best.safetensors")
    new_last = save_checkpoint(model, runs / "new" / "last.safetensors")
    new_best = save_checkpoint(model, runs / "new" / "best.safetensors")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert find_checkpoint(runs) == new_best
    new_best.unlink()
    assert find_checkpoint(runs) == new_last
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["export", "-t", "fake-test", "--heads", "2,3"], capsys)
    assert code == 0 and "runs/new/last.safetensors" in err
    m = Manifest.load(tmp_path / "exports" / "new-fake-test-single").data
    assert m["source"]["path"].endswith("runs/new/last.safetensors") and m["heads"] == [2, 3]


def test_target_all_skips_missing_dependencies(monkeypatch):
    from hydravit_edge.export import get_exporter

    cls = type(get_exporter("onnx"))
    monkeypatch.setattr(cls, "missing", lambda self, purpose="export": "ONNX export needs onnx; install it with: pip x")
    chosen, skipped = api.resolve_targets("all", "single")
    assert "onnx" in skipped and "onnx" not in [e.name for e in chosen]
    with pytest.raises(MissingDependencyError, match="pip x"):
        api.resolve_targets("onnx", "single")
    with pytest.raises(UsageError):
        api.resolve_targets("all,onnx", "single")


# --------------------------------------------------------------------------- thin exporters

def test_exporters_read_the_targets_table_and_declare_one_io_spec():
    from hydravit_edge.export import IOSpec, get_exporter
    from hydravit_edge.targets import TARGETS, runtime_for_target

    for t in TARGETS:
        cls = type(get_exporter(t.name))
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        declared = {n.id for s in body if isinstance(s, (ast.Assign, ast.AnnAssign))
                    for n in (s.targets if isinstance(s, ast.Assign) else [s.target]) if isinstance(n, ast.Name)}
        assert not {"title", "suffix", "extra", "modes", "runtime", "runtime_requires"} & declared, t.name
        assert cls.runtime == t.runtime and cls.runtime_requires == runtime_for_target(t.name).modules
        assert isinstance(cls.io, IOSpec)
        ex = cls()
        for mode in ("single", "per-k"):  # every record is built from the spec
            rec = ex.record(CFG, 2, mode, entry=ex.entry_name(2) if mode == "single" else None)
            assert rec.inputs == ex.io.inputs(CFG, mode) and rec.outputs == ex.io.outputs(CFG)
            assert [i.name for i in rec.inputs][0] == "image" and [o.name for o in rec.outputs] == ["logits"]
    assert [i.name for i in get_exporter("onnx").io.inputs(CFG, "single")] == ["image", "heads"]
    assert get_exporter("onnx").io.inputs(CFG, "per-k")[0].shape == ["batch", 3, 16, 16]


def test_converting_names_target_k_and_the_converters_first_line():
    from hydravit_edge.export import converting

    with pytest.raises(ExportError, match=r"^tflite k=3\.\.5: litert-torch convert failed: RuntimeError: boom$") as e:
        with converting("tflite", "litert-torch convert", [3, 4, 5]):
            raise RuntimeError("boom\nthe rest of a long converter trace")
    assert isinstance(e.value.__cause__, RuntimeError)
    with pytest.raises(MissingDependencyError, match="^pip x$"):  # errors meant for the user pass unchanged
        with converting("onnx", "torch.onnx.export", 2):
            raise MissingDependencyError("pip x")


def test_a_converter_failure_is_the_one_export_error(model, tmp_path, monkeypatch):
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::foo\n(long trace)")

    monkeypatch.setattr(torch.onnx, "export", broken)
    for mode in ("per-k", "single"):
        with pytest.raises(ExportError, match=r"^onnx k=2: torch.onnx.export failed: RuntimeError: unsupported "
                                              r"operator aten::foo$"):
            export_model(model, heads=KS, targets="onnx", mode=mode, out=tmp_path / mode, jobs=1)
    assert _entries(tmp_path) == set()


def test_the_model_is_narrowed_once(model, tmp_path, monkeypatch):
    from hydravit_edge.model import HydraViT

    calls = []
    real = HydraViT.narrow
    monkeypatch.setattr(HydraViT, "narrow", lambda self, kmax: calls.append(kmax) or real(self, kmax))
    for mode in ("single", "per-k"):
        calls.clear()
        export_model(model, heads=(2, 3), targets="onnx", mode=mode, out=tmp_path / mode, jobs=1, validate=False)
        assert calls == [3], mode  # by export_model, for the pool; no exporter narrows again


def test_the_manifest_carries_the_slicing_table_a_torch_free_runtime_cuts_k_with(fake, model, tmp_path):
    """issue 12 point 1: the manifest's table and the exported model's full weights give subnet(k)."""
    import torch

    from hydravit_edge.slicing import SliceTable, cut

    out = tmp_path / "out"
    export_model(model, heads=(1, 3), targets="fake-test", mode="single", out=out)
    man = Manifest.load(out)
    assert isinstance(man.slicing, SliceTable)
    assert man.slicing.num_heads == 3  # the model narrowed to max(heads), which the single artifact stores
    raw = json.loads((out / "manifest.json").read_text())["slicing"]
    full = {n: t.detach().numpy() for n, t in model.narrow(3).state_dict().items()}
    for k in (1, 3):
        mine = cut(raw, full, k)  # the JSON form, numpy only
        want = model.subnet(k).state_dict()
        assert list(mine) == list(want)
        for key, t in want.items():
            np.testing.assert_array_equal(mine[key], t.numpy(), err_msg=f"k={k} {key}")
    with torch.no_grad():
        assert model.narrow(3).slicing.to_dict() == raw
