"""Core ML precisions: fp16 (compute precision) and int8 weights (linear_quantize_weights, per
output channel) in both modes; checked by structure here (predictions need macOS), including the
weights' data types read from the ML program."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from helpers import tiny_model
from hydravit_edge import HydraConfig
from hydravit_edge.errors import UsageError
from hydravit_edge.precision import quantize_rows

pytest.importorskip("coremltools")

#: the module's exports are shared fixtures: keep its tests on one xdist worker (``--dist loadgroup``)
pytestmark = pytest.mark.xdist_group("export-precision-coreml")

#: 4 heads of 32 dims (embed 128): the matrices exceed coremltools' 2048-element int8 threshold
CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
ON_MAC = sys.platform == "darwin"
_FP32, _FP16, _INT8 = 11, 10, 21  # MIL DataType


@pytest.fixture(scope="module")
def coreml_exports(tmp_path_factory):
    from hydravit_edge.export.api import export_model

    model = tiny_model(CFG)
    out = {}
    for mode in ("single", "per-k"):
        d = tmp_path_factory.mktemp(f"cml-{mode}") / "e"
        out[mode] = (d, export_model(model, heads="2,4", targets="coreml", mode=mode, out=d,
                                     precisions="fp16,int8"))
    return model, out


def _blobs(path, function=None):
    """{(blob offset): (MIL data type, shape, producing op)} of the weights the package's functions use."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    out = {}
    for name, fn in spec.mlProgram.functions.items():
        if function and name != function:
            continue
        for block in fn.block_specializations.values():
            for op in block.operations:
                values = [op.attributes["val"]] if op.type == "const" and "val" in op.attributes else []
                if op.type.startswith("constexpr_"):
                    values = [a.value for arg in op.inputs.values() for a in arg.arguments]
                    values += list(op.attributes.values())
                for v in values:
                    if v.WhichOneof("value") == "blobFileValue":
                        tt = v.type.tensorType
                        out[(v.blobFileValue.fileName, v.blobFileValue.offset)] = (
                            int(tt.dataType), tuple(int(d.constant.size) for d in tt.dimensions), op.type)
    return out


@pytest.mark.parametrize("mode", ["single", "per-k"])
def test_fp16_and_int8_packages_export_and_pass_the_structure_check(coreml_exports, mode):
    _, out = coreml_exports
    d, report = out[mode]
    man = json.loads((d / "manifest.json").read_text())
    assert set(man["targets"]) == {"coreml-fp16", "coreml-int8"}
    for key, prec in (("coreml-fp16", "fp16"), ("coreml-int8", "int8")):
        t = man["targets"][key]
        assert t["target"] == "coreml" and t["precision"] == prec and t["mode"] == mode
        assert t["tolerance"] is None and t["quantization"]["tool"].startswith("coremltools")
        assert t["details"]["compute_precision"] == "float16"
        for v in t["validation"]:
            if v["check"] == "runtime":
                assert v["status"] == ("passed" if ON_MAC else "skipped"), v
            else:
                assert v["status"] == "passed", (key, v["k"], v["check"], v["reason"])
        assert {v["k"] for v in t["validation"] if v["check"] == "structure"} == {2, 4}
    assert man["targets"]["coreml-int8"]["quantization"]["activations"].startswith("float16")


def test_fp16_packages_store_float16_weights_only(coreml_exports):
    _, out = coreml_exports
    for mode, name in (("single", "hydravit.mlpackage"), ("per-k", "k4.mlpackage")):
        d, _ = out[mode]
        kinds = {t for t, _, _ in _blobs(d / "coreml-fp16" / name).values()}
        assert kinds == {_FP16}, (mode, kinds)


