"""Core ML target: per-k ML programs and the multifunction package (structure, source program,
shared weights, corruption), on a micro model so conversions take seconds.

The conversions happen in ONE test (``test_coreml_export_both_modes``) so that pytest-xdist
never runs them twice on two workers; its checks are split into the helpers below."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from helpers import tiny_model
from hydravit_edge import HydraConfig
from hydravit_edge.export.api import export_model, validate_dir
from hydravit_edge.export import ArtifactRecord, Reference, Status, get_exporter

#: 3 heads of 8 dims, depth 1, 16px / patch 8 (5 tokens), 5 classes.
MICRO = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=3, head_dim=8, num_classes=5)
ON_MAC = sys.platform == "darwin"


def _by_check(results, check):
    return {r.k: r for r in results if r.check == check}


def _reference(model, ks, n=2):
    x = np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        return Reference(x, {k: model(torch.from_numpy(x), heads=k).numpy() for k in ks})


def _check_single_package(single):
    target = single.manifest["targets"]["coreml"]
    assert target["mode"] == "single"
    assert [f["path"] for f in target["files"]] == ["coreml/hydravit.mlpackage"]
    assert [(a["k"], a["entry"], a["entry_kind"]) for a in target["artifacts"]] == [
        (1, "k1", "function"), (3, "k3", "function")]
    pkg = target["details"]["packages"]["hydravit.mlpackage"]
    assert pkg["functions"] == ["k1", "k3"] and pkg["default_function"] == "k3"
    assert pkg["spec_version"] >= 9  # iOS 18 / macOS 15: multifunction
    structure = _by_check(single.results, "structure")
    source = _by_check(single.results, "source-program")
    runtime = _by_check(single.results, "runtime")
    for k in (1, 3):
        assert structure[k].status is Status.PASSED, structure[k].reason
        assert structure[k].details["inputs"] == [{"name": "image", "shape": [1, 3, 16, 16], "dtype": "float32"}]
        assert structure[k].details["outputs"] == [{"name": "logits", "shape": [1, 5], "dtype": "float32"}]
        assert source[k].status is Status.PASSED and source[k].max_abs_err <= 1e-4
        if ON_MAC:
            assert runtime[k].status is Status.PASSED
        else:  # never a pass it did not earn
            assert runtime[k].status is Status.SKIPPED and runtime[k].summary() == "skipped: needs macOS"
    assert single.manifest["validation"]["status"] == ("passed" if ON_MAC else "skipped")


def _check_per_k(records, d, results, details):
    assert sorted(p.name for p in d.iterdir()) == ["k1.mlpackage", "k3.mlpackage"]
    assert [(r.file, r.entry, r.mode) for r in records] == [("k1.mlpackage", None, "per-k"),
                                                            ("k3.mlpackage", None, "per-k")]
    assert details["deployment_target"] == "iOS16" and details["packages"]["k3.mlpackage"]["functions"] == ["main"]
    for r in results:
        if r.check == "runtime":
            assert r.status is (Status.PASSED if ON_MAC else Status.SKIPPED)
        else:
            assert r.status is Status.PASSED, (r.check, r.k, r.reason)
    structure = _by_check(results, "structure")
    assert structure[1].details["weight_bytes"] < structure[3].details["weight_bytes"] / 3


def _check_weights_stored_once(single, per_k_details, micro):
    """Measured: the package with functions k1 and k3 holds about the weights of the k=3 package."""
    pkg = single.manifest["targets"]["coreml"]["details"]["packages"]["hydravit.mlpackage"]
    k3 = per_k_details["packages"]["k3.mlpackage"]
    params = 4 * sum(p.numel() for p in micro.parameters())
    assert pkg["weight_bytes_unique"] <= 1.10 * k3["weight_bytes_unique"]
    assert pkg["weight_file_bytes"] <= 1.10 * k3["weight_file_bytes"]
    assert pkg["weight_bytes_unique"] <= 1.10 * params
    # each function on its own references (nearly) all of them: deduplication did the work
    assert pkg["weight_bytes_without_dedup"] >= 1.8 * pkg["weight_bytes_unique"]


def _check_source_program_can_fail(micro, ex, records, d):
    ref = _reference(micro, (2, 3))
    wrong = Reference(ref.inputs, {1: ref.logits[2], 3: ref.logits[3]})  # k=1 judged against k=2's logits
    res = _by_check(ex.validate(d, records, wrong), "source-program")
    assert res[3].status is Status.PASSED
    assert res[1].status is Status.FAILED and res[1].max_abs_err > 1e-3


def _check_corruption(single, d):
    """Truncated weights and a missing function fail the structure check (independently of
    the manifest's sha256); re-validation from disk cannot claim the source program."""
    shutil.copytree(single.out_dir, d)
    ex = get_exporter("coreml")
    reference = Reference.load(d / "reference.npz")
    records = [ArtifactRecord.from_dict(a) for a in single.manifest["targets"]["coreml"]["artifacts"]]
    fresh = ex.validate(d, records, reference)
    assert all(r.status is Status.SKIPPED for r in fresh if r.check == "source-program")
    assert all(r.status is Status.PASSED for r in fresh if r.check == "structure")

    weights = d / "coreml/hydravit.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    bad = _by_check(ex.validate(d, records, reference), "structure")
    assert all(bad[k].status is Status.FAILED for k in (1, 3))
    assert "weight" in bad[3].reason

    report = validate_dir(d)
    assert not report.passed
    assert {r.check for r in report.failures} >= {"integrity", "structure"}

    weights.write_bytes(data)
    records[0].entry = "k7"  # a record naming a function the package does not have
    bad = _by_check(ex.validate(d, records[:1], reference), "structure")
    assert bad[1].status is Status.FAILED and "k7" in bad[1].reason


def test_coreml_export_both_modes(tmp_path):
    micro = tiny_model(MICRO)
    single = export_model(micro, heads="1,3", targets="coreml", mode="single", out=tmp_path / "single")
    _check_single_package(single)

    # per-k through the exporter itself: the instance keeps its torch.export programs
    d = tmp_path / "perk"
    d.mkdir()
    ex = get_exporter("coreml")
    records = ex.export(micro, (1, 3), d, "per-k")
    details = ex.describe(d, records)
    _check_per_k(records, d, ex.validate(d, records, _reference(micro, (1, 3))), details)

    _check_weights_stored_once(single, details, micro)
    _check_source_program_can_fail(micro, ex, records, d)
    _check_corruption(single, tmp_path / "corrupt")


def test_coreml_is_a_core_dependency(monkeypatch):
    import importlib.util

    ex = get_exporter("coreml")
    assert ex.extra is None and ex.missing("export") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "coremltools" else real(n, *a))
    msg = ex.missing("export")
    assert "coremltools" in msg and "pip install hydravit-edge" in msg


@pytest.mark.slow
def test_coreml_default_config_single_package_size(tmp_path):
    """Default 12-head config: the package with k=3..12 is <= 1.10x the k=12 package (~6 min)."""
    from hydravit_edge import HydraViT, preset
    from hydravit_edge.export.hashing import path_size

    model = HydraViT(preset("base")).eval()
    ex = get_exporter("coreml")
    (tmp_path / "single").mkdir()
    (tmp_path / "perk").mkdir()
    ex.export(model, tuple(range(3, 13)), tmp_path / "single", "single")
    ex.export(model, (12,), tmp_path / "perk", "per-k")
    ratio = path_size(tmp_path / "single/hydravit.mlpackage") / path_size(tmp_path / "perk/k12.mlpackage")
    assert ratio <= 1.10, ratio
