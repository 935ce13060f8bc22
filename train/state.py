"""Weights and state in and out of a run: ``--init`` in; ``state.pt``, ``last`` and ``best`` out; ``--resume`` back in.

``state.pt`` holds everything an interrupted run needs to continue bit for bit: model, EMA,
optimizer, scheduler, head sampler, best score, last validation and the RNG states of every
process (:func:`trainer_state` / :func:`load_trainer_state`).  :func:`save_epoch` writes it with
the two checkpoints after each epoch.  The functions take a :class:`~.trainer.Trainer`.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from hydravit_edge.checkpoints import load_state_into, read_checkpoint, save_checkpoint
from hydravit_edge.errors import UsageError
from hydravit_edge.model import HydraViT

from . import distributed as D
from .evaluation import mean_top1
from .runs import jsonable

__all__ = ["STATE_VERSION", "seed_all", "rng_state", "set_rng_state", "init_weights", "trainer_state",
           "load_trainer_state", "save_epoch"]

STATE_VERSION = 1


# --------------------------------------------------------------------------- random streams

def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's torch (and CUDA), NumPy and Python RNG states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# --------------------------------------------------------------------------- --init

def init_weights(model: HydraViT, path: Path, announce: Optional[Callable[[str], None]] = None) -> None:
    """Load ``--init`` into ``model`` (narrower checkpoints fill the leading corner).

    A classifier for a different number of classes (e.g. ImageNet weights for a 10-class
    folder) is left at its fresh initialisation; everything else must match.  ``announce``
    hears about the fresh classifier only once the rest of the checkpoint has loaded.
    """
    contents = read_checkpoint(path)
    sd = contents.state_dict
    head = sd.get("head.weight")
    num_classes = model.config.num_classes
    fresh_head = head is not None and head.shape[0] != num_classes
    if fresh_head:
        sd = {k: v for k, v in sd.items() if not (k.startswith("head.") or k.startswith("head_k."))}
        width = sd["patch_embed.proj.weight"].shape[0]  # a narrower checkpoint's head is cut to its width
        sd["head.weight"] = model.head.weight.detach()[:, :width].clone()
        sd["head.bias"] = model.head.bias.detach().clone()
        contents.state_dict = sd
    load_state_into(model, contents)  # raises (saying nothing else first) when the rest does not fit
    if fresh_head and announce is not None:
        announce(f"--init {path}: its classifier has {head.shape[0]} classes, the data {num_classes}; "
                 "starting with a fresh classifier")


# --------------------------------------------------------------------------- state.pt

def trainer_state(trainer: Any, rng_states: list[dict]) -> dict[str, Any]:
    """What ``state.pt`` holds (``rng_states``: one per process, gathered by the caller)."""
    return {
        "version": STATE_VERSION,
        "epoch": trainer.epoch,
        "sampler": trainer.sampler.state_dict(),
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.module.state_dict() if trainer.ema is not None else None,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "best_score": trainer.best_score,
        "last_val": trainer.last_val,
        "rng": rng_states,
        "world_size": trainer.info.world_size,
    }


def load_trainer_state(trainer: Any, state: dict[str, Any]) -> None:
    """Restore a :func:`trainer_state` into a freshly built trainer of the same configuration."""
    info = trainer.info
    if state.get("version") != STATE_VERSION:
        raise UsageError(f"state file version {state.get('version')} is not supported (expected {STATE_VERSION})")
    trainer.model.load_state_dict(state["model"])
    if trainer.ema is not None:
        if state.get("ema") is None:
            raise UsageError("the saved run has no EMA but this configuration uses one")
        trainer.ema.module.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.epoch = int(state["epoch"])
    trainer.best_score = float(state["best_score"])
    trainer.last_val = state.get("last_val") or {}
    rngs = state["rng"]
    if int(state.get("world_size", 1)) == info.world_size and len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank], trainer.device)
    else:
        warnings.warn(
            f"resuming a {state.get('world_size')}-process run with {info.world_size} process(es): "
            "data order and augmentation will differ from an uninterrupted run", stacklevel=3)
        seed_all(trainer.cfg.seed + 1000 * info.rank + 1 + 7919 * trainer.epoch)
    if trainer.sampler.step != trainer.epoch * trainer.steps_per_epoch:
        raise UsageError(f"saved sampler step {trainer.sampler.step} does not match {trainer.epoch} epochs of "
                         f"{trainer.steps_per_epoch} steps; was the data or --batch-size changed?")
    trainer.scheduler.step_update(trainer.sampler.step)


# --------------------------------------------------------------------------- after each epoch

def _metadata(trainer: Any, score: Optional[float]) -> dict[str, Any]:
    cfg = trainer.cfg
    return jsonable({
        "epoch": trainer.epoch, "step": trainer.sampler.step, "run": trainer.run.name if trainer.run else None,
        "data": trainer.data.source, "recipe": cfg.recipe, "labels": list(trainer.data.labels),
        "trained_heads": list(cfg.heads),
        "sampling_weights": list(cfg.weights) if cfg.weights else None,
        "separate_heads": cfg.separate_heads, "score_mean_top1": score,
        "val": trainer.last_val,
    })


def save_epoch(trainer: Any, val_now: bool) -> bool:
    """Save state, ``last`` and (when it improved) ``best``; returns whether ``best`` was written."""
    info = trainer.info
    rngs = D.all_gather_object(rng_state(trainer.device), info)
    improved = False
    if info.is_main and trainer.run is not None:
        last_val = trainer.last_val
        preferred = last_val.get("preferred") if last_val else None
        score = mean_top1({int(k): v for k, v in last_val[preferred].items()}) if preferred else None
        improved = val_now and score is not None and score > trainer.best_score
        if improved:
            trainer.best_score = score
        trainer.run.save_state(trainer_state(trainer, rngs))
        ema = trainer.ema.module if trainer.ema is not None else None
        meta = _metadata(trainer, score)
        save_checkpoint(trainer.model, trainer.run.last, ema=ema, metadata=meta)
        if improved:
            save_checkpoint(trainer.model, trainer.run.best, ema=ema, metadata=meta)
    trainer.best_score = D.broadcast_object(trainer.best_score, info)
    D.barrier(info)
    return improved
