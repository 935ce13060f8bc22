"""Full-size export checks on the default 12 x 64 config (random weights): minutes on 2 cores.

Run with ``make test-slow``. The figures of the issue (every k, latencies, DeiT comparison) come from
``hydravit-edge export-bench``; these tests pin the size rule and correctness at k=3 and k=12.
"""

from __future__ import annotations

import pytest
import torch

from hydravit_edge import HydraViT, preset
from hydravit_edge.export.api import export_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(0)
    return HydraViT(preset("base")).eval()


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_single_artifact_of_the_base_model_stores_weights_once(base_model, target, tmp_path):
    single = export_model(base_model, heads="3,12", targets=target, mode="single", out=tmp_path / "s", batch=2)
    per_k = export_model(base_model, heads="12", targets=target, mode="per-k", out=tmp_path / "p", batch=2)
    assert single.passed and per_k.passed
    s = sum(f["bytes"] for f in single.manifest["targets"][target]["files"])
    p = sum(f["bytes"] for f in per_k.manifest["targets"][target]["files"])
    assert s <= 1.10 * p, f"{target}: single {s} vs per-k k=12 {p}"
    assert s >= 0.99 * p  # and it does hold the full weights


def test_export_bench_runs_end_to_end(tmp_path):
    from hydravit_edge.bench.export_bench import run_bench

    res = run_bench(config_name="tiny", heads="3,12", targets="onnx", runs=2, rounds=1, threads=1,
                    json_path=tmp_path / "bench.json", plot_path=tmp_path / "bench.png")
    t = res["targets"]["onnx"]
    assert t["sizes"]["single_over_kmax"] <= 1.10 and set(t["latency"]) == {3, 12}
    assert set(t["runtime_slice"]) == {3, 12} and (tmp_path / "bench.png").stat().st_size > 0
