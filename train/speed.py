"""Training-step cost of a HydraViT subnetwork against a standalone timm ViT of the same width.

A HydraViT step through subnetwork k is the trainer's step: with ``update="subnet"`` (the
default, as ``hydravit-edge train``) the forward takes leaf views of the weight slices and
AdamW steps over them only (:mod:`.subnet_step`); with ``update="full"`` backward fills
full-size gradients and AdamW steps over *all* parameters.  The standalone ``timm`` ViT of
width ``head_dim * k`` owns only its own parameters.  Both use
the optimiser the trainer builds (:func:`~.trainer.build_optimizer`: timm's
``create_optimizer_v2``, fused AdamW, wd 0.05) and
bf16 autocast on CUDA, as in training.  Each k runs in a fresh process
(``python -m hydravit_edge.train.speed``) that holds both models and alternates their steps
(H T T H ...): on a shared 2-core machine, separate processes measured minutes apart differed
by up to 30% from drift alone, which alternation cancels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterable, Optional


def _child(config_name: str, k: int, update: str, batch: int, steps: int, device: str, img_size: int,
           threads: int) -> dict:
    """Both models in this process, their steps alternating (H T T H H T ...), ``steps`` timed each."""
    import time

    import torch

    from hydravit_edge.config import preset
    from hydravit_edge.model import HydraViT, build_timm_vit

    from .subnet_step import subnet_step
    from .optim import build_optimizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = preset(config_name)
    if img_size:
        config = config.replace(img_size=img_size)
    dev = torch.device(device)
    hydra = HydraViT(config).to(dev).train()
    vit = build_timm_vit(config, k).to(dev).train()
    opts = {"hydra": build_optimizer(hydra, "adamw", 1e-4, 0.05), "timm": build_optimizer(vit, "adamw", 1e-4, 0.05)}
    x = torch.randn(batch, config.in_chans, config.img_size, config.img_size, device=dev)
    y = torch.randint(0, config.num_classes, (batch,), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(name: str) -> tuple[float, float, float]:
        opt = opts[name]
        c0 = time.process_time()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        leaves = None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            if name == "timm":
                logits = vit(x)
            elif update == "subnet":  # the trainer's step (hydravit_edge.train.subnet_step)
                with hydra.slice_leaves() as leaves:
                    logits = hydra(x, heads=k)
            else:
                logits = hydra(x, heads=k)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        sync()
        t1 = time.perf_counter()
        if leaves is not None:
            subnet_step(opt, leaves)
        else:
            opt.step()
        sync()
        return t1 - t0, time.perf_counter() - t0, time.process_time() - c0

    for _ in range(2 if dev.type == "cpu" else 5):
        step("hydra")
        step("timm")
    res: dict = {"hydra": [], "timm": []}
    for i in range(steps):
        for name in (("hydra", "timm") if i % 2 == 0 else ("timm", "hydra")):
            res[name].append(step(name))

    def median(xs):
        return sorted(xs)[len(xs) // 2]

    out: dict = {"threads": torch.get_num_threads()}
    for name, rows in res.items():
        out[name] = {"fwd_bwd_ms": 1000 * median([r[0] for r in rows]), "step_ms": 1000 * median([r[1] for r in rows]),
                     "cpu_step_ms": 1000 * median([r[2] for r in rows]) if dev.type == "cpu" else None}
    for key, i in (("step_ratio", 1), ("fwd_bwd_ratio", 0), ("cpu_step_ratio", 2)):
        out[key] = (median([a[i] / b[i] for a, b in zip(res["hydra"], res["timm"])])
                    if i != 2 or dev.type == "cpu" else None)
    return out


def measure(config_name: str, k: int, update: str, batch: int, steps: int, device: str, img_size: Optional[int],
            threads: Optional[int]) -> dict:
    cmd = [sys.executable, "-m", "hydravit_edge.train.speed", config_name, str(k), update, str(batch), str(steps),
           device, str(img_size or 0), str(threads or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"measurement k={k} on {device} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(config_name: str, heads: Iterable[int], batch: int = 16, steps: int = 6, device: str = "auto",
            img_size: Optional[int] = None, threads: Optional[int] = None, progress: bool = True,
            update: str = "subnet") -> list[dict]:
    """One row per (device, k): step and forward+backward times and their ratios.

    Each (device, k) runs in a fresh process holding both models, whose steps alternate, so
    drift on a shared machine hits both; times are medians and each ratio is the median of
    the per-pair ratios.
    """
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
        task = bar.add_task("measuring", total=len(heads) * len(devices))
        for dev in devices:
            for k in heads:
                bar.update(task, description=f"{dev} k={k}: HydraViT and timm ViT steps, alternating")
                res = measure(config_name, k, update, batch, steps, dev, img_size, threads)
                bar.advance(task)
                rows.append({
                    "device": dev, "update": update, "k": k, "width": config.width(k), "batch": batch,
                    "img_size": img_size or config.img_size, "steps": steps,
                    "hydra_step_ms": res["hydra"]["step_ms"], "timm_step_ms": res["timm"]["step_ms"],
                    "step_ratio": res["step_ratio"],
                    "hydra_fwd_bwd_ms": res["hydra"]["fwd_bwd_ms"], "timm_fwd_bwd_ms": res["timm"]["fwd_bwd_ms"],
                    "fwd_bwd_ratio": res["fwd_bwd_ratio"], "cpu_step_ratio": res["cpu_step_ratio"],
                    "threads": res["threads"],
                })
    return rows


if __name__ == "__main__":
    name, k, update, batch, steps, device, img, threads = sys.argv[1:9]
    print(json.dumps(_child(name, int(k), update, int(batch), int(steps), device, int(img), int(threads))))
