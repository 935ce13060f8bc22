"""The battery-aware Python runtime: no torch, one session for every k, the policy driving k."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_bench import HEADS, sample_report, tiny_exports, tiny_hydra  # noqa: F401,F811  (fixture)

from hydravit_edge.errors import UsageError


@pytest.fixture(scope="module")
def lut_path(tmp_path_factory):
    """A LUT for device 'edge-box' with p90 latency 1, 2, 4 ms for k = 1, 2, 4 (budget 3 ms)."""
    from hydravit_edge.bench.lut_build import build_lut
    from hydravit_edge.contract.lut import save_lut

    path = tmp_path_factory.mktemp("lut") / "lut.json"
    save_lut(build_lut([("edge-box.json", sample_report("edge-box"))], policy={"budget_ms": 3.0},
                       include_reference=False), path)
    return path


def _images(n=3, seed=0):
    return np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32)


def test_importing_the_runtime_does_not_import_torch(tiny_exports, tmp_path):
    """Import, load an ONNX artifact and predict at two k in a fresh process: torch never loads."""
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import hydravit_edge.runtime as rt
        assert "torch" not in sys.modules, "import hydravit_edge.runtime pulled in torch"
        r = rt.Runtime({str(tiny_exports["single"])!r})
        x = np.zeros((1, 3, 32, 32), np.float32)
        assert r.predict(x, heads=1).k == 1 and r.predict(x, heads=4).k == 4
        r.predict(x, power={{"battery": 50}})
        assert "torch" not in sys.modules, "the runtime imported torch"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_switching_k_reuses_one_session(tiny_exports, monkeypatch):
    """Several k through one session object: outputs match PyTorch per k, and nothing is reloaded."""
    import onnxruntime
    import torch

    from hydravit_edge.runtime import Runtime

    created = []
    real = onnxruntime.InferenceSession

    class Counting(real):
        def __init__(self, *a, **kw):
            created.append(a[0] if a else kw.get("path_or_bytes"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Counting)
    rt = Runtime(tiny_exports["single"], materialize="eager")
    assert rt.file == "onnx/hydravit.onnx" and rt.heads == list(HEADS) and len(created) == 1
    session, ort_session = rt.session, rt.session.sess
    model = tiny_hydra()
    x = _images()
    seen = []
    for k in (4, 1, 2, 4, 1):
        out = rt.predict(x, heads=k)
        seen.append((out.k, out.switched))
        with torch.no_grad():
            ref = model(torch.from_numpy(rt.preprocess(x)), heads=k).numpy()
        np.testing.assert_allclose(out.logits, ref, atol=1e-4, rtol=0)
        assert out.labels == [str(i) for i in ref.argmax(-1)]
    assert seen == [(4, False), (1, True), (2, True), (4, True), (1, True)]
    assert rt.session is session and rt.session.sess is ort_session and rt.loads == 1
    assert len(created) == 1  # one InferenceSession for five predictions at three k


def test_policy_picks_k_from_power_state(tiny_exports, lut_path):
    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"], lut=lut_path, device="edge-box", materialize="eager")
    x = _images(1)
    assert rt.predict(x, power={"battery": 90}).k == 2          # k=4 (4 ms p90) misses the 3 ms budget
    assert rt.predict(x, power={"battery": 90, "budget_ms": 10}).k == 4
    assert rt.predict(x, power={"battery": 10, "budget_ms": 10}).k == 1    # low band: 0.25 x 4
    low = rt.predict(x, power={"battery": 40, "budget_ms": 10})            # medium band: 0.5 x 4
    assert low.k == 2 and low.decision.limit == "battery"
    assert rt.predict(x, power={"battery": 90, "thermal": "critical"}).k == 1
    assert rt.predict(x, power={"battery": 5, "charging": True, "budget_ms": 10}).k == 4
    with pytest.raises(UsageError, match="outside 0..100"):
        rt.predict(x, power={"battery": 150})
    with pytest.raises(UsageError, match="thermal"):
        rt.predict(x, power={"battery": 50, "thermal": "melting"})
    assert rt.loads == 1


def test_battery_read_from_sysfs(tiny_exports, lut_path, tmp_path):
    from hydravit_edge.runtime import Runtime

    bat = tmp_path / "class" / "power_supply" / "BAT0"
    bat.mkdir(parents=True)
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text("12\n")
    (bat / "status").write_text("Discharging\n")
    rt = Runtime(tiny_exports["single"], lut=lut_path, device="edge-box", sys_root=tmp_path, power_interval_s=0,
                 materialize="eager")  # every k resident: the k follows the power state at once
    out = rt.predict(_images(1))
    assert out.k == 1 and out.decision.battery_percent == 12.0
    assert out.power == {"battery": 12.0, "charging": False, "low_power": False, "thermal": None, "budget_ms": None}
    (bat / "status").write_text("Charging\n")
    assert rt.predict(_images(1)).k == 2  # charging allows k=4, the 3 ms budget allows k=2


def test_no_battery_no_lut_runs_the_largest_k(tiny_exports, tmp_path):
    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"], sys_root=tmp_path)  # no power_supply: unknown battery, mains
    out = rt.predict(_images(2))
    assert out.k == 4 and "unknown" in out.reason


def test_runtime_errors(tiny_exports, lut_path, tmp_path):
    from hydravit_edge.contract.lut import UnknownDeviceError
    from hydravit_edge.runtime import ManifestError, Runtime

    with pytest.raises(ManifestError, match="no such export directory"):
        Runtime(tmp_path / "missing")
    with pytest.raises(ManifestError, match="--mode single"):
        Runtime(tiny_exports["per-k"])
    with pytest.raises(UnknownDeviceError, match="no device 'other'"):
        Runtime(tiny_exports["single"], lut=lut_path, device="other")
    rt = Runtime(tiny_exports["single"])
    with pytest.raises(UsageError, match="heads=3 is not in this artifact"):
        rt.predict(_images(1), heads=3)
    with pytest.raises(UsageError, match="3x32x32"):
        rt.predict(np.zeros((1, 3, 16, 16), np.float32), heads=1)
    # uint8 HWC/NCHW images of any size go through the model's evaluation transform (resize 36, crop 32)
    img = (np.random.default_rng(1).random((40, 32, 3)) * 255).astype(np.uint8)
    a = rt.predict(img, heads=2).logits
    b = rt.predict(rt.transform(img)[None], heads=2, normalized=True).logits
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(rt.predict(img.transpose(2, 0, 1)[None], heads=2).logits, a, atol=1e-5)
    plain = (img[4:36].astype(np.float32) / 255.0).transpose(2, 0, 1)[None]  # no resize: not what it was evaluated with
    assert np.abs(rt.preprocess(plain) - rt.preprocess(img)).max() > 0.1


def test_per_k_files_switch_k(tiny_exports):
    """Per-k exports: every k's file, opened when needed, at most `keep` open (was: always the k=1 file)."""
    import torch

    from hydravit_edge.runtime import Runtime

    model = tiny_hydra()
    x = _images(2)
    rt = Runtime(tiny_exports["per-k"], mode="per-k")
    assert rt.heads == [1, 2] and rt.file == "onnx/k2.onnx" and rt.loads == 1  # the largest k first
    assert rt.predict(x).k == 2  # no LUT, no battery: the largest k, already open
    out = rt.predict(x, heads=1)
    assert out.k == 1 and out.load_ms > 0 and rt.loads == 2 and rt.file == "onnx/k1.onnx"
    with torch.no_grad():
        np.testing.assert_allclose(out.logits, model(torch.from_numpy(rt.preprocess(x)), heads=1).numpy(), atol=1e-4)
    again = rt.predict(x, heads=2)
    assert again.load_ms == 0 and rt.loads == 2  # both open: switching is free
    rt.close()

    rt = Runtime(tiny_exports["per-k"], mode="per-k", heads=1, keep=1)
    assert rt.file == "onnx/k1.onnx"
    for k in (2, 1, 2):
        assert rt.predict(x, heads=k).load_ms > 0  # keep=1: each switch closes one file and opens another
    assert rt.loads == 4 and len(rt.cache.units) == 1
    with pytest.raises(UsageError, match="heads=3 is not in"):
        Runtime(tiny_exports["per-k"], mode="per-k", heads=3)
    rt.close()
