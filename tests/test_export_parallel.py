"""Per-k export work in worker processes (``--jobs``): the same files as in one process, errors
raised in a worker arrive with their message, a dead worker gives a clear error, and the
default job count follows model size, cores and memory."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
import torch

from helpers import tiny_model
from hydravit_edge import HydraConfig, save_checkpoint
from hydravit_edge.cli import main
from hydravit_edge.errors import UsageError
from hydravit_edge.export import parallel
from hydravit_edge.export.api import export_model
from hydravit_edge.export import ExportError, get_exporter
from hydravit_edge.export.hashing import path_sha256
from hydravit_edge.export.parallel import ExportPool, auto_jobs, per_k_task

CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)
KS = (2, 4)


@pytest.fixture(scope="module")
def model():
    return tiny_model(CFG)


def _hashes(rep):
    t = rep.manifest["targets"]["onnx"]
    return {f["path"]: f["sha256"] for f in t["files"]}


@pytest.mark.parametrize("mode", ["per-k", "single"])
def test_two_workers_write_the_same_onnx_files_as_one_process(model, tmp_path, mode):
    # validation runs elsewhere (test_export.py); here the files must simply be the same
    serial = export_model(model, heads=KS, targets="onnx", mode=mode, out=tmp_path / "serial", jobs=1, validate=False)
    pooled = export_model(model, heads=KS, targets="onnx", mode=mode, out=tmp_path / "pooled", jobs=2, validate=False)
    assert serial.manifest["targets"]["onnx"]["export_jobs"] == 1
    assert pooled.manifest["targets"]["onnx"]["export_jobs"] == 2
    assert _hashes(pooled) == _hashes(serial)
    for f in pooled.manifest["targets"]["onnx"]["files"]:
        assert path_sha256(tmp_path / "pooled" / f["path"]) == f["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pooled", "serial"]  # no worker scratch left behind


def test_an_error_in_a_worker_arrives_with_its_message(model, tmp_path):
    with ExportPool(model, 2) as pool:
        with pytest.raises(UsageError, match="unknown target 'nope'"):
            pool.map(functools.partial(per_k_task, target="nope", out_dir=str(tmp_path)), KS)
    assert pool._tmp is None  # the model file the workers loaded is gone


def _die(model, k):  # a worker killed by the OOM killer looks like this
    os._exit(9)


def test_a_dead_worker_is_a_clear_error(model):
    with ExportPool(model, 2) as pool:
        with pytest.raises(ExportError, match="worker process died.*fewer --jobs"):
            pool.map(_die, KS)


def test_a_script_without_a_main_guard_can_use_workers(tmp_path):
    # multiprocessing's spawn re-imports the caller's __main__ in every worker; ours must not
    script = tmp_path / "export_script.py"
    script.write_text(
        "import operator\n"
        "from hydravit_edge import HydraConfig, HydraViT\n"
        "from hydravit_edge.export.parallel import ExportPool\n"
        "model = HydraViT(HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5))\n"
        "with ExportPool(model.eval(), 2) as pool:\n"
        "    print('results', pool.map(operator.is_, [2, 4]))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("results") == 1 and "results {2: False, 4: False}" in proc.stdout


def test_one_job_runs_in_this_process_on_the_callers_model(model):
    seen = []
    pool = ExportPool(model, 1)
    out = pool.map(lambda m, k: seen.append(m) or k * 10, KS, progress=seen.append)
    assert out == {2: 20, 4: 40} and seen == [model, "k=2", model, "k=4"]
    assert pool._workers == [] and pool._tmp is None
    with pytest.raises(ValueError):
        ExportPool(model, 0)


class _Big(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.empty(n, device="meta"))


def test_auto_jobs(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_count", lambda: 8)
    monkeypatch.setattr(parallel, "_available_bytes", lambda: 64e9)
    big = _Big(86_000_000)  # ViT-B: 344 MB of fp32 weights -> ~4.25 GB per worker
    assert auto_jobs(big, 10) == 8
    assert auto_jobs(big, 3) == 3  # never more workers than tasks
    assert auto_jobs(big, 1) == 1
    assert auto_jobs(_Big(5_000_000), 10) == 1  # small models: start-up would cost more than it saves
    assert auto_jobs(_Big(5_000_000), 10, min_params=0) == 8  # a target whose per-k work is always slow
    assert get_exporter("executorch").parallel_min_params == 0 and get_exporter("onnx").parallel_min_params > 10**7
    monkeypatch.setattr(parallel, "_available_bytes", lambda: 9e9)
    assert auto_jobs(big, 10) == 2  # as many as memory holds
    monkeypatch.setattr(parallel, "_available_bytes", lambda: 3e9)
    assert auto_jobs(big, 10) == 1


def test_jobs_must_be_positive(model, tmp_path, capsys):
    with pytest.raises(UsageError, match="--jobs must be >= 1"):
        export_model(model, heads=KS, targets="onnx", out=tmp_path / "x", jobs=0)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    with pytest.raises(SystemExit) as e:
        main(["export", "-c", str(ckpt), "-t", "onnx", "--jobs", "0", "-o", str(tmp_path / "x")])
    assert e.value.code == 2 and "--jobs must be >= 1" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
