"""Training recipes: named bundles of hyper-parameters.

``deit`` follows DeiT (Touvron et al. 2021) as HydraViT trains on ImageNet: AdamW at
5e-4 x global batch / 512, weight decay 0.05, cosine schedule with 5 warm-up epochs,
label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment ``rand-m9-mstd0.5-inc1``, random
erasing 0.25, drop path 0.1 and a model EMA of 0.99996, all built from timm's components.

``quick`` is the small, fast default for the embedded digits data, tuned to train the
tiny preset over k = 1..12 in a couple of CPU minutes: 30 epochs of batch 16, AdamW 1e-3
(weight decay 0.05, cosine, 1 warm-up epoch), label smoothing 0.1 and drop path 0.1; no
Mixup, augmentation or EMA (on 1438 images they slowed learning more than they helped;
``augment="light"``, a small random affine per image, remains available).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from hydravit_edge.errors import UsageError

__all__ = ["Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int  # per process
    #: learning rate for a global batch of 512; the run uses lr_per_512 * global batch / 512.
    lr_per_512: float
    weight_decay: float
    opt: str = "adamw"
    sched: str = "cosine"
    warmup_epochs: float = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    #: "timm": timm.data.create_transform with the options below; "light": small random
    #: shifts/rotations (digits) or timm's plain crop+flip (image folders); "none".
    augment: str = "timm"
    auto_augment: Optional[str] = None
    color_jitter: float = 0.4
    hflip: float = 0.5
    re_prob: float = 0.0
    re_mode: str = "pixel"
    interpolation: str = "bicubic"
    drop_path: float = 0.0
    #: model EMA decay (timm ModelEmaV3); 0 disables the EMA.
    ema_decay: float = 0.0
    clip_grad: Optional[float] = None
    #: validate every k on the held-out set every this many epochs (and after the last).
    eval_every: int = 5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, Recipe] = {
    "deit": Recipe(
        name="deit", epochs=300, batch_size=64, lr_per_512=5e-4, weight_decay=0.05,
        warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5, smoothing=0.1,
        mixup=0.8, cutmix=1.0, augment="timm", auto_augment="rand-m9-mstd0.5-inc1",
        color_jitter=0.4, re_prob=0.25, re_mode="pixel", interpolation="bicubic",
        drop_path=0.1, ema_decay=0.99996, eval_every=5,
    ),
    "quick": Recipe(
        name="quick", epochs=30, batch_size=16, lr_per_512=3.2e-2, weight_decay=0.05,
        warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-5, smoothing=0.1,
        augment="none", drop_path=0.1, ema_decay=0.0, eval_every=10,
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe '{name}'; choose one of {sorted(RECIPES)}") from None
