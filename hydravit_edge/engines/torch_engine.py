"""Eager PyTorch: the HydraViT module itself (``model.forward_heads``), the paper's reference protocol.

No artifact: ``path`` is a checkpoint, or None for random weights (latency does not depend on
them); the model config comes from ``details["config"]``.  On CUDA, :meth:`TorchSession.timed`
times each forward with CUDA events around it, synchronised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from hydravit_edge.errors import HydraEdgeError

from .base import Engine, Session, register_engine


class TorchSession(Session):
    def __init__(self, engine, path, records, threads, device, config):
        super().__init__(engine, path, records)
        import torch

        from hydravit_edge.checkpoints import load_checkpoint
        from hydravit_edge.config import HydraConfig
        from hydravit_edge.model import HydraViT

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        cfg = HydraConfig.from_dict(dict(config)) if config is not None else None
        if path:
            model = load_checkpoint(Path(path), cfg)
        else:
            torch.manual_seed(0)
            model = HydraViT(cfg)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.cuda = self.device.type == "cuda"

    def max_batch(self, k):
        return None

    def feed(self, k, x):
        return self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def call(self, k, feed):
        with self._torch.inference_mode():
            return self.model.forward_heads(feed, k)

    def to_numpy(self, out):
        return out.float().cpu().numpy()

    def timed(self, k, feed, n):
        if not self.cuda:
            return super().timed(k, feed, n)
        # the paper's protocol: CUDA events around each forward, synchronised
        torch = self._torch
        out = []
        with torch.inference_mode():
            for _ in range(n):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                self.model.forward_heads(feed, k)
                end.record()
                torch.cuda.synchronize()
                out.append(float(start.elapsed_time(end)))
        return out


@register_engine
class TorchEngine(Engine):
    name = "torch"
    runtime_imports = ("torch", "timm", "hydravit_edge.model", "hydravit_edge.checkpoints")
    devices = ("cpu", "cuda")

    def check_device(self, device):
        super().check_device(device)
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise HydraEdgeError(
                    "--device cuda: no CUDA GPU is available on this machine (torch.cuda.is_available() is False"
                    f"{'; torch is a CPU-only build' if torch.version.cuda is None else ''}); run the reference "
                    "protocol on a machine with an NVIDIA GPU, or use --device cpu")

    def gpu_name(self, device: str) -> Optional[str]:
        if device != "cuda":
            return None
        import torch

        return torch.cuda.get_device_name(0)

    def _open(self, path, records, *, threads, device, details):
        return TorchSession(self, path, records, threads, device, details.get("config"))
