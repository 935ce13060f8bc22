"""ExecuTorch precisions: int8 (XNNPACK quantizer, dynamic activations), int8-static (calibrated) and
fp16 per-k programs run in ExecuTorch's runtime; single: fp32, int8 (one set of int8 weights for
every k: tests/test_export_single_int8_executorch.py) and fp16 (one set of fp16 weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import assert_spoiled_scales_fail_validation, refresh_manifest_hashes, tiny_model
from hydravit_edge import HydraConfig
from hydravit_edge.precision import quantize_rows

pytest.importorskip("executorch")

pytestmark = pytest.mark.xdist_group("export-executorch")

#: 4 heads of 32 dims (embed 128), depth 1, 16px / patch 8: matrices big enough for int8 to matter
CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
#: the weights PT2E quantizes per output channel (and what the .pte stores as int8 + float32 scales)
MATRICES = ("blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.fc1.weight",
            "blocks.0.mlp.fc2.weight")


def _export(out, precisions, heads="2", **kw):
    from hydravit_edge.export.api import export_model

    return export_model(tiny_model(CFG), heads=heads, targets="executorch", mode="per-k", out=out,
                        precisions=precisions, jobs=1, **kw)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    d = tmp_path_factory.mktemp("et-int8") / "e"
    return d, _export(d, "int8")  # one lowering (k=2): ~15 s


def _weight_bytes(model, k: int) -> int:
    return 4 * sum(p.numel() for p in model.subnet(k).parameters())


def test_int8_per_k_program_exports_validates_and_is_smaller(int8_export):
    d, report = int8_export
    assert report.passed
    man = json.loads((d / "manifest.json").read_text())
    t = man["targets"]["executorch-int8"]
    assert t["target"] == "executorch" and t["precision"] == "int8" and t["mode"] == "per-k"
    assert "XNNPACKQuantizer" in t["quantization"]["tool"] and "is_per_channel=True" in t["quantization"]["scheme"]
    assert t["quantization"]["calibration"] is None
    assert [f["path"] for f in t["files"]] == ["executorch-int8/k2.pte"]
    assert t["artifacts"][0]["extra"]["precision"] == "int8"
    runtime = [v for v in t["validation"] if v["check"] == "runtime"]
    assert [(v["k"], v["status"]) for v in runtime] == [(2, "passed")]
    assert "executorch" in runtime[0]["runtime"]
    assert "one set of int8 weights for every k" in t["details"]["single_mode"]  # what --mode single gives
    # int8 weights: about a quarter of the fp32 weights (plus graph and float32 biases / norms)
    size = t["files"][0]["bytes"]
    assert size < 0.4 * _weight_bytes(tiny_model(CFG), 2), size


def test_int8_program_holds_per_channel_symmetric_int8_weights_of_k(int8_export):
    """XNNPACK's constant data of each linear layer of k: int8 values and float32 scales, one per output
    channel, exactly ``quantize_rows`` of k's OWN weight (each k quantized on its own)."""
    d, _ = int8_export
    pte = (d / "executorch-int8/k2.pte").read_bytes()
    sub = {n: p.detach().numpy() for n, p in tiny_model(CFG).subnet(2).named_parameters()}
    for name in MATRICES:
        q, s = quantize_rows(sub[name])
        assert pte.find(q.tobytes()) >= 0, name
        assert pte.find(s.tobytes()) >= 0, name
    # k's own scales differ from the cut of the full model's (why the single int8 artifact's programs are
    # built with that cut instead of their observers' values)
    full = {n: p.detach().numpy() for n, p in tiny_model(CFG).named_parameters()}
    _, s_full = quantize_rows(full["blocks.0.mlp.fc2.weight"])
    _, s_k = quantize_rows(sub["blocks.0.mlp.fc2.weight"])
    assert not np.array_equal(s_full[:64], s_k)


def test_a_broken_int8_program_fails_validation(int8_export, tmp_path):
    """The per-channel scales in the .pte multiplied by 8 (sizes and sha256 in the manifest fixed up):
    the runtime check of the int8 precision fails."""
    src, _ = int8_export
    sub = {n: p.detach().numpy() for n, p in tiny_model(CFG).subnet(2).named_parameters()}
    assert_spoiled_scales_fail_validation(src, tmp_path, "executorch-int8", "executorch-int8/k2.pte", 2,
                                          [sub[name] for name in MATRICES], min_hits=3)


