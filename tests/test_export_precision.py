"""Precisions: fp16 / int8 / int8-static ONNX artifacts in both modes, the shared per-channel int8
cut, validation per precision (labelled and unlabelled), calibration errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, tiny_model
from hydravit_edge.errors import UsageError
from hydravit_edge.precision import (cut_rows, dequantize_rows, parse_precisions, quantize_rows, split_variant_key,
                                     variant_key)

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

#: the module's exports are a shared fixture: keep its tests on one xdist worker (``--dist loadgroup``)
pytestmark = pytest.mark.xdist_group("export-precision-onnx")


# ---------------------------------------------------------------- the per-channel cut

def test_the_cut_of_k_is_the_leading_block_of_the_full_quantization():
    """int8 values and scales of k == the full tensor's block: rows and scales of k's output
    channels, k's input columns; nothing is re-quantized."""
    model = tiny_model()
    table = model.slicing
    full = {n: t.detach().numpy() for n, t in model.state_dict().items()}
    checked = 0
    for k in (1, 2, 3):
        for key, source in table.subnet_params(k).items():
            w = full[source]
            if w.ndim != 2:
                continue
            cut = table.cut_of(source, k)
            if cut.ranges is None or len(cut.pieces) != 1:
                continue
            q, s = quantize_rows(w)
            qk, sk = cut_rows(q, s, cut.pieces[0])
            block = cut.pieces[0]
            assert np.array_equal(qk, q[block]) and np.array_equal(sk, s[block[0]])
            # the values are those of the full quantization, and they approximate k's weights
            sub = w[block]
            assert np.max(np.abs(dequantize_rows(qk, sk) - sub)) <= np.max(sk) / 2 + 1e-7
            checked += 1
    assert checked >= 6


def test_quantize_rows_is_symmetric_per_output_channel():
    w = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.1, 0.2, -0.3]], np.float32)
    q, s = quantize_rows(w)
    assert q.dtype == np.int8 and s.shape == (3,)
    assert np.allclose(s, [2 / 127, 1.0, 0.3 / 127])
    assert q[0, 1] == -127 and q[2, 2] == -127 and not q[1].any()


def test_precision_names_and_keys():
    assert parse_precisions("fp32, int8,int8") == ("fp32", "int8")
    assert variant_key("onnx", "fp32") == "onnx" and variant_key("onnx", "int8-static") == "onnx-int8-static"
    assert split_variant_key("onnx-int8-static") == ("onnx", "int8-static")
    assert split_variant_key("executorch-int8") == ("executorch", "int8")
    assert split_variant_key("coreml") == ("coreml", "fp32")
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        parse_precisions("fp32,int4")


# ---------------------------------------------------------------- ONNX exports

@pytest.fixture(scope="module")
def onnx_exports(tmp_path_factory):
    from hydravit_edge.export.api import export_model

    model = tiny_model()
    out = {}
    for mode in ("single", "per-k"):
        d = tmp_path_factory.mktemp(f"prec-{mode}") / "e"
        out[mode] = (d, export_model(model, heads="2,4", targets="onnx", mode=mode, out=d,
                                     precisions="fp32,fp16,int8,int8-static", calibration="digits",
                                     calibration_size=4))
    return model, out


@pytest.mark.parametrize("mode", ["single", "per-k"])
def test_every_onnx_precision_exports_and_validates(onnx_exports, mode):
    _, out = onnx_exports
    d, report = out[mode]
    man = json.loads((d / "manifest.json").read_text())
    assert set(man["targets"]) == {"onnx", "onnx-fp16", "onnx-int8", "onnx-int8-static"}
    for key, t in man["targets"].items():
        target, prec = split_variant_key(key)
        assert t["target"] == "onnx" and t["precision"] == prec and t["directory"] == key
        assert all(a["file"].startswith(key + "/") for a in t["artifacts"])
        assert {v["status"] for v in t["validation"]} == {"passed"}
        if prec == "fp32":
            assert t["quantization"] is None and t["tolerance"] == 1e-4
        else:
            assert t["quantization"]["tool"].startswith("onnxruntime")
            assert t["tolerance"] is None and "max|logit|" in t["validation_rule"]
    calib = man["targets"]["onnx-int8-static"]["quantization"]["calibration"]
    assert calib["source"] == "digits" and calib["images"] == 4 and calib["split"] == "train"
    assert man["targets"]["onnx-int8"]["quantization"]["calibration"] is None
    assert not (d / ".calibration.npy").exists()
    checks = {(r.target, r.k, r.check) for r in report.results}
    if mode == "single":
        assert ("onnx-int8", 4, "lazy") in checks
    if mode == "per-k":  # (the tiny single graphs are mostly graph, not weights)
        size = {key: sum(f["bytes"] for f in t["files"]) for key, t in man["targets"].items()}
        assert size["onnx-int8"] < size["onnx"]


