"""Small shared helpers for the core tests (tiny configs, deterministic weights)."""

from __future__ import annotations

import torch

from hydravit_edge import HydraConfig, HydraViT

#: A tiny 4-head model: 32px images, patch 8 (17 tokens), depth 2, 8-dim heads, 5 classes.
TINY = HydraConfig(img_size=32, patch_size=8, depth=2, num_heads=4, head_dim=8, num_classes=5)


def tiny_model(config: HydraConfig = TINY, seed: int = 0) -> HydraViT:
    torch.manual_seed(seed)
    model = HydraViT(config).eval()
    # give LayerNorms and biases non-trivial values so slicing mistakes show up
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or name in ("cls_token", "pos_embed"):
                p.normal_(0.0, 0.5)
                if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                    p.add_(1.0)
    return model


def images(config: HydraConfig = TINY, n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, config.in_chans, config.img_size, config.img_size, generator=g)
