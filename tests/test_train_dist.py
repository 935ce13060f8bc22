"""Two CPU processes with gloo under torchrun: same k every step, identical weights at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hydravit_edge.train import HeadSampler

WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from hydravit_edge.train import TrainConfig, train

    out, update = sys.argv[1], sys.argv[2]
    seen = []
    result = train(TrainConfig(data="digits", img_size=8, epochs=1, batch_size=32, heads="1..6", ema_decay=0.9,
                               eval_every=1, progress=False, out=os.path.join(out, "run"), seed=5, update=update),
                   on_step=lambda epoch, step, k, loss: seen.append(k))
    rank = int(os.environ["RANK"])
    torch.save({"k": result.k_history, "seen": seen, "world": int(os.environ["WORLD_SIZE"]),
                "model": result.model.state_dict(), "val": result.val},
               os.path.join(out, f"rank{rank}.pt"))
""")


@pytest.mark.parametrize("update", ["subnet", "full"])  # slice gradients all-reduced / DDP
def test_two_gloo_processes_train_the_same_subnetwork_each_step(tmp_path, update):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path), update]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    # 1437 images / (32 x 2 processes) = 22 steps, the same k on both ranks, from (seed, step) alone
    assert len(r0["k"]) == 22
    assert r0["k"] == r1["k"] == r0["seen"] == HeadSampler(range(1, 7), seed=5).sequence(0, 22)
    assert r0["model"].keys() == r1["model"].keys()
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key
    assert r0["val"] == r1["val"]  # sharded validation, summed over both ranks
    assert sum(v["n"] for v in r0["val"].values()) == 6 * 359
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "last.safetensors",
                                               "best.safetensors", "state.pt"}
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
