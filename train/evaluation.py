"""Per-k accuracy: the evaluation loop every k shares, its table, and ``hydravit-edge eval``.

:func:`evaluate_model` runs each validation batch through every requested subnetwork (the
trainer's validation and :func:`evaluate` of a checkpoint both use it); :func:`evaluate`
builds the model and the validation data of a checkpoint first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from rich.console import Console
from torch.utils.data import DataLoader, Sampler

from hydravit_edge.checkpoints import infer_config, load_state_into, read_checkpoint
from hydravit_edge.config import HydraConfig
from hydravit_edge.console import console
from hydravit_edge.errors import UsageError
from hydravit_edge.heads import parse_heads
from hydravit_edge.model import HydraViT

from . import distributed as D
from .data import build_val_data

__all__ = ["EvalResult", "evaluate", "evaluable_heads", "evaluate_model", "per_k_table", "mean_top1",
           "ShardSampler"]


# --------------------------------------------------------------------------- the loop

class ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank``, no padding (exact distributed evaluation)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, heads: Sequence[int], device: torch.device,
                   info: Optional[D.DistInfo] = None, progress: bool = False, description: str = "validating",
                   log: Optional[Console] = None) -> dict[int, dict[str, float]]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of every k in ``heads`` over ``loader``.

    Each batch is read once and run through every subnetwork.  With ``info`` describing a
    distributed run, each rank evaluates its shard and the counts are summed.
    """
    from rich.progress import Progress

    info = info or D.DistInfo(device=device)
    was_training = model.training
    model.eval()
    heads = list(heads)
    # rows: k; columns: correct@1, correct@5, loss sum, n
    acc = torch.zeros(len(heads), 4, dtype=torch.float64)
    amp = device.type == "cuda"
    with Progress(transient=True, console=log or console, disable=not (progress and info.is_main)) as bar:
        task = bar.add_task(description, total=len(loader))
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            for i, k in enumerate(heads):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x, heads=k)
                logits = logits.float()
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                hit = top == y[:, None]
                acc[i, 0] += hit[:, 0].sum().item()
                acc[i, 1] += hit.any(dim=1).sum().item()
                acc[i, 2] += nn.functional.cross_entropy(logits, y, reduction="sum").item()
                acc[i, 3] += y.numel()
            bar.advance(task)
    model.train(was_training)
    if info.distributed:
        t = acc.to(device)
        D.all_reduce_sum(t, info)
        acc = t.cpu()
    out = {}
    for i, k in enumerate(heads):
        n = max(acc[i, 3].item(), 1.0)
        out[k] = {"top1": 100.0 * acc[i, 0].item() / n, "top5": 100.0 * acc[i, 1].item() / n,
                  "loss": acc[i, 2].item() / n, "n": int(acc[i, 3].item())}
    return out


def per_k_table(results: dict[str, dict[int, dict[str, float]]], title: str):
    """A rich table with one row per k and top-1/top-5 columns for each result set."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("k", justify="right")
    for name in results:
        suffix = f" ({name})" if len(results) > 1 else ""
        table.add_column(f"top-1 %{suffix}", justify="right")
        table.add_column(f"top-5 %{suffix}", justify="right")
    ks = sorted({k for r in results.values() for k in r})
    for k in ks:
        row = [str(k)]
        for r in results.values():
            row += ([f"{r[k]['top1']:.2f}", f"{r[k]['top5']:.2f}"] if k in r else ["", ""])
        table.add_row(*row)
    return table


def mean_top1(per_k: dict[int, dict[str, float]]) -> float:
    """The mean top-1 over k: the score ``best.safetensors`` is chosen by."""
    return float(sum(v["top1"] for v in per_k.values()) / max(len(per_k), 1))


# --------------------------------------------------------------------------- a checkpoint

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
