"""Eager-PyTorch overhead of slicing: ``model(x, heads=k)`` against ``model.subnet(k)``.

Every measurement runs in a fresh Python process (``python -m hydravit_edge.speed``) so
thread pools and allocator caches of one do not colour the other, and so the peak resident
memory (``VmHWM``, :func:`hydravit_edge.memory.peak_rss_mb`) belongs to that measurement alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterable, Optional


def _child(config_name: str, k: int, mode: str, batch: int, runs: int, threads: Optional[int]) -> dict:
    import time

    import torch

    from .config import preset
    from .model import HydraViT, build_timm_vit

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = preset(config_name)
    with torch.inference_mode():
        if mode == "sliced":
            model = HydraViT(config).eval()
            fn = lambda x: model(x, heads=k)  # noqa: E731
        else:  # build only the subnetwork, as a deployment of that width would
            model = build_timm_vit(config, k).eval()
            fn = model
        x = torch.randn(batch, config.in_chans, config.img_size, config.img_size)
        for _ in range(2):
            fn(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    from .memory import peak_rss_mb

    return {"ms": 1000 * times[len(times) // 2], "peak_mb": peak_rss_mb() * 1e6 / 2**20,
            "threads": torch.get_num_threads()}


def measure(config_name: str, k: int, mode: str, batch: int, runs: int, threads: Optional[int] = None) -> dict:
    cmd = [sys.executable, "-m", "hydravit_edge.speed", config_name, str(k), mode, str(batch), str(runs), str(threads or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"measurement {mode} k={k} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(config_name: str, heads: Iterable[int], batch: int = 8, runs: int = 5,
            threads: Optional[int] = None, progress: bool = True) -> list[dict]:
    from rich.progress import Progress

    from .config import preset
    from .profile import params_for

    config = preset(config_name)
    full_mb = params_for(config, config.num_heads) * 4 / 2**20
    heads = list(heads)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("measuring", total=2 * len(heads))
        for k in heads:
            res = {}
            for mode in ("sliced", "subnet"):
                bar.update(task, description=f"k={k} {mode}")
                res[mode] = measure(config_name, k, mode, batch, runs, threads)
                bar.advance(task)
            rows.append({
                "k": k, "batch": batch, "sliced_ms": res["sliced"]["ms"], "subnet_ms": res["subnet"]["ms"],
                "ratio": res["sliced"]["ms"] / res["subnet"]["ms"],
                "sliced_peak_mb": res["sliced"]["peak_mb"], "subnet_peak_mb": res["subnet"]["peak_mb"],
                "full_weights_mb": full_mb, "threads": res["sliced"]["threads"],
            })
    return rows


if __name__ == "__main__":
    name, k, mode, batch, runs, threads = sys.argv[1:7]
    print(json.dumps(_child(name, int(k), mode, int(batch), int(runs), int(threads) or None)))
