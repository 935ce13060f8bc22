"""ExecuTorch single int8 artifact: ONE set of int8 weights (the full model quantized once per output
channel) serves every k; each k's int8 program takes the cut of them as its XNNPACK named data."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from helpers import refresh_manifest_hashes, tiny_model
from hydravit_edge import HydraConfig
from hydravit_edge.precision import quantize_rows

pytest.importorskip("executorch")

pytestmark = pytest.mark.xdist_group("export-executorch-int8")

#: as tests/test_export_precision_executorch.py: 4 heads of 32 dims, depth 1
CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
KS = (2, 4)
KEY = "executorch-int8"
#: every weight PT2E quantizes (the patch convolution and the classifier too)
MATRICES = ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
            "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "head.weight")


@pytest.fixture(scope="module")
def int8_single(tmp_path_factory):
    from hydravit_edge.export.api import export_model

    root = tmp_path_factory.mktemp("et-int8-single")
    model = tiny_model(CFG)
    single = export_model(model, heads=KS, targets="executorch", mode="single", out=root / "single",
                          precisions="int8", jobs=1)
    per_k = export_model(model, heads=(max(KS),), targets="executorch", mode="per-k", out=root / "per-k",
                         precisions="int8", jobs=1)
    return single, per_k


def _target(rep):
    return json.loads((rep.out_dir / "manifest.json").read_text())["targets"][KEY]


def _ptd(out, layout):
    from hydravit_edge.engines.ptd import synthesize

    return bytes(synthesize(layout, (out / layout["head"]).read_bytes(), (out / layout["weights"]).read_bytes()))


def _named_data(ptd: bytes) -> list[bytes]:
    from hydravit_edge.export.executorch_lazy import _ptd_segments

    return [ptd[off:off + size] for _, off, size in _ptd_segments(ptd)[1]]


def test_single_int8_exports_and_validates_every_k(int8_single):
    from hydravit_edge.export.executorch import SINGLE_INT8_LAZY_NOTE
    from hydravit_edge.export.executorch_lazy import OWN_LIMIT
    from hydravit_edge.export.registry import get_exporter

    rep, _ = int8_single
    assert rep.passed
    assert get_exporter("executorch").unsupported("int8", "single") is None
    for check in ("runtime", "lazy"):  # the records' session (on the weights file) and k's own program
        res = [r for r in rep.results if r.check == check]
        assert [(r.k, r.status.value) for r in res] == [(k, "passed") for k in KS], check
        assert all(r.details.get("precision") == "int8" for r in res)
    t = _target(rep)
    assert t["mode"] == "single" and t["precision"] == "int8" and t["notes"] == [SINGLE_INT8_LAZY_NOTE]
    assert [f["path"] for f in t["files"]] == [
        f"{KEY}/hydravit.k2.ptdhead", f"{KEY}/hydravit.k2.pte", f"{KEY}/hydravit.k4.ptdhead", f"{KEY}/hydravit.k4.pte",
        f"{KEY}/hydravit.weights"]
    assert "quantized ONCE per output channel" in t["quantization"]["scheme"]
    for a in t["artifacts"]:
        assert a["file"] == f"{KEY}/hydravit.weights" and a["entry"] == "forward"
        lay = a["extra"]["lazy_data"]
        assert lay["program"] == f"hydravit.k{a['k']}.pte" and lay["weights_format"] == "raw"
        assert lay["check"] == "sha256"
        assert {s.get("quant") for s in lay["segments"]} == {"values", "scale", None}  # int8, scales, biases
        # the program's own constants too are cut from the weights file, not stored in k's program
        cut = {s["cut"] for s in lay["segments"] if "cut" in s}
        assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.norm2.bias", "norm.weight"} <= cut
        assert all(s["size"] <= OWN_LIMIT for s in lay["segments"] if "own" in s)
    details = t["details"]["single"]
    assert details["weights_file"] == "hydravit.weights"
    assert all(details["tensors"][n]["dtype"] == "int8" for n in MATRICES)
    raw = (rep.out_dir / KEY / "hydravit.weights").read_bytes()
    assert raw.startswith(b"HYDRAVIT-WEIGHTS")


def test_every_k_uses_the_cut_of_the_full_weights_quantized_once(int8_single):
    """k's named data (the .ptd synthesized from hydravit.weights, which equals ExecuTorch's own byte for
    byte) holds exactly the leading block of quantize_rows(full weight) and the scales of k's rows."""
    from hydravit_edge.export.executorch_lazy import lazy_program
    from hydravit_edge.export.quantize import QuantSpec

    rep, _ = int8_single
    out = rep.out_dir / KEY
    model = tiny_model(CFG).narrow(max(KS))
    full = {n: p.detach().numpy() for n, p in model.named_parameters()}
    table = model.slicing
    layouts = {a["k"]: a["extra"]["lazy_data"] for a in _target(rep)["artifacts"]}
    for k in KS:
        ptd = _ptd(out, layouts[k])
        assert hashlib.sha256(ptd).hexdigest() == layouts[k]["sha256"]
        blobs = set(_named_data(ptd))
        sub = {key: t.detach().numpy() for key, t in model.subnet_state_dict(k).items()}
        for name in MATRICES:
            q, s = quantize_rows(full[name])
            c = table.cut_of(name, k)
            q_cut = np.concatenate([q[p] for p in c.pieces], axis=c.axis or 0) if c.ranges else q
            s_cut = np.concatenate([s[a:b] for a, b in c.ranges[0]]) if c.ranges else s
            if q_cut.ndim == 4:
                q_cut = q_cut.transpose(0, 2, 3, 1)  # XNNPACK's NHWC convolution weight
            assert np.ascontiguousarray(q_cut).tobytes() in blobs, (k, name)
            assert s_cut.astype(np.float32).tobytes() in blobs, (k, name)
        if k < max(KS):  # not k's own quantization: its rows' scales come from the FULL input columns
            _, s_own = quantize_rows(sub["blocks.0.mlp.fc2.weight"])
            assert s_own.tobytes() not in blobs
    # ExecuTorch's own named data of k=2's program is what the runtime cuts (the export checks it too)
    assert lazy_program(model, 2, QuantSpec("int8"))[1] == _ptd(out, layouts[2])


