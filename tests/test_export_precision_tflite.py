"""TFLite precisions: fp16 and int8 (litert-torch's quantization recipes) and int8-static
(ai-edge-quantizer, calibrated) per-k files, run with ai-edge-litert; the single file is fp32 only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import assert_spoiled_scales_fail_validation, tiny_model
from hydravit_edge import HydraConfig
from hydravit_edge.errors import UsageError

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

#: the module's exports are shared fixtures: keep its tests on one xdist worker (``--dist loadgroup``)
pytestmark = pytest.mark.xdist_group("export-precision-tflite")

#: 4 heads of 32 dims (embed 128), depth 1, 16px / patch 8
CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
PRECISIONS = ("fp16", "int8", "int8-static")


@pytest.fixture(scope="module")
def tflite_exports(tmp_path_factory):
    from hydravit_edge.export.api import export_model

    d = tmp_path_factory.mktemp("tfl-prec") / "e"
    report = export_model(tiny_model(CFG), heads="4", targets="tflite", mode="per-k", out=d,
                          precisions="fp32," + ",".join(PRECISIONS), calibration="digits", calibration_size=8)
    return d, report


def test_every_tflite_precision_exports_and_runs(tflite_exports):
    d, report = tflite_exports
    assert report.passed
    man = json.loads((d / "manifest.json").read_text())
    assert set(man["targets"]) == {"tflite", "tflite-fp16", "tflite-int8", "tflite-int8-static"}
    size = {}
    for key, t in man["targets"].items():
        checks = {(v["k"], v["check"]): v["status"] for v in t["validation"]}
        assert checks == {(4, "structure"): "passed", (4, "runtime"): "passed"}, (key, checks)
        size[key] = t["files"][0]["bytes"]
        if key != "tflite":
            assert t["precision"] == key.split("-", 1)[1] and t["tolerance"] is None
            assert t["artifacts"][0]["extra"]["precision"] == t["precision"]
            assert "fp32 only" in t["details"]["single_mode"]
    q = {key: man["targets"][key]["quantization"] for key in man["targets"] if key != "tflite"}
    assert "full_fp16_recipe" in q["tflite-fp16"]["tool"] and "full_dynamic_recipe" in q["tflite-int8"]["tool"]
    assert "ai_edge_quantizer" in q["tflite-int8-static"]["tool"]
    assert q["tflite-int8-static"]["calibration"]["images"] == 8 and q["tflite-int8"]["calibration"] is None
    assert size["tflite-int8"] < 0.35 * size["tflite"] and size["tflite-int8-static"] < 0.35 * size["tflite"]
    assert size["tflite-fp16"] < 0.6 * size["tflite"]


def test_the_weights_are_int8_or_float16_and_the_io_float32(tflite_exports):
    from ai_edge_litert.interpreter import Interpreter

    from hydravit_edge.export.tflite import inspect_tflite, op_names

    d, _ = tflite_exports
    by = {key: inspect_tflite(d / key / "k4.tflite")["weight_bytes_by_dtype"]
          for key in ("tflite", "tflite-fp16", "tflite-int8", "tflite-int8-static")}
    assert set(by["tflite"]) <= {"float32", "int32"}
    assert by["tflite-fp16"]["float16"] > 0.9 * sum(by["tflite-fp16"].values())
    for key in ("tflite-int8", "tflite-int8-static"):
        assert by[key]["int8"] > 0.9 * sum(by[key].values()), (key, by[key])
    # static: q/dq around the transformer blocks; dynamic: none (the fully-connected layers quantize per call)
    assert "QUANTIZE" in op_names((d / "tflite-int8-static/k4.tflite").read_bytes())
    assert "QUANTIZE" not in op_names((d / "tflite-int8/k4.tflite").read_bytes())
    for key in PRECISIONS:
        it = Interpreter(str(d / f"tflite-{key}" / "k4.tflite"))
        assert [t["dtype"] for t in it.get_input_details()] == [np.float32]
        assert [t["dtype"] for t in it.get_output_details()] == [np.float32]


def test_a_broken_int8_file_fails_validation(tflite_exports, tmp_path):
    """The per-channel scales of the int8 file multiplied by 8 (manifest sizes and sha256 fixed up):
    the runtime check fails."""
    src, _ = tflite_exports
    sub = {n: p.detach().numpy() for n, p in tiny_model(CFG).subnet(4).named_parameters()}
    # TFLite's convolution filter is OHWI
    weights = [w.transpose(0, 2, 3, 1) if w.ndim == 4 else w for w in sub.values() if w.ndim >= 2]
    assert_spoiled_scales_fail_validation(src, tmp_path, "tflite-int8", "tflite-int8/k4.tflite", 4, weights,
                                          min_hits=2)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_single_file_is_fp32_only_and_says_why(precision, tmp_path):
    from hydravit_edge.export.api import export_model
    from hydravit_edge.export.registry import get_exporter

    assert get_exporter("tflite").unsupported(precision, "per-k") is None
    with pytest.raises(UsageError, match=f"tflite exports {precision} only as --mode per-k: .*SLICE"):
        export_model(tiny_model(CFG), heads="2", targets="tflite", mode="single", out=tmp_path / "e",
                     precisions=precision, calibration="digits", calibration_size=2)
