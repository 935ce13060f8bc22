"""The runtime layer (hydravit_edge.engines): one engine per runtime opens an artifact and runs k."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from test_bench import tiny_exports, tiny_hydra  # noqa: F401,F811  (fixture)

from hydravit_edge.contract.manifest import Manifest
from hydravit_edge.engines import EngineError, engine_for_target, get_engine
from hydravit_edge.engines.runner import run_isolated, run_records
from hydravit_edge.errors import MissingDependencyError, UsageError


def _single(tiny_exports):
    m = Manifest.load(tiny_exports["single"])
    (file, records), = m.files_by_artifact("onnx").items()
    return m, m.dir / file, records


def test_one_session_runs_every_k_of_a_single_artifact(tiny_exports):
    import torch

    m, path, records = _single(tiny_exports)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    model = tiny_hydra()
    with get_engine("onnxruntime").open(path, records) as session:
        assert session.heads == tuple(m.heads) and not session.is_prepared(2)
        for k in session.heads:
            with torch.no_grad():
                want = model(torch.from_numpy(x), heads=k).numpy()
            np.testing.assert_allclose(session.run(k, x), want, atol=1e-4)
            assert session.is_prepared(k)
        feed = session.feed(2, x[:1])
        times = session.timed(2, feed, 3)
        assert len(times) == 3 and all(t > 0 for t in times)
        with pytest.raises(UsageError, match="k=3 is not in"):
            session.run(3, x)


def test_engines_follow_the_targets_table():
    assert engine_for_target("onnx").name == "onnxruntime"
    assert engine_for_target("tflite").name == "tflite"
    assert engine_for_target("coreml").name == "coreml"
    assert get_engine("torch").target is None
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        get_engine("nope")


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_core_ml_off_macos_is_a_clear_error(tmp_path):
    engine = get_engine("coreml")
    assert "macOS only" in engine.missing()
    with pytest.raises(MissingDependencyError, match="macOS only"):
        engine.open(tmp_path / "hydravit.mlpackage", [{"k": 1}])


def test_missing_or_broken_files_are_errors_per_record(tiny_exports, tmp_path):
    _, path, records = _single(tiny_exports)
    with pytest.raises(EngineError, match="artifact file is missing"):
        get_engine("onnxruntime").open(tmp_path / "none.onnx", records)
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    x = np.zeros((1, 3, 32, 32), np.float32)
    bad = [dict(r, file="bad.onnx") for r in records]
    out = run_records("onnx", tmp_path, bad, x)
    assert set(out) == {r["k"] for r in records}
    assert all(isinstance(v, str) and "onnxruntime cannot load it" in v for v in out.values())
    # in a process of its own (export validation): the same results, logits for the good file
    good = run_isolated("onnx", path.parent, [dict(r, file=path.name) for r in records], x, timeout=300)
    assert all(v.shape == (1, 10) for v in good.values())


def test_static_batch_is_split_and_padded():
    """A graph of static batch 3 given 7 images: calls of exactly 3 (the last padded), outputs in order."""
    from hydravit_edge.engines.base import Session

    calls = []

    class Fake(Session):
        def feed(self, k, x):
            return x

        def call(self, k, feed):
            calls.append(feed.shape[0])
            return feed.reshape(feed.shape[0], -1)[:, :2] * k

    rec = {"k": 2, "inputs": [{"name": "image", "shape": [3, 1, 2, 2], "dtype": "float32"}]}
    s = Fake(None, None, [rec])
    x = np.arange(7 * 4, dtype=np.float32).reshape(7, 1, 2, 2)
    out = s.run(2, x)
    assert calls == [3, 3, 3] and out.shape == (7, 2)
    np.testing.assert_array_equal(out, x.reshape(7, -1)[:, :2] * 2)