def test_a_flipped_int8_byte_in_the_weights_file_fails_validation(int8_single, tmp_path):
    from hydravit_edge.export.validation import validate_dir

    rep, _ = int8_single
    d = tmp_path / "broken"
    shutil.copytree(rep.out_dir, d)
    path = d / KEY / "hydravit.weights"
    lay = next(a for a in _target(rep)["artifacts"] if a["k"] == 2)["extra"]["lazy_data"]
    seg = next(s for s in lay["segments"] if s.get("quant") == "values" and s["cut"] == "blocks.0.mlp.fc1.weight")
    raw = bytearray(path.read_bytes())
    raw[seg["at"] + 1] ^= 0x01  # one int8 weight of row 0 (in every k's cut) off by one step
    path.write_bytes(bytes(raw))
    bad = validate_dir(d, [KEY])
    assert not bad.passed
    assert any(r.check == "integrity" and not r.ok for r in bad.results)
    # sizes and sha256 in the manifest fixed up: the runtime's check of the cut named data still fails it
    refresh_manifest_hashes(d, KEY, path)
    report = validate_dir(d, [KEY])
    ran = [r for r in report.results if r.check in ("runtime", "lazy")]
    assert len(ran) == 2 * len(KS) and all(not r.ok for r in ran)
    assert all("damaged" in (r.reason or "") for r in ran)
    assert validate_dir(rep.out_dir, [KEY]).passed


def test_the_single_int8_artifact_stores_the_int8_weights_once(int8_single):
    single, per_k = int8_single
    t, p = _target(single), _target(per_k)
    total = sum(f["bytes"] for f in t["files"])
    k4 = next(f["bytes"] for f in p["files"] if f["path"].endswith("k4.pte"))
    weights = next(f["bytes"] for f in t["files"] if f["path"].endswith("hydravit.weights"))
    ratio = total / k4
    print(f"single int8 {total} B (weights {weights} B) / per-k int8 k=4 {k4} B = {ratio:.3f}x")
    assert weights < k4  # the full int8 weights, scales and biases once, no graph
    # the rest is each k's graph (its parameters, layer norms included, are cut from the weights file)
    assert ratio <= 1.25, ratio


def test_the_runtime_opens_the_single_int8_artifact_lazily_and_eagerly(int8_single):
    import torch

    from hydravit_edge.runtime import Runtime

    rep, _ = int8_single
    model = tiny_model(CFG)
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    lazy = Runtime(rep.out_dir, backend="executorch", precision="int8")
    assert lazy.materialize == "lazy" and lazy.file == f"{KEY}/hydravit.k4.pte"
    eager = Runtime(rep.out_dir, backend="executorch", precision="int8", materialize="eager")
    assert eager.file == f"{KEY}/hydravit.weights"
    for k in KS:
        with torch.no_grad():
            ref = model(torch.from_numpy(lazy.preprocess(x)), heads=k).numpy()
        got = lazy.predict(x, heads=k).logits
        assert np.max(np.abs(got - ref)) <= 0.25 * np.max(np.abs(ref))
        np.testing.assert_allclose(eager.predict(x, heads=k).logits, got, atol=1e-6)


def test_single_int8_static_keeps_only_k_s_int32_biases_per_k(tmp_path):
    """int8-static: the same shared int8 weights and scales; what XNNPACK derives from k's calibrated
    input scale (its int32 biases) is k's own, in k's head file; a flipped byte there fails k only."""
    from hydravit_edge.export.api import export_model
    from hydravit_edge.export.validation import validate_dir

    key = "executorch-int8-static"
    rep = export_model(tiny_model(CFG), heads=KS, targets="executorch", mode="single", out=tmp_path / "s",
                       precisions="int8-static", calibration="digits", calibration_size=4, jobs=1)
    assert rep.passed and {r.check for r in rep.results} == {"runtime", "lazy"}
    t = json.loads((rep.out_dir / "manifest.json").read_text())["targets"][key]
    assert t["mode"] == "single" and t["quantization"]["calibration"]["images"] == 4
    own = {}
    for a in t["artifacts"]:
        segs = a["extra"]["lazy_data"]["segments"]
        assert {s.get("quant") for s in segs if "cut" in s} == {"values", "scale"}  # every weight: the shared cut
        own[a["k"]] = [s for s in segs if "own" in s]
        assert own[a["k"]] and sum(s["size"] for s in own[a["k"]]) < 0.2 * sum(s["size"] for s in segs)
    d = tmp_path / "broken"
    shutil.copytree(rep.out_dir, d)
    head = d / key / "hydravit.k2.ptdhead"
    raw = bytearray(head.read_bytes())
    raw[own[2][0]["own"]] ^= 0x40
    head.write_bytes(bytes(raw))
    refresh_manifest_hashes(d, key, head)
    ran = [r for r in validate_dir(d, [key]).results if r.check in ("runtime", "lazy")]
    assert {(r.k, r.ok) for r in ran} == {(2, False), (4, True)}