def test_the_single_int8_graph_stores_one_set_of_int8_weights(onnx_exports):
    from onnx import numpy_helper

    model, out = onnx_exports
    d, _ = out["single"]
    proto = onnx.load(str(d / "onnx-int8" / "hydravit.onnx"))  # external data loaded from hydravit.onnx.data
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    narrowed = model.narrow(4)
    state = {n: t.detach().numpy() for n, t in narrowed.state_dict().items()}
    quantized = [n for n in inits if n.endswith("#q")]
    assert quantized and all(n[:-2] not in inits for n in quantized)  # the float matrix is not stored as well
    for name in quantized:
        q, s = quantize_rows(state[name[:-2]])
        assert np.array_equal(inits[name], q) and np.array_equal(inits[name[:-2] + "#s"], s)


def test_per_k_int8_quantizes_each_k_from_its_own_weights(onnx_exports):
    """Per-k files: onnxruntime's per-channel quantization of k's own slice (for k < max its scales
    differ from the cut of the full quantization the single artifact uses)."""
    from onnx import numpy_helper

    _, out = onnx_exports
    d, _ = out["per-k"]
    proto = onnx.load(str(d / "onnx-int8" / "k2.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert any(numpy_helper.to_array(t).dtype == np.int8 for t in proto.graph.initializer)
    static = onnx.load(str(d / "onnx-int8-static" / "k2.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in static.graph.node}
    half = onnx.load(str(d / "onnx-fp16" / "k2.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)


def test_a_broken_int8_artifact_fails_validation(onnx_exports, tmp_path):
    import shutil

    from onnx import numpy_helper

    from hydravit_edge.export.validation import validate_dir

    _, out = onnx_exports
    src, _ = out["per-k"]
    d = tmp_path / "broken"
    shutil.copytree(src, d)
    path = d / "onnx-int8" / "k4.onnx"
    proto = onnx.load(str(path))
    for t in proto.graph.initializer:
        if t.name.endswith("_scale") and t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 1 and t.dims[0] > 1:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 8.0, t.name))
    onnx.save(proto, str(path))
    report = validate_dir(d, ["onnx-int8"])
    runtime = {r.k: r for r in report.results if r.check == "runtime"}
    assert runtime[4].status.value == "failed" and "max abs error" in runtime[4].reason
    assert runtime[2].status.value == "passed"
    with pytest.raises(Exception, match="onnx-int8 k=4"):
        report.raise_for_failures()


# ---------------------------------------------------------------- judging with labels

def test_labelled_validation_judges_top1_drop():
    from hydravit_edge.export.quantize import HeldOutRef, judge

    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fp32 = np.eye(3, dtype=np.float32)[labels] * 5  # PyTorch fp32: 100 %
    held = HeldOutRef(np.zeros((10, 3, 4, 4), np.float32), labels, {2: fp32}, "toy")
    ref = np.zeros((2, 3), np.float32)
    ok = judge("onnx-int8", 2, "int8", ref, ref, fp32 + 0.1, held)
    assert ok.status.value == "passed" and ok.details["top1"] == 1.0 and ok.tolerance == 1.0
    wrong = fp32.copy()
    wrong[0] = [0, 5, 0]  # one of ten wrong: 10 points below fp32
    bad = judge("onnx-int8", 2, "int8", ref, ref, wrong, held)
    assert bad.status.value == "failed" and "10.00 points below" in bad.reason
    assert judge("onnx-fp16", 2, "fp16", ref, ref, fp32, held).status.value == "passed"


def test_export_judges_quantized_artifacts_on_the_heldout_split(tmp_path):
    from hydravit_edge.export.api import export_model

    report = export_model(tiny_model(), heads="4", targets="onnx", mode="per-k", out=tmp_path / "e",
                          precisions="int8", data="digits", heldout_images=50)
    r = next(r for r in report.results if r.target == "onnx-int8")
    assert r.details["heldout"] == "digits-heldout" and r.batch == r.details["images"] > 100
    man = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert man["reference"]["heldout"]["name"] == "digits-heldout"
    assert man["targets"]["onnx-int8"]["validation_rule"] == "top-1 within 1 points of fp32"
    with np.load(tmp_path / "e" / "reference.npz") as z:
        assert "heldout_labels" in z.files and "heldout_logits_k4" in z.files


# ---------------------------------------------------------------- errors

def test_calibration_path_missing_or_empty_is_a_clear_error(tmp_path):
    from hydravit_edge.export.quantize import calibration_images

    with pytest.raises(UsageError, match="no such directory"):
        calibration_images(str(tmp_path / "nope"), TINY, 4)
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(UsageError, match="no images under"):
        calibration_images(str(tmp_path / "empty"), TINY, 4)
    x, desc = calibration_images("digits", TINY, 5)
    assert x.shape == (5, 3, 32, 32) and desc["images"] == 5 and len(desc["sha256"]) == 64


def test_static_int8_without_calibration_data_says_what_to_pass(tmp_path):
    from hydravit_edge.export.api import export_model

    with pytest.raises(UsageError, match="--calibration"):
        export_model(tiny_model(), heads="4", targets="onnx", mode="per-k", out=tmp_path / "e",
                     precisions="int8-static")
    assert not (tmp_path / "e").exists()


def test_an_unsupported_precision_of_a_named_target_is_an_error(tmp_path, monkeypatch):
    from hydravit_edge.export.api import _plan_variants
    from hydravit_edge.export.registry import get_exporter

    ex = get_exporter("onnx")
    monkeypatch.setattr(type(ex), "precisions", {"fp32": ("single", "per-k")})
    monkeypatch.setattr(type(ex), "precision_notes", {"int8": ": for a reason"})
    with pytest.raises(UsageError, match="onnx does not export int8 .*for a reason"):
        _plan_variants([ex], ["int8"], "single", explicit=True, skipped={})
    for explicit in (True, False):  # with fp32 asked for too: int8 is skipped, and said
        skipped: dict = {}
        plan = _plan_variants([ex], ["fp32", "int8"], "single", explicit=explicit, skipped=skipped)
        assert [p for _, p in plan] == ["fp32"] and "for a reason" in skipped["onnx-int8"]


# ---------------------------------------------------------------- runtime and benchmark

def test_the_runtime_runs_the_precision_it_is_asked_for(onnx_exports):
    from hydravit_edge.contract.manifest import ManifestError
    from hydravit_edge.runtime import Runtime

    model, out = onnx_exports
    d, _ = out["single"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    rt = Runtime(d, precision="int8", prefetch=False, background=False)
    assert rt.target == "onnx-int8" and rt.file.startswith("onnx-int8/")
    got = rt.predict(x, heads=2, normalized=True).logits
    import torch

    ref = model(torch.from_numpy(x), heads=2).detach().numpy()
    assert np.max(np.abs(got - ref)) < 0.25 * np.max(np.abs(ref))
    rt.close()
    only_fp32 = d.parent / "fp32-only"
    import shutil

    shutil.copytree(d, only_fp32)
    man = json.loads((only_fp32 / "manifest.json").read_text())
    man["targets"] = {"onnx": man["targets"]["onnx"]}
    (only_fp32 / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match="no int8 'onnx' artifacts .*--precision int8"):
        Runtime(only_fp32, precision="int8", backend="onnxruntime")


def test_bench_plans_a_row_per_precision(onnx_exports):
    from hydravit_edge.bench.harness import plan_jobs
    from hydravit_edge.contract.manifest import Manifest
    from hydravit_edge.engines import get_engine

    _, out = onnx_exports
    d, _ = out["per-k"]
    jobs, skipped = plan_jobs(Manifest.load(d), [get_engine("onnxruntime")], heads=[4])
    assert sorted(j.precision for j in jobs) == ["fp16", "fp32", "int8", "int8-static"]
    assert {j.target for j in jobs} == {"onnx"} and not skipped
    assert next(j for j in jobs if j.precision == "int8").artifact == "onnx-int8/k4.onnx"


def test_with_a_lut_the_runtime_builds_the_policy_s_pick_first(onnx_exports, tmp_path):
    """The first option materialised is the policy's (k, precision), not fp32 at the largest k: the
    first calls then run what the policy wants instead of a stand-in while it builds."""
    import copy

    from hydravit_edge.runtime import Runtime

    _, out = onnx_exports
    d, _ = out["single"]
    vectors = json.loads((Path(__file__).parent / "policy_vectors.json").read_text())
    lut = copy.deepcopy(vectors["luts"]["P"])
    dev = copy.deepcopy(lut["devices"][0])
    dev.update(name="box", backend="onnxruntime")
    dev["rows"] = [{"k": k, "precision": p, "p90_ms": ms, "latency_basis": "p90", "top1": top1}
                   for k, p, ms, top1 in [(2, "fp32", 2.0, 0.90), (2, "int8", 1.0, 0.90),
                                          (4, "fp32", 4.0, 0.95), (4, "int8", 1.5, 0.95)]]
    lut["devices"] = [dev]
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(lut))
    rt = Runtime(d, lut=path, device="box", background=False, prefetch=False)
    assert rt.current == (4, "int8") and rt.materialized_options == [(4, "int8")]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    pred = rt.predict(x, power={"battery": 100}, normalized=True)
    assert (pred.k, pred.precision, pred.waited) == (4, "int8", False)
    rt.close()
    assert Runtime(d, background=False, prefetch=False).current == (4, "fp32")  # no LUT: fp32 at the largest k