def test_single_fp16_stores_fp16_weights_once_and_validates(tmp_path):
    """fp16 single: hydravit.weights holds every parameter in float16 once; k's fp16 program (static XNNPACK
    weights) stores none, its named data is cut from there (float32 where XNNPACK wants it: the patch conv);
    a flipped fp16 byte fails validation."""
    import shutil

    from hydravit_edge.export.api import export_model
    from hydravit_edge.export.executorch import SINGLE_FP16_NOTE
    from hydravit_edge.export.registry import get_exporter
    from hydravit_edge.export.validation import validate_dir


    assert get_exporter("executorch").unsupported("fp16", "single") is None
    model = tiny_model(CFG)
    rep = export_model(model, heads="2,4", targets="executorch", mode="single", out=tmp_path / "s", precisions="fp16",
                       jobs=1)
    per_k = export_model(model, heads="4", targets="executorch", mode="per-k", out=tmp_path / "p", precisions="fp16",
                         jobs=1)
    assert rep.passed and {(r.k, r.check) for r in rep.results} == {(2, "runtime"), (4, "runtime"), (2, "lazy"), (4, "lazy")}
    assert all(r.max_abs_err < 1e-2 for r in rep.results)
    t = json.loads((rep.out_dir / "manifest.json").read_text())["targets"]["executorch-fp16"]
    assert t["mode"] == "single" and t["notes"] == [SINGLE_FP16_NOTE]
    for a in t["artifacts"]:
        lay = a["extra"]["lazy_data"]
        assert a["file"] == "executorch-fp16/hydravit.weights" and lay["weights_format"] == "raw"
        cut = [s for s in lay["segments"] if "cut" in s]
        assert {s["dtype"] for s in cut} == {"float16"} and {s.get("cast") for s in cut} == {None, "float32"}
        assert {"pos_embed", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"} <= {s["cut"] for s in cut}
    sizes = {f["path"]: f["bytes"] for f in t["files"]}
    params = sum(p.numel() for p in model.parameters())
    assert 2 * params <= sizes["executorch-fp16/hydravit.weights"] < 2 * params * 1.05
    single = sum(sizes.values())
    k4 = json.loads((per_k.out_dir / "manifest.json").read_text())["targets"]["executorch-fp16"]["files"][0]["bytes"]
    print(f"single fp16 {single} B / per-k fp16 k=4 {k4} B = {single / k4:.3f}x")
    assert single <= 1.05 * k4
    d = tmp_path / "broken"
    shutil.copytree(rep.out_dir, d)
    path = d / "executorch-fp16" / "hydravit.weights"
    seg = next(s for s in t["artifacts"][0]["extra"]["lazy_data"]["segments"] if s.get("cut") == "blocks.0.mlp.fc1.weight")
    raw = bytearray(path.read_bytes())
    raw[seg["at"] + 1] ^= 0x40  # one fp16 weight of row 0 (in every k's cut): its exponent changed
    path.write_bytes(bytes(raw))
    refresh_manifest_hashes(d, "executorch-fp16", path)
    bad = validate_dir(d, ["executorch-fp16"])
    ran = [r for r in bad.results if r.check in ("runtime", "lazy")]
    assert len(ran) == 4 and all(not r.ok and "damaged" in (r.reason or "") for r in ran)


@pytest.mark.slow  # three precisions lowered at two k: ~2 min on 2 cores
def test_every_executorch_precision_per_k(tmp_path):
    d = tmp_path / "e"
    report = _export(d, "fp32,fp16,int8,int8-static", heads="2,4", calibration="digits", calibration_size=4)
    assert report.passed
    man = json.loads((d / "manifest.json").read_text())
    assert set(man["targets"]) == {"executorch", "executorch-fp16", "executorch-int8", "executorch-int8-static"}
    size = {}
    for key, t in man["targets"].items():
        assert {v["status"] for v in t["validation"]} == {"passed"}, key
        size[key] = {a["k"]: f["bytes"] for a, f in zip(t["artifacts"], t["files"])}
    static = man["targets"]["executorch-int8-static"]["quantization"]
    assert static["calibration"]["images"] == 4 and "is_dynamic=False" in static["scheme"]
    for k in (2, 4):
        assert size["executorch-int8"][k] < 0.4 * size["executorch"][k]
        assert size["executorch-int8-static"][k] < 0.4 * size["executorch"][k]
        assert size["executorch-fp16"][k] < 0.7 * size["executorch"][k]
