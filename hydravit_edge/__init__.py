"""hydravit-edge: deploy one HydraViT at every head count.

>>> from hydravit_edge import HydraConfig, HydraViT
>>> model = HydraViT(HydraConfig())          # DeiT-B/16 shaped, 12 stacked heads
>>> logits = model(images, heads=3)          # the DeiT-tiny shaped subnetwork
>>> vit = model.subnet(3)                    # a standalone timm VisionTransformer

Names are imported lazily so that the torch-free parts (``hydravit_edge.runtime``,
``.policy``, ``.lut``, ``.battery``) can be used on devices without PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "HydraConfig": "config", "PRESETS": "config", "preset": "config",
    "HydraViT": "model", "build_timm_vit": "model",
    "load_checkpoint": "checkpoints", "read_checkpoint": "checkpoints", "save_checkpoint": "checkpoints",
    "profile": "profile", "KProfile": "profile",
    "parse_heads": "heads", "format_heads": "heads",
    "HydraEdgeError": "errors", "UsageError": "errors", "CheckpointError": "errors",
    "MissingDependencyError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hydravit_edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
