"""hydravit-edge: deploy one HydraViT at every head count.

>>> from hydravit_edge import HydraConfig, HydraViT
>>> model = HydraViT(HydraConfig())          # DeiT-B/16 shaped, 12 stacked heads
>>> logits = model(images, heads=3)          # the DeiT-tiny shaped subnetwork
>>> vit = model.subnet(3)                    # a standalone timm VisionTransformer
"""

from .checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from .config import PRESETS, HydraConfig, preset
from .errors import CheckpointError, HydraEdgeError, MissingDependencyError, UsageError
from .heads import format_heads, parse_heads
from .model import HydraViT, build_timm_vit
from .profile import KProfile, profile

__version__ = "0.1.0"

__all__ = [
    "HydraConfig", "HydraViT", "PRESETS", "preset", "build_timm_vit",
    "load_checkpoint", "read_checkpoint", "save_checkpoint",
    "profile", "KProfile", "parse_heads", "format_heads",
    "HydraEdgeError", "UsageError", "CheckpointError", "MissingDependencyError",
]