def test_int8_single_package_stores_one_set_of_per_channel_int8_weights(coreml_exports):
    """The single package's functions dequantize the SAME int8 blobs (the full weights quantized once,
    one float16 scale per output channel) and slice k from them: every k is a cut of them."""
    model, out = coreml_exports
    d, _ = out["single"]
    pkg = d / "coreml-int8/hydravit.mlpackage"
    per_fn = {f: {key: v for key, v in _blobs(pkg, f).items() if v[0] == _INT8} for f in ("k2", "k4")}
    assert per_fn["k2"] and per_fn["k2"] == per_fn["k4"]  # the same blobs (offsets) in both functions
    full = {n: p.detach().numpy() for n, p in model.narrow(4).named_parameters()}
    matrices = {tuple(w.shape): n for n, w in full.items() if w.size > 2048}
    assert sorted(shape for _, shape, _ in per_fn["k4"].values()) == sorted(matrices)  # the FULL weights, int8
    blobs = _blobs(pkg, "k4")
    scales = sorted(shape for t, shape, op in blobs.values() if t == _FP16 and op.startswith("constexpr_"))
    assert scales == sorted((s[0],) + (1,) * (len(s) - 1) for s in matrices)  # one scale per output channel
    # the int8 values are the symmetric per-row quantization of the full weight (of its float16 cast, which
    # is what coremltools quantizes after the FLOAT16 conversion; measured: ~1.3% of the values round to a
    # neighbouring int8 value)
    from coremltools.libmilstoragepython import _BlobStorageReader

    reader = _BlobStorageReader(str(pkg / "Data/com.apple.CoreML/weights/weight.bin"))
    (_, offset), = [key for key, (_, shape, _) in per_fn["k4"].items() if shape == (384, 128)]
    got = np.asarray(reader.read_int8_data(offset)).reshape(384, 128).astype(int)
    want = quantize_rows(full["blocks.0.attn.qkv.weight"].astype(np.float16).astype(np.float32))[0].astype(int)
    assert np.max(np.abs(got - want)) <= 1 and np.mean(got == want) > 0.97
    details = json.loads((d / "manifest.json").read_text())["targets"]["coreml-int8"]["details"]
    by_dtype = details["packages"]["hydravit.mlpackage"]["weight_bytes_by_dtype"]
    assert by_dtype["int8"] == sum(w.size for w in full.values() if w.size > 2048)


def test_int8_per_k_packages_quantize_each_k(coreml_exports):
    model, out = coreml_exports
    d, _ = out["per-k"]
    man = json.loads((d / "manifest.json").read_text())
    sizes = {f["path"]: f["bytes"] for f in man["targets"]["coreml-int8"]["files"]}
    sub = {n: p for n, p in model.subnet(2).named_parameters()}
    int8 = [shape for t, shape, _ in _blobs(d / "coreml-int8/k2.mlpackage").values() if t == _INT8]
    assert (192, 64) in int8 and (256, 64) in int8  # k=2's own qkv and fc1, int8
    assert sizes["coreml-int8/k2.mlpackage"] < 0.4 * 4 * sum(p.numel() for p in sub.values())


def test_a_broken_int8_package_fails_the_structure_check(coreml_exports, tmp_path):
    """An int8 entry whose package holds no int8 weights (the fp16 one in its place), and one with its
    weight file cut short, fail the structure check."""
    from hydravit_edge.export.validation import validate_dir

    _, out = coreml_exports
    src, _ = out["per-k"]
    d = tmp_path / "broken"
    shutil.copytree(src, d)
    shutil.rmtree(d / "coreml-int8/k4.mlpackage")
    shutil.copytree(d / "coreml-fp16/k4.mlpackage", d / "coreml-int8/k4.mlpackage")
    weights = d / "coreml-int8/k2.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    weights.write_bytes(weights.read_bytes()[:2000])
    report = validate_dir(d, ["coreml-int8"])
    structure = {r.k: r for r in report.results if r.check == "structure"}
    assert structure[4].status.value == "failed" and "int8 weights" in structure[4].reason
    assert structure[2].status.value == "failed" and "weight" in structure[2].reason
    assert validate_dir(src, ["coreml-int8"]).passed


def test_int8_static_is_not_offered_and_says_why(tmp_path):
    from hydravit_edge.export.api import export_model

    for mode in ("single", "per-k"):
        with pytest.raises(UsageError, match="coreml does not export int8-static .*need macOS"):
            export_model(tiny_model(CFG), heads="2", targets="coreml", mode=mode, out=tmp_path / "e",
                         precisions="int8-static", calibration="digits")
