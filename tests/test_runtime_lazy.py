"""Lazy materialisation (issue 13): one session per k cut from the single artifact's shared
weights, a least-recently-used cache within a memory budget, background builds for the policy."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from test_bench import HEADS, tiny_exports, tiny_hydra  # noqa: F401  (fixture)
from hydravit_edge.materialize import MemoryBudgetError, SessionCache

pytestmark = pytest.mark.xdist_group("tiny_exports")


def _images(n=2):
    return np.random.default_rng(0).random((n, 3, 32, 32), dtype=np.float32)


# --------------------------------------------------------------------------- the cache

class FakeSession:
    def __init__(self, unit, log):
        self.unit, self.log, self.closed = unit, log, False

    def close(self):
        self.closed = True
        self.log.append(("close", self.unit))


def fake_cache(costs, budget, keep=None):
    log = []

    def open_unit(unit):
        log.append(("open", unit))
        return FakeSession(unit, log)

    return SessionCache(open_unit, lambda u: costs[u], budget_bytes=budget, keep=keep, measure=False), log


def test_cache_closes_least_recently_used_and_never_exceeds_the_budget():
    cache, log = fake_cache({"a": 40, "b": 40, "c": 40, "d": 90}, budget=100)
    cache.build("a")
    cache.build("b")
    assert cache.units == ["a", "b"] and cache.used_bytes == 80
    cache.get("a")  # a is now the most recently used
    cache.build("c")
    assert cache.units == ["a", "c"] and ("close", "b") in log  # b, the least recently used, went
    for unit in ("b", "a", "d", "c"):
        cache.build(unit)
        assert cache.used_bytes <= 100
    assert cache.units == ["c"] and cache.builds == 7
    assert [u for what, u in log if what == "open"] == ["a", "b", "c", "b", "a", "d", "c"]


def test_cache_fits_keeps_what_is_pinned_and_refuses_a_unit_bigger_than_the_budget():
    cache, _ = fake_cache({"a": 60, "b": 60, "big": 200}, budget=100)
    cache.build("a")
    assert cache.fits("b") and not cache.fits("b", keep={"a"})
    cache.pinned = {"a"}
    cache.build("b")  # a is pinned (running): it stays even though the budget is exceeded
    assert "a" in cache.units
    cache.pinned = set()
    with pytest.raises(MemoryBudgetError, match="more than the memory budget"):
        cache.build("big")


def test_cache_keep_limits_the_number_of_units():
    cache, log = fake_cache({"a": 1, "b": 1, "c": 1}, budget=None, keep=2)
    for u in ("a", "b", "c"):
        cache.build(u)
    assert cache.units == ["b", "c"] and ("close", "a") in log


def test_background_build_and_its_error():
    cache, _ = fake_cache({"a": 1, "b": 1}, budget=None)
    f = cache.build_async("a")
    assert cache.build_async("a") is f or cache.ready("a")
    f.result()
    assert cache.ready("a")

    def broken(unit):
        raise RuntimeError("cannot open " + unit)

    bad = SessionCache(broken, lambda u: 1, measure=False)
    bad.build_async("x").exception()
    with pytest.raises(RuntimeError, match="cannot open x"):
        bad.ready("x")
    cache.close()
    bad.close()


# --------------------------------------------------------------------------- the runtime

def test_lazy_is_the_default_and_materializes_one_k_at_a_time(tiny_exports):
    import torch

    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"])
    assert rt.materialize == "lazy" and rt.file == "onnx/hydravit.k4.onnx" and rt.materialized == [4]
    model = tiny_hydra()
    x = _images()
    for k in (4, 1, 2, 1):
        out = rt.predict(x, heads=k)
        with torch.no_grad():
            ref = model(torch.from_numpy(rt.preprocess(x)), heads=k).numpy()
        np.testing.assert_allclose(out.logits, ref, atol=1e-4, rtol=0)
        assert out.k == k
    assert rt.loads == 3  # k=1 was built once; the second k=1 call found it materialised
    assert rt.predict(x, heads=1).waited is False
    eager = Runtime(tiny_exports["single"], materialize="eager")
    assert eager.file == "onnx/hydravit.onnx" and eager.materialized == list(HEADS)
    np.testing.assert_allclose(eager.predict(x, heads=2).logits, rt.predict(x, heads=2).logits, atol=1e-5)


def test_a_budget_for_one_k_keeps_one_k(tiny_exports):
    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"], keep=1)
    x = _images(1)
    for k in (1, 2, 4, 2):
        out = rt.predict(x, heads=k)
        assert out.waited and rt.materialized == [k]
    with pytest.raises(MemoryBudgetError):
        Runtime(tiny_exports["single"], memory_budget_mb=1e-4)


def test_the_policy_never_waits_for_a_build(tiny_exports):
    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"], prefetch=False)  # k=4 materialised first
    x = _images(1)
    first = rt.predict(x, power={"battery": 30})  # medium band: k=2, not materialised yet
    assert first.k == 4 and first.wanted == 2 and first.building == 2 and not first.waited
    rt.wait()
    after = rt.predict(x, power={"battery": 30})
    assert after.k == 2 and after.building is None and not after.waited and after.switched
    assert sorted(rt.materialized) == [2, 4]


def test_prefetch_builds_the_k_of_the_next_band_down(tiny_exports):
    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"], background=False)
    x = _images(1)
    assert rt.predict(x, power={"battery": 30}).k == 2  # background=False: waits for k=2
    rt.predict(x, power={"battery": 30})  # k=2 ready; prefetch the low band's k=1
    rt.wait()
    assert 1 in rt.materialized
    out = rt.predict(x, power={"battery": 10})
    assert out.k == 1 and not out.waited


def test_a_single_artifact_without_graphs_per_k_is_eager_and_says_so(tiny_exports, tmp_path):
    from hydravit_edge.runtime import Runtime

    old = tmp_path / "old"
    shutil.copytree(tiny_exports["single"], old)
    man = json.loads((old / "manifest.json").read_text())
    for art in man["targets"]["onnx"]["artifacts"]:
        art["extra"].pop("lazy_graph")
    (old / "manifest.json").write_text(json.dumps(man))
    rt = Runtime(old)
    assert rt.materialize == "eager" and "no graph per k" in rt.materialize_note and rt.materialized == list(HEADS)


def test_the_lut_carries_the_memory_budget_and_the_runtime_takes_it(tiny_exports, tmp_path, capsys):
    from test_bench import bench_args, run_cli

    from hydravit_edge.contract.lut import Lut
    from hydravit_edge.runtime import Runtime

    code, _, err = run_cli(bench_args(tiny_exports["single"], tmp_path, "--heads", "1,4", "--runs", "2"), capsys)
    assert code in (0, None), err
    lut = tmp_path / "lut.json"
    code, _, err = run_cli(["lut", "build", str(tmp_path / "test-box.json"), "--out", str(lut), "--memory-budget-mb",
                            "321"], capsys)
    assert code in (0, None), err
    table = Lut.load(lut)
    entry = table.device("test-box")
    assert entry.entry.materialize == "lazy" and entry.memory_budget_mb == 321  # lazy rows come first
    assert all(r.cold_switch_ms > 0 and r.rss_anon_mb > 0 for r in entry.rows)
    assert {e.materialize for e in table.devices} == {"lazy", "eager"}
    rt = Runtime(tiny_exports["single"], lut=lut, device="test-box")
    assert rt.memory_budget_mb == 321


def test_the_policy_does_not_rise_onto_an_unbuilt_k_right_after_a_cold_switch(tiny_exports):
    from hydravit_edge.runtime import Runtime

    rt = Runtime(tiny_exports["single"], heads=1, keep=1, background=False, prefetch=False)
    x = _images(1)
    assert rt.predict(x, power={"battery": 30}).k == 2  # built now: a cold switch
    held = rt.predict(x, power={"battery": 100})  # k=4 is not built and the last cold switch was just now
    assert held.k == 2 and held.decision.limit == "switch_cost" and not held.waited
    rt._cold_switch_at -= 31  # half a minute later the rise is allowed
    out = rt.predict(x, power={"battery": 100})
    assert out.k == 4 and out.waited and rt.materialized == [4]
    assert rt.predict(x, power={"battery": 5}).k == 1  # a drop never waits for the interval
