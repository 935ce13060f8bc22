"""ExecuTorch target: per-k .pte files and one .pte with a method per k sharing one copy of the weights,
validated with executorch's runtime in its own process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import refresh_manifest_hashes, tiny_model
from hydravit_edge import HydraConfig
from hydravit_edge.contract.manifest import Manifest
from hydravit_edge.export.api import export_model, validate_dir
from hydravit_edge.export import Status, get_exporter
from hydravit_edge.export.hashing import path_sha256

pytest.importorskip("executorch")

#: the module's exports are shared fixtures: keep its tests on one xdist worker (``--dist loadgroup``)
pytestmark = pytest.mark.xdist_group("export-executorch")

CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
KS = (2, 4)


@pytest.fixture(scope="module")
def et_exports(tmp_path_factory):
    model = tiny_model(CFG)
    root = tmp_path_factory.mktemp("et")
    # per-k only for the largest k: lowering is the slow part, and k=4 is what the single file is compared with
    # the single program's methods are lowered in two worker processes (--jobs 2) and assembled here
    return {mode: export_model(model, heads=KS if mode == "single" else (max(KS),), targets="executorch", mode=mode,
                               out=root / mode, jobs=2 if mode == "single" else 1)
            for mode in ("single", "per-k")}


def test_single_pte_has_a_method_per_k_and_matches_pytorch(et_exports):
    rep = et_exports["single"]
    assert rep.passed
    runtime = [r for r in rep.results if r.check == "runtime"]
    assert [r.k for r in runtime] == list(KS)
    assert all(r.status is Status.PASSED and r.max_abs_err <= 1e-4 and r.top1_agreement == 1.0 for r in runtime)
    t = Manifest.load(rep.out_dir).data["targets"]["executorch"]
    assert t["mode"] == "single" and [f["path"] for f in t["files"]] == [
        "executorch/hydravit.k2.ptdhead", "executorch/hydravit.k2.pte", "executorch/hydravit.k4.ptdhead",
        "executorch/hydravit.k4.pte", "executorch/hydravit.pte"]
    from hydravit_edge.export.executorch import SINGLE_LAZY_NOTE

    assert t["notes"] == [SINGLE_LAZY_NOTE]  # the CLI prints it with the export summary
    # each k's own program (static XNNPACK weights, packed once at load), its named data cut from hydravit.pte
    lazy = [r for r in rep.results if r.check == "lazy"]
    assert [r.k for r in lazy] == list(KS) and all(r.ok and r.max_abs_err <= 1e-4 for r in lazy)
    sizes = {f["path"]: f["bytes"] for f in t["files"]}
    weights = sizes["executorch/hydravit.pte"]
    assert all(sizes[f"executorch/hydravit.k{k}.pte"] + sizes[f"executorch/hydravit.k{k}.ptdhead"] < 0.1 * weights
               for k in KS)  # graphs only: no weight stored twice
    assert [(a["k"], a["entry"], a["entry_kind"]) for a in t["artifacts"]] == [(2, "forward_k2", "method"),
                                                                                (4, "forward_k4", "method")]
    assert get_exporter("executorch").entry_name(7) == "forward_k7"
    # both methods live in one loaded program
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(rep.out_dir / "executorch/hydravit.pte"))
    assert {"forward_k2", "forward_k4"} <= set(program.method_names)


def test_per_k_pte_files(et_exports):
    rep = et_exports["per-k"]
    assert rep.passed
    t = Manifest.load(rep.out_dir).data["targets"]["executorch"]
    assert [f["path"] for f in t["files"]] == ["executorch/k4.pte"]
    assert {a["entry"] for a in t["artifacts"]} == {"forward"}
    assert t["notes"] == []
    for f in t["files"]:
        assert f["sha256"] == path_sha256(rep.out_dir / f["path"])


def test_the_named_data_of_k_is_cut_from_the_shared_weights_byte_for_byte(et_exports, tmp_path):
    """The .ptd the runtime synthesizes is what ExecuTorch wrote for k's program (keys are content hashes);
    a flipped weight byte in hydravit.pte changes it, and the method then computes something else."""
    import hashlib

    import torch
    from executorch.runtime import Runtime

    from hydravit_edge.engines.ptd import synthesize
    from hydravit_edge.export.executorch_lazy import lazy_program

    out = et_exports["single"].out_dir / "executorch"
    man = Manifest.load(et_exports["single"].out_dir)
    layout = next(a for a in man.artifacts("executorch") if a["k"] == 2)["extra"]["lazy_data"]
    data = synthesize(layout, (out / layout["head"]).read_bytes(), (out / "hydravit.pte").read_bytes())
    assert hashlib.sha256(data).hexdigest() == layout["sha256"] and len(data) == layout["size"]
    model = tiny_model(CFG).narrow(4)
    assert bytes(data) == lazy_program(model, 2)[1]  # ExecuTorch's own bytes for k=2
    (tmp_path / "k2.ptd").write_bytes(data)
    program = Runtime.get().load_program(str(out / "hydravit.k2.pte"), data_path=str(tmp_path / "k2.ptd"))
    x = torch.randn(1, 3, 16, 16)
    got = program.load_method("forward").execute((x,))[0]
    np.testing.assert_allclose(got.numpy(), model(x, heads=2).detach().numpy(), atol=1e-4)
    seg = next(s for s in layout["segments"] if "cut" in s and s["size"] > 1000)
    broken = bytearray((out / "hydravit.pte").read_bytes())
    broken[seg["at"]] ^= 0xFF
    assert synthesize(layout, (out / layout["head"]).read_bytes(), bytes(broken)) != data


def test_single_pte_stores_weights_once(et_exports):
    single = (et_exports["single"].out_dir / "executorch/hydravit.pte").stat().st_size
    k4 = (et_exports["per-k"].out_dir / "executorch/k4.pte").stat().st_size
    # a copy of the weights per method would add the k=2 weights (a quarter of k=4's)
    assert single <= 1.10 * k4, (single, k4)


def test_validate_dir_catches_corrupted_weights(et_exports, tmp_path):
    """Overwrite weight bytes in the middle of the .pte (size and sha256 in the manifest fixed up):
    only running the program shows it is wrong."""
    import shutil

    d = tmp_path / "corrupt"
    shutil.copytree(et_exports["per-k"].out_dir, d)
    p = d / "executorch/k4.pte"
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = b"\x7f" * 4096
    p.write_bytes(bytes(raw))
    refresh_manifest_hashes(d, "executorch", p)
    rep = validate_dir(d)
    bad = [r for r in rep.results if not r.ok]
    assert [(r.k, r.check) for r in bad] == [(4, "runtime")]
    assert bad[0].status in (Status.FAILED, Status.ERROR)
    assert validate_dir(et_exports["single"].out_dir).passed


def test_runtime_imports_without_the_compiler(et_exports):
    """Processes that only run a .pte import ExecuTorch's runtime without ``executorch.exir`` (the
    compiler: 6.6 s and ~0.2 GB per process), get the same logits, and can still import the
    compiler afterwards."""
    import subprocess
    import sys

    pte = et_exports["single"].out_dir / "executorch/hydravit.pte"
    code = f"""
