"""hydravit-edge: deploy one HydraViT at every head count.

>>> from hydravit_edge import HydraConfig, HydraViT
>>> model = HydraViT(HydraConfig())          # DeiT-B/16 shaped, 12 stacked heads
>>> logits = model(images, heads=3)          # the DeiT-tiny shaped subnetwork
>>> vit = model.subnet(3)                    # a standalone timm VisionTransformer

Names are imported lazily so that the torch-free parts (``hydravit_edge.runtime``,
``.policy``, ``.contract`` (manifest, report, LUT), ``.battery``) can be used on devices without PyTorch.
"""

from __future__ import annotations

import importlib

# torch-free modules are imported eagerly; this also keeps ``hydravit_edge.profile`` the function
# (importing the submodule first would otherwise leave the module object under that name).
from .config import PRESETS, HydraConfig, preset
from .errors import CheckpointError, HydraEdgeError, MissingDependencyError, UsageError
from .heads import format_heads, parse_heads
from .profile import KProfile, profile

__version__ = "0.1.0"

_EXPORTS = {
    "HydraViT": "model", "build_timm_vit": "model",
    "load_checkpoint": "checkpoints", "read_checkpoint": "checkpoints", "save_checkpoint": "checkpoints",
}

__all__ = sorted(list(_EXPORTS) + ["HydraConfig", "PRESETS", "preset", "HydraEdgeError", "UsageError",
                                   "CheckpointError", "MissingDependencyError", "parse_heads", "format_heads",
                                   "profile", "KProfile"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hydravit_edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
