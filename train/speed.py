"""Training-step cost of a HydraViT subnetwork against a standalone timm ViT of the same width.

A HydraViT step through subnetwork k runs the sliced forward/backward, then AdamW over
*all* parameters (their moments keep decaying; that is the paper's optimiser), while the
standalone ``timm`` ViT of width ``head_dim * k`` owns only its own parameters.  Both use
the optimiser the trainer builds (:func:`~.trainer.build_optimizer`: timm's
``create_optimizer_v2``, fused AdamW, wd 0.05) and
bf16 autocast on CUDA, as in training.  Every measurement runs in a fresh process
(``python -m hydravit_edge.train.speed``) so allocator caches and thread pools of one do not
colour the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterable, Optional


def _child(config_name: str, k: int, mode: str, batch: int, steps: int, device: str, img_size: int,
           threads: int) -> dict:
    import time

    import torch

    from hydravit_edge.config import preset
    from hydravit_edge.model import HydraViT, build_timm_vit

    from .trainer import build_optimizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = preset(config_name)
    if img_size:
        config = config.replace(img_size=img_size)
    dev = torch.device(device)
    if mode == "hydra":
        model = HydraViT(config).to(dev).train()
        fwd = lambda x: model(x, heads=k)  # noqa: E731
    else:
        model = build_timm_vit(config, k).to(dev).train()
        fwd = model
    opt = build_optimizer(model, "adamw", 1e-4, 0.05)
    x = torch.randn(batch, config.in_chans, config.img_size, config.img_size, device=dev)
    y = torch.randint(0, config.num_classes, (batch,), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        c0 = time.process_time()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        sync()
        return t1 - t0, time.perf_counter() - t0, time.process_time() - c0

    for _ in range(2 if dev.type == "cpu" else 5):
        step()
    fb, full, cpu = [], [], []
    for _ in range(steps):
        a, b, c = step()
        fb.append(a)
        full.append(b)
        cpu.append(c)

    def median(xs):
        return 1000 * sorted(xs)[len(xs) // 2]

    return {"fwd_bwd_ms": median(fb), "step_ms": median(full),
            "cpu_step_ms": median(cpu) if dev.type == "cpu" else None, "threads": torch.get_num_threads()}


def measure(config_name: str, k: int, mode: str, batch: int, steps: int, device: str, img_size: Optional[int],
            threads: Optional[int]) -> dict:
    cmd = [sys.executable, "-m", "hydravit_edge.train.speed", config_name, str(k), mode, str(batch), str(steps),
           device, str(img_size or 0), str(threads or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"measurement {mode} k={k} on {device} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(config_name: str, heads: Iterable[int], batch: int = 16, steps: int = 5, device: str = "auto",
            img_size: Optional[int] = None, threads: Optional[int] = None, progress: bool = True) -> list[dict]:
    """One row per (device, k): step and forward+backward times and their ratios."""
    import torch
    from rich.progress import Progress

    from hydravit_edge.config import preset
    from hydravit_edge.errors import UsageError

    config = preset(config_name)
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    devices = ["cpu"] if device == "cpu" else ["cuda"] if device == "cuda" else \
        (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    heads = list(heads)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("measuring", total=2 * len(heads) * len(devices))
        for dev in devices:
            for k in heads:
                res = {}
                for mode in ("hydra", "timm"):
                    bar.update(task, description=f"{dev} k={k} {'HydraViT' if mode == 'hydra' else 'timm ViT'}")
                    res[mode] = measure(config_name, k, mode, batch, steps, dev, img_size, threads)
                    bar.advance(task)
                rows.append({
                    "device": dev, "k": k, "width": config.width(k), "batch": batch,
                    "img_size": img_size or config.img_size,
                    "hydra_step_ms": res["hydra"]["step_ms"], "timm_step_ms": res["timm"]["step_ms"],
                    "step_ratio": res["hydra"]["step_ms"] / res["timm"]["step_ms"],
                    "hydra_fwd_bwd_ms": res["hydra"]["fwd_bwd_ms"], "timm_fwd_bwd_ms": res["timm"]["fwd_bwd_ms"],
                    "fwd_bwd_ratio": res["hydra"]["fwd_bwd_ms"] / res["timm"]["fwd_bwd_ms"],
                    # process CPU time: robust to other processes on a shared machine (1 thread)
                    "cpu_step_ratio": (res["hydra"]["cpu_step_ms"] / res["timm"]["cpu_step_ms"]
                                       if res["hydra"]["cpu_step_ms"] else None),
                    "threads": res["hydra"]["threads"],
                })
    return rows


if __name__ == "__main__":
    name, k, mode, batch, steps, device, img, threads = sys.argv[1:9]
    print(json.dumps(_child(name, int(k), mode, int(batch), int(steps), device, int(img), int(threads))))
