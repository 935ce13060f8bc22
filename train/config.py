"""``TrainConfig``: everything a training run needs, as plain JSON-able values.

Fields left at ``None`` take the recipe's value (``quick`` for digits, ``deit`` for image
folders) when the run starts; :meth:`TrainConfig.resolve` returns the filled-in copy that
is written to ``config.json`` in the run directory and used by ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydravit_edge.config import PRESETS, HydraConfig, preset
from hydravit_edge.errors import UsageError
from hydravit_edge.heads import parse_heads

from .data import is_digits
from .recipes import Recipe, get_recipe
from .sampler import parse_weights

__all__ = ["TrainConfig", "DEFAULT_RUNS_DIR", "default_run_dir"]

DEFAULT_RUNS_DIR = Path("runs")

#: recipe fields a TrainConfig can override one by one
_RECIPE_FIELDS = ("epochs", "batch_size", "weight_decay", "warmup_epochs", "drop_path", "ema_decay",
                  "smoothing", "mixup", "cutmix", "augment", "eval_every")


def default_run_dir(base: Path = DEFAULT_RUNS_DIR) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` (a suffix keeps it unique)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / stamp
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{n}"
    return path


@dataclass
class TrainConfig:
    """Settings of one training run (``hydravit_edge.train.train(TrainConfig(...))``)."""

    data: str = "digits"
    out: Optional[str] = None
    recipe: Optional[str] = None
    #: model preset (``tiny`` for digits, ``base`` for image folders) and optional image size
    model: Optional[str] = None
    img_size: Optional[int] = None
    heads: Any = None  # "1..12", "3,6,12", 6 or a sequence; default: every head count of the model
    weights: Any = None  # "25,30,45" or a sequence, one per head count; default uniform
    separate_heads: bool = False
    #: "subnet": a step updates only subnetwork k's weights and optimizer state (the paper);
    #: "full": zero gradients outside it and an optimizer step over every parameter
    update: str = "subnet"
    init: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None  # per process
    lr: Optional[float] = None  # default: recipe lr_per_512 x global batch / 512
    weight_decay: Optional[float] = None
    warmup_epochs: Optional[float] = None
    drop_path: Optional[float] = None
    ema_decay: Optional[float] = None
    smoothing: Optional[float] = None
    mixup: Optional[float] = None
    cutmix: Optional[float] = None
    augment: Optional[str] = None  # "timm" | "light" | "none"
    eval_every: Optional[int] = None
    workers: Optional[int] = None
    #: leave unreadable image files of an ImageFolder out (listed) instead of stopping
    skip_bad_images: bool = False
    #: torch CPU threads per process; default 1 for digits (its tiny matrices gain little from a
    #: second thread, and OpenMP threads collapse when the CPU is shared), torch's choice otherwise
    threads: Optional[int] = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True

    # ------------------------------------------------------------------ resolution
    def recipe_obj(self) -> Recipe:
        name = self.recipe or ("quick" if is_digits(self.data) else "deit")
        return get_recipe(name)

    def model_config(self, num_classes: int, labels: Sequence[str] | None) -> HydraConfig:
        """The HydraConfig this run trains (needs the resolved config)."""
        base = preset(self.model)
        kw: dict[str, Any] = dict(num_classes=num_classes, labels=tuple(labels) if labels else None,
                                  heads=tuple(self.heads), separate_heads=self.separate_heads,
                                  drop_path_rate=float(self.drop_path))
        if self.img_size:
            kw["img_size"] = int(self.img_size)
        return base.replace(**kw)

    def resolve(self, world_size: int = 1) -> "TrainConfig":
        """A copy with every recipe default filled in and every value checked."""
        r = self.recipe_obj()
        c = dataclasses.replace(self, recipe=r.name)
        if not str(c.data).strip():
            raise UsageError("--data is empty; use 'digits' or an ImageFolder root")
        c.model = c.model or ("tiny" if is_digits(c.data) else "base")
        if c.model not in PRESETS:
            raise UsageError(f"unknown model config '{c.model}'; choose one of {sorted(PRESETS)}")
        base = preset(c.model)
        if c.img_size is not None:
            if int(c.img_size) < base.patch_size or int(c.img_size) % base.patch_size:
                raise UsageError(f"--img-size {c.img_size} must be a positive multiple of the patch size "
                                 f"{base.patch_size}")
            c.img_size = int(c.img_size)
        c.heads = parse_heads(c.heads, range(1, base.num_heads + 1)) if c.heads is not None else \
            tuple(range(1, base.num_heads + 1))
        if isinstance(c.heads, int):
            c.heads = (c.heads,)
        c.weights = parse_weights(c.weights, c.heads)
        for name in _RECIPE_FIELDS:
            if getattr(c, name) is None:
                setattr(c, name, getattr(r, name))
        if c.augment not in ("timm", "light", "none"):
            raise UsageError(f"augment must be timm, light or none, got {c.augment!r}")
        if int(c.epochs) < 1:
            raise UsageError(f"--epochs must be >= 1, got {c.epochs}")
        if int(c.batch_size) < 1:
            raise UsageError(f"--batch-size must be >= 1, got {c.batch_size}")
        if (c.mixup or c.cutmix) and int(c.batch_size) % 2:
            raise UsageError(f"Mixup/CutMix need an even --batch-size, got {c.batch_size}")
        if int(c.eval_every) < 1:
            raise UsageError(f"eval_every must be >= 1, got {c.eval_every}")
        for name in ("weight_decay", "warmup_epochs", "drop_path", "smoothing", "mixup", "cutmix"):
            if float(getattr(c, name)) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(c, name)}")
        if not 0 <= float(c.ema_decay) < 1:
            raise UsageError(f"ema_decay must be in [0, 1), got {c.ema_decay}")
        if not 0 <= float(c.drop_path) < 1:
            raise UsageError(f"drop_path must be in [0, 1), got {c.drop_path}")
        c.epochs, c.batch_size, c.eval_every = int(c.epochs), int(c.batch_size), int(c.eval_every)
        if c.lr is None:
            c.lr = r.lr_per_512 * c.batch_size * world_size / 512
        if float(c.lr) <= 0:
            raise UsageError(f"--lr must be > 0, got {c.lr}")
        if c.workers is None:
            c.workers = 0 if is_digits(c.data) else min(4, os.cpu_count() or 1)
        if c.threads is None and is_digits(c.data):
            c.threads = 1
        if c.threads is not None and int(c.threads) < 1:
            raise UsageError(f"--threads must be >= 1, got {c.threads}")
        if int(c.workers) < 0:
            raise UsageError(f"--workers must be >= 0, got {c.workers}")
        if isinstance(c.seed, bool) or not isinstance(c.seed, int) or c.seed < 0:
            raise UsageError(f"--seed must be a non-negative integer, got {c.seed!r}")
        if c.update not in ("subnet", "full"):
            raise UsageError(f"--update must be subnet or full, got {c.update!r}")
        if c.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {c.device!r}")
        if c.init is not None and not Path(c.init).expanduser().is_file():
            raise UsageError(f"--init {c.init}: no such checkpoint file")
        return c

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("heads", "weights"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown TrainConfig fields: {unknown}")
        kw = dict(d)
        for key in ("heads", "weights"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
