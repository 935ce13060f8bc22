"""TFLite target: per-k files and the multi-signature file with shared weights, run with
ai-edge-litert in its own process; corruption and missing-dependency handling.

The conversions happen in ONE test (``test_tflite_export_both_modes``) so that pytest-xdist
never runs them twice on two workers; its checks are split into the helpers below."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_model
from hydravit_edge import HydraConfig, MissingDependencyError
from hydravit_edge.export import ArtifactRecord, Reference, Status, get_exporter

pytest.importorskip("litert_torch", reason="TFLite conversion needs the tflite extra")
pytest.importorskip("ai_edge_litert", reason="TFLite runtime needs the tflite extra")

from hydravit_edge.export.api import export_model  # noqa: E402

MICRO = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=3, head_dim=8, num_classes=5)


def _by_check(results, check):
    return {r.k: r for r in results if r.check == check}


def _check_single(single):
    target = single.manifest["targets"]["tflite"]
    from hydravit_edge.export.tflite import SINGLE_SPEED_NOTE

    # no fallback note: only the speed trade-off the user is told about
    assert target["mode"] == "single" and target["notes"] == [SINGLE_SPEED_NOTE]
    assert [f["path"] for f in target["files"]] == ["tflite/hydravit.tflite"]
    assert [(a["k"], a["entry"]) for a in target["artifacts"]] == [(1, "k1"), (3, "k3")]
    runtime = _by_check(single.results, "runtime")
    structure = _by_check(single.results, "structure")
    for k in (1, 3):
        assert runtime[k].status is Status.PASSED, runtime[k].reason
        assert runtime[k].max_abs_err <= 1e-4 and runtime[k].top1_agreement == 1.0
        assert "ai-edge-litert" in runtime[k].runtime
        assert structure[k].status is Status.PASSED, structure[k].reason
        assert structure[k].details["inputs"] == [{"name": "image", "shape": [1, 3, 16, 16]}]
        assert structure[k].details["outputs"] == [{"name": "logits", "shape": [1, 5]}]


def _check_shared_weights(single, per_k, micro):
    """Measured: the file with signatures k1 and k3 holds the weights of k=3 once."""
    info = single.manifest["targets"]["tflite"]["details"]["files"]["hydravit.tflite"]
    k3 = per_k.manifest["targets"]["tflite"]["details"]["files"]["k3.tflite"]
    assert info["weight_bytes"] <= 1.10 * k3["weight_bytes"]
    assert info["weight_bytes"] <= 1.10 * 4 * sum(p.numel() for p in micro.parameters())
    assert info["weight_bytes_without_sharing"] >= 1.8 * info["weight_bytes"]


def _check_per_k(per_k):
    target = per_k.manifest["targets"]["tflite"]
    assert [f["path"] for f in target["files"]] == ["tflite/k3.tflite"]
    assert all(r.status is Status.PASSED for r in per_k.results), [r.summary() for r in per_k.results]
    assert {a["extra"]["signature"] for a in target["artifacts"]} == {"serving_default"}


def _largest_buffer(path: Path) -> tuple[int, int]:
    """(offset, length) of the largest constant buffer inside a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    best = max((model.Buffers(i) for i in range(model.BuffersLength())), key=lambda b: b.DataLength())
    start = best._tab.Vector(best._tab.Offset(4))
    return start, best.DataLength()


def _check_corruption(per_k, d):
    shutil.copytree(per_k.out_dir, d)
    ex = get_exporter("tflite")
    reference = Reference.load(d / "reference.npz")
    records = [ArtifactRecord.from_dict(a) for a in per_k.manifest["targets"]["tflite"]["artifacts"]]
    path = d / "tflite/k3.tflite"
    start, n = _largest_buffer(path)
    data = bytearray(path.read_bytes())
    data[start:start + n] = np.full(n // 4, 0.25, np.float32).tobytes()  # same size, wrong weights
    path.write_bytes(bytes(data))
    res = ex.validate(d, records, reference)
    runtime = _by_check(res, "runtime")
    assert _by_check(res, "structure")[3].status is Status.PASSED  # intact structure, wrong numbers
    assert runtime[3].status is Status.FAILED and "max abs error" in runtime[3].reason

    path.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    res = ex.validate(d, records, reference)
    assert _by_check(res, "structure")[3].status is Status.FAILED
    assert _by_check(res, "runtime")[3].status in (Status.ERROR, Status.FAILED)


def test_tflite_export_both_modes(tmp_path):
    micro = tiny_model(MICRO)
    single = export_model(micro, heads="1,3", targets="tflite", mode="single", out=tmp_path / "single")
    per_k = export_model(micro, heads="3", targets="tflite", mode="per-k", out=tmp_path / "perk")
    _check_single(single)
    _check_per_k(per_k)
    _check_shared_weights(single, per_k, micro)
    _check_corruption(per_k, tmp_path / "corrupt")


def test_tflite_missing_dependency_names_the_extra(monkeypatch, tmp_path):
    micro = tiny_model(MICRO)
    ex = get_exporter("tflite")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "litert_torch" else real(n, *a))
    assert "pip install 'hydravit-edge[tflite]'" in ex.missing("export")
    with pytest.raises(MissingDependencyError, match=r"hydravit-edge\[tflite\]"):
        ex.export(micro, (1,), tmp_path, "per-k")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # installed but broken: import fails
    with pytest.raises(MissingDependencyError, match=r"hydravit-edge\[tflite\]"):
        ex.export(micro, (1,), tmp_path, "per-k")
    assert list(tmp_path.iterdir()) == []


def test_hydravit_edge_imports_without_tflite_stack():
    code = ("import sys, hydravit_edge, hydravit_edge.export.tflite, hydravit_edge.export.coreml;"
            "from hydravit_edge.export import get_exporter; get_exporter('tflite');"
            "heavy = [m for m in ('litert_torch', 'ai_edge_litert', 'jax', 'transformers', 'coremltools') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_tflite_default_config_single_file_size(tmp_path):
    """Default 12-head config: the file with signatures k3..k12 is <= 1.10x k12.tflite (~15 min)."""
    from hydravit_edge import HydraViT, preset

    model = HydraViT(preset("base")).eval()
    ex = get_exporter("tflite")
    (tmp_path / "single").mkdir()
    (tmp_path / "perk").mkdir()
    records = ex.export(model, tuple(range(3, 13)), tmp_path / "single", "single")
    assert {r.mode for r in records} == {"single"}
    ex.export(model, (12,), tmp_path / "perk", "per-k")
    ratio = (tmp_path / "single/hydravit.tflite").stat().st_size / (tmp_path / "perk/k12.tflite").stat().st_size
    assert ratio <= 1.10, ratio