import sys, json
from hydravit_edge.executorch_runtime import import_runtime
import torch
rt = import_runtime()
light = sorted(m for m in sys.modules if m.startswith(("executorch.exir", "torch._dynamo", "torch._inductor")))
out = rt.Runtime.get().load_program({str(pte)!r}).load_method("forward_k4").execute([torch.ones(1, 3, 16, 16)])[0]
from executorch.exir import to_edge_transform_and_lower  # the real compiler is still importable
print(json.dumps({{"light": light, "logits": out.tolist()}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["light"] == []  # the compiler (and the dynamo/inductor it pulls in) was never imported
    import torch

    model = tiny_model(CFG)
    with torch.no_grad():
        want = model(torch.ones(1, 3, 16, 16), heads=4).numpy()
    np.testing.assert_allclose(np.asarray(got["logits"]), want, atol=1e-4)


def test_runtime_import_falls_back_to_the_ordinary_import():
    """If a future runtime needs more of ``executorch.exir`` than the stand-in gives, the stand-in is
    undone and the runtime is imported the ordinary way (compiler included)."""
    import subprocess
    import sys

    code = """
import importlib.abc, sys
class FailOnce(importlib.abc.MetaPathFinder):
    failed = False
    def find_spec(self, name, path=None, target=None):
        if name == "executorch.exir._warnings" and not FailOnce.failed:
            FailOnce.failed = True
            raise ImportError("simulated: the runtime needs more of exir")
        return None
sys.meta_path.insert(0, FailOnce())
from hydravit_edge.executorch_runtime import import_runtime
rt = import_runtime()
assert FailOnce.failed
print(rt.Runtime.__name__, type(sys.modules["executorch.exir"]).__name__, "executorch.exir.program" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["Runtime", "module", "True"]


def test_static_batch_graph_takes_any_batch(et_exports):
    """The .pte takes batch 1 (the manifest says so); the runtime splits a batch of 4 and gives the same logits."""
    from hydravit_edge.runtime import Runtime

    rep = et_exports["single"]
    rec = Manifest.load(rep.out_dir).data["targets"]["executorch"]["artifacts"][0]
    assert rec["inputs"][0]["shape"][0] == 1
    rt = Runtime(rep.out_dir, backend="executorch")
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    out = rt.predict(x, heads=4, normalized=True)
    one = np.concatenate([rt.predict(x[i:i + 1], heads=4, normalized=True).logits for i in range(4)])
    assert out.logits.shape == (4, 5)
    np.testing.assert_allclose(out.logits, one, atol=1e-6)
    rt.close()
