"""Model configuration: one dataclass describes every HydraViT this toolkit builds."""

from __future__ import annotations

import dataclasses
import json
import operator
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

#: ImageNet normalisation used by DeiT/HydraViT; checkpoints may carry their own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class HydraConfig:
    """Architecture of a universal HydraViT with ``num_heads`` stacked heads.

    The subnetwork with ``k`` heads uses the first ``head_dim * k`` embedding features
    everywhere.  With the defaults (12 heads of 64 dims, 224px, patch 16, depth 12),
    k = 3 / 6 / 12 are exactly DeiT-tiny / small / base.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    depth: int = 12
    num_heads: int = 12
    head_dim: int = 64
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    #: head counts this model offers (trained for); ``None`` means 1..num_heads.
    heads: tuple[int, ...] | None = None
    #: one classifier per k (stored as ``head_k.<k>.*``) instead of one shared classifier.
    separate_heads: bool = False
    #: stochastic depth used while training (0 for inference/export).
    drop_path_rate: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: evaluation transform (timm's convention): resize the shorter side to floor(img_size / crop_pct)
    #: with ``interpolation``, centre-crop img_size; see :mod:`hydravit_edge.transform`.
    crop_pct: float = field(default=0.875, compare=False)
    interpolation: str = field(default="bicubic", compare=False)
    labels: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise UsageError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("img_size", "patch_size", "in_chans", "depth", "num_heads", "head_dim", "num_classes"):
            if getattr(self, name) < 1:
                raise UsageError(f"HydraConfig.{name} must be >= 1, got {getattr(self, name)}")
        heads = tuple(range(1, self.num_heads + 1)) if self.heads is None else tuple(sorted(set(self.heads)))
        bad = [k for k in heads if not 1 <= k <= self.num_heads]
        if bad or not heads:
            raise UsageError(f"HydraConfig.heads {self.heads} must lie in 1..{self.num_heads}")
        object.__setattr__(self, "heads", heads)
        if self.labels is not None:
            labels = tuple(str(x) for x in self.labels)
            if len(labels) != self.num_classes:
                raise UsageError(f"{len(labels)} labels given for {self.num_classes} classes")
            object.__setattr__(self, "labels", labels)
        from .transform import EvalTransform

        EvalTransform(self.img_size, self.crop_pct, self.interpolation)  # checks crop_pct and interpolation
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    # ---- derived sizes -------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """Width of the full model (all heads)."""
        return self.num_heads * self.head_dim

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1

    def width(self, k: int) -> int:
        """Embedding width of the subnetwork with ``k`` heads."""
        return self.head_dim * k

    def mlp_hidden(self, k: int) -> int:
        """MLP hidden width of subnetwork k: timm's ``int(embed_dim * mlp_ratio)`` with embed_dim = head_dim*k.

        The one formula for it (the slicing table, the model, profiles); ``floor`` equals ``int``
        here and also works for a symbolic k under ``torch.export``.
        """
        from math import floor

        return floor(self.width(k) * self.mlp_ratio)

    @property
    def max_heads(self) -> int:
        return max(self.heads)

    def check_heads(self, k: int) -> int:
        """Return ``k`` as int or raise ValueError (``UsageError``) when the model lacks it."""
        if isinstance(k, bool):
            raise UsageError(f"heads must be an integer, got {k!r}")
        try:
            k = operator.index(k)  # ints, numpy ints, 0-dim integer tensors; not 2.5 or "3"
        except TypeError:
            raise UsageError(f"heads must be an integer, got {k!r}") from None
        if not 1 <= k <= self.num_heads:
            raise UsageError(f"heads={k} is outside 1..{self.num_heads} for this {self.num_heads}-head model")
        if self.separate_heads and k not in self.heads:
            raise UsageError(f"heads={k} has no classifier; this model has separate classifiers for k in {list(self.heads)}")
        return k

    @property
    def eval_transform(self):
        """The evaluation transform (:class:`~hydravit_edge.transform.EvalTransform`) of this model."""
        from .transform import EvalTransform

        return EvalTransform.from_config(self)

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("heads", "mean", "std", "labels"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HydraConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown HydraConfig fields: {unknown}")
        kw = dict(d)
        for key in ("heads", "mean", "std", "labels"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "HydraConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "HydraConfig":
        return dataclasses.replace(self, **changes)


#: Named configurations (``--model NAME`` on the CLI).
PRESETS: dict[str, HydraConfig] = {
    # HydraViT / DeiT-B/16: k=3,6,12 are DeiT-tiny/small/base.
    "base": HydraConfig(),
    # Small model for the embedded 8x8 digits upscaled to 16x16: patch 4 (16 patches + cls),
    # 12 heads of 16 dims, depth 3.  Trains over k = 1..12 in a couple of CPU minutes.
    "tiny": HydraConfig(img_size=16, patch_size=4, in_chans=3, depth=3, num_heads=12, head_dim=16,
                        num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        crop_pct=1.0, interpolation="bilinear"),
}


def preset(name: str) -> HydraConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown model preset '{name}'; choose one of {sorted(PRESETS)}") from None
