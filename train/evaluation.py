"""Per-k accuracy of a checkpoint on a validation set (``hydravit-edge eval``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from hydravit_edge.checkpoints import infer_config, load_state_into, read_checkpoint
from hydravit_edge.config import HydraConfig
from hydravit_edge.errors import UsageError
from hydravit_edge.heads import parse_heads
from hydravit_edge.model import HydraViT

from . import distributed as D
from .data import build_val_data
from .trainer import evaluate_model

__all__ = ["EvalResult", "evaluate", "evaluable_heads"]


@dataclass
class EvalResult:
    source: str
    data: str
    weights: str  # "ema" | "model"
    images: int
    rows: list[dict[str, Any]]  # one per k: k, embed_dim, top1, top5, loss, n
    config: Optional[HydraConfig] = None

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.source, "data": self.data, "weights": self.weights, "images": self.images,
                "per_k": self.rows}

    def top1(self) -> dict[int, float]:
        return {r["k"]: r["top1"] for r in self.rows}


def evaluable_heads(model: HydraViT) -> tuple[int, ...]:
    """k a model can run: every 1..H with a shared classifier, the classifiers' k otherwise."""
    c = model.config
    return tuple(c.heads) if c.separate_heads else tuple(range(1, c.num_heads + 1))


def trained_on(contents) -> Optional[str]:
    """The ``--data`` a checkpoint of this project was trained on (its metadata), or None."""
    data = (contents.metadata or {}).get("data")
    return str(data) if data else None


def evaluate(checkpoint: str | os.PathLike | HydraViT, data: Optional[str] = None, heads: Any = None, *,
             use_ema: bool = True, batch_size: int = 256, workers: int = 0, device: str = "auto",
             progress: bool = False) -> EvalResult:
    """Top-1/top-5 (%) of every requested k of ``checkpoint`` on ``data``'s validation split.

    ``checkpoint`` is a path in any format :func:`~hydravit_edge.load_checkpoint` reads (EMA
    weights are used when present and ``use_ema``) or a :class:`HydraViT`.  ``heads`` takes
    ``"1..12"``, ``"3,6,12"``, an int or a sequence; default: every k the model can run.
    ``data`` defaults to the dataset the checkpoint records it was trained on; a checkpoint that
    records none needs it.  Images go through the model's evaluation transform.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if isinstance(checkpoint, HydraViT):
        model, source, weights = checkpoint, "<model>", "model"
    else:
        path = Path(checkpoint)
        contents = read_checkpoint(path, prefer_ema=use_ema)
        model = HydraViT(infer_config(contents))
        load_state_into(model, contents)
        source, weights = str(path), "ema" if contents.used_ema else "model"
        data = data or trained_on(contents)
    if not data:
        raise UsageError(f"{source} does not record the dataset it was trained on; pass --data "
                         "('digits' or an ImageFolder root with val/)")
    available = evaluable_heads(model)
    ks = parse_heads(heads, available) if heads is not None else available
    config = model.config
    bundle = build_val_data(data, config.img_size, config.mean, config.std, crop_pct=config.crop_pct,
                            interpolation=config.interpolation)
    if bundle.num_classes != config.num_classes:
        raise UsageError(f"{source} has {config.num_classes} classes but --data {data} has {bundle.num_classes}")
    if config.labels is not None and tuple(config.labels) != bundle.labels:
        raise UsageError(f"{source}'s class labels {list(config.labels)[:5]}... differ from --data {data}'s "
                         f"{list(bundle.labels)[:5]}...")
    info = D.DistInfo(device=D._pick_device(device, 0))
    model = model.to(info.device).eval()
    loader = DataLoader(bundle.val, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=info.device.type == "cuda", collate_fn=bundle.collate_fn)
    with torch.inference_mode():
        res = evaluate_model(model, loader, ks, info.device, info, progress=progress,
                             description=f"evaluating k in {ks[0]}..{ks[-1]}")
    rows = [{"k": k, "embed_dim": config.width(k), **res[k]} for k in ks]
    return EvalResult(source, bundle.source, weights, len(bundle.val), rows, config)
