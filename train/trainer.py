"""Universal HydraViT training by stochastic head-count sampling (HydraViT Alg. 1).

Each optimisation step draws one head count ``k`` (:class:`~.sampler.HeadSampler`, a pure
function of seed and step), runs forward and backward through the k-head subnetwork only
(the model's sliced views leave exactly zero gradient everywhere else) and steps the
optimizer over subnetwork k's weights only (``--update subnet``, :mod:`.subnet_step`; or
over every parameter with ``--update full``).  Optimizer, schedule, Mixup/CutMix, losses, transforms and the model EMA are
timm's (``create_optimizer_v2``, ``create_scheduler_v2``, ``Mixup``,
``SoftTargetCrossEntropy``/``LabelSmoothingCrossEntropy``, ``create_transform``,
``ModelEmaV3``); several processes train together through ``torch.distributed`` (DDP with
``--update full``; one all-reduce of the slice gradients per step with ``--update subnet``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from hydravit_edge.checkpoints import load_state_into, read_checkpoint, save_checkpoint
from hydravit_edge.config import HydraConfig
from rich.console import Console

from hydravit_edge.console import console
from hydravit_edge.errors import HydraEdgeError, UsageError
from hydravit_edge.heads import format_heads
from hydravit_edge.model import HydraViT, SliceLeaves

from . import distributed as D
from .config import TrainConfig, default_run_dir
from .data import DataBundle, build_data
from .recipes import Recipe
from .runs import RunDir, jsonable
from .sampler import HeadSampler
from .subnet_step import clip_grad_norm, step_tensors, subnet_step

__all__ = ["Trainer", "TrainResult", "train", "resume", "evaluate_model", "ShardSampler", "per_k_table",
           "build_optimizer"]

STATE_VERSION = 1


# --------------------------------------------------------------------------- helpers

class ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank``, no padding (exact distributed evaluation)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _rng_state(device: torch.device) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


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


def build_optimizer(model: nn.Module, opt: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` (no weight decay on norms, biases, cls token and position
    embedding); AdamW uses PyTorch's fused kernel, 6x faster than the per-tensor loop on CPU."""
    from timm.optim import create_optimizer_v2

    extra = {"fused": True} if opt.lower() == "adamw" else {}
    return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, **extra)


def _score(per_k: dict[int, dict[str, float]]) -> float:
    return float(sum(v["top1"] for v in per_k.values()) / max(len(per_k), 1))


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    config: TrainConfig
    model_config: HydraConfig
    epochs_done: int
    steps_done: int
    #: per-k validation of the weights ``load_checkpoint`` prefers (EMA when there is one)
    val: dict[int, dict[str, float]]
    best_score: float
    train_seconds: float
    #: the head count of every step this process ran (resumed runs: from the resume point)
    k_history: list[int] = field(default_factory=list)
    model: Optional[HydraViT] = None

    @property
    def best(self) -> Path:
        return self.run_dir / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.safetensors"


# --------------------------------------------------------------------------- the trainer

class Trainer:
    """Builds everything a run needs from a resolved :class:`TrainConfig`.

    ``Trainer(cfg).fit()`` trains; the pieces (``model``, ``optimizer``, ``sampler``,
    ``train_step``) are attributes so tests and callers can drive single steps.
    """

    def __init__(self, config: TrainConfig, *, info: Optional[D.DistInfo] = None,
                 run_dir: Optional[Path] = None, resuming: bool = False,
                 on_step: Optional[Callable[[int, int, int, float], None]] = None,
                 log: Optional[Console] = None) -> None:
        self.info = info or D.DistInfo(device=torch.device("cpu"))
        self.console = log or console
        self.cfg = config
        recipe = config.recipe_obj()
        self.recipe: Recipe = dataclasses.replace(recipe, augment=config.augment or recipe.augment)
        self.on_step = on_step
        self.device = self.info.device
        self.run = RunDir(run_dir) if run_dir is not None else None
        self.k_history: list[int] = []
        if config.threads:
            torch.set_num_threads(int(config.threads))

        # same initial weights on every rank, then per-rank streams for augmentation
        _seed_all(config.seed)
        base = config.model_config(10, None)  # sizes only; classes come from the data
        self.data: DataBundle = build_data(config.data, base.img_size, base.mean, base.std, self.recipe)
        # the model records the evaluation transform its validation images went through
        self.model_config = config.model_config(self.data.num_classes, self.data.labels).replace(
            **self.data.eval_transform)
        self.model = HydraViT(self.model_config)
        if config.init and not resuming:
            self._init_from(Path(config.init))
        self.model.to(self.device)
        self.ema = None
        if config.ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=config.ema_decay)
        _seed_all(config.seed + 1000 * self.info.rank + 1)

        self.train_loader, self.val_loader = self._loaders()
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"--data {config.data}: {len(self.data.train)} training images are fewer than one batch of "
                f"{config.batch_size} x {self.info.world_size} process(es); lower --batch-size"
            )
        self.optimizer = self._optimizer()
        from timm.scheduler import create_scheduler_v2

        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=self.recipe.sched, num_epochs=config.epochs,
            warmup_epochs=config.warmup_epochs, warmup_lr=self.recipe.warmup_lr, min_lr=self.recipe.min_lr,
            step_on_epochs=False, updates_per_epoch=self.steps_per_epoch,
        )
        self.mixup = None
        if config.mixup > 0 or config.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=self.recipe.mixup_prob,
                               switch_prob=self.recipe.mixup_switch_prob, mode="batch",
                               label_smoothing=config.smoothing, num_classes=self.data.num_classes)
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        if self.mixup is not None:
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif config.smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=config.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()
        self.sampler = HeadSampler(config.heads, config.weights, seed=config.seed)
        self.epoch = 0  # epochs finished
        self.best_score = -math.inf
        self.last_val: dict[str, Any] = {}
        self.ddp_model: nn.Module = self.model
        self.leaves: Optional[SliceLeaves] = None  # --update subnet: the last forward's weight views
        self.amp = self.device.type == "cuda"

    # ------------------------------------------------------------------ construction
    def _init_from(self, path: Path) -> None:
        """Load ``--init`` (narrower checkpoints fill the leading corner).

        A classifier for a different number of classes (e.g. ImageNet weights for a 10-class
        folder) is left at its fresh initialisation; everything else must match.
        """
        contents = read_checkpoint(path)
        sd = contents.state_dict
        head = sd.get("head.weight")
        if head is not None and head.shape[0] != self.model_config.num_classes:
            if self.info.is_main:
                self.console.print(f"--init {path}: its classifier has {head.shape[0]} classes, the data "
                                   f"{self.model_config.num_classes}; starting with a fresh classifier")
            sd = {k: v for k, v in sd.items() if not (k.startswith("head.") or k.startswith("head_k."))}
            width = sd["patch_embed.proj.weight"].shape[0]  # a narrower checkpoint's head is cut to its width
            sd["head.weight"] = self.model.head.weight.detach()[:, :width].clone()
            sd["head.bias"] = self.model.head.bias.detach().clone()
            contents.state_dict = sd
        load_state_into(self.model, contents)

    def _optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.model, self.recipe.opt, self.cfg.lr, self.cfg.weight_decay)

    def _loaders(self) -> tuple[DataLoader, DataLoader]:
        cfg, info = self.cfg, self.info
        train_sampler = DistributedSampler(self.data.train, num_replicas=info.world_size, rank=info.rank,
                                           shuffle=True, seed=cfg.seed, drop_last=True)
        pin = self.device.type == "cuda"
        collate = self.data.collate_fn
        train = DataLoader(self.data.train, batch_size=cfg.batch_size, sampler=train_sampler,
                           num_workers=cfg.workers, drop_last=True, pin_memory=pin, collate_fn=collate)
        val = DataLoader(self.data.val, batch_size=max(cfg.batch_size, 128),
                         sampler=ShardSampler(len(self.data.val), info.rank, info.world_size),
                         num_workers=cfg.workers, pin_memory=pin, collate_fn=collate)
        return train, val

    def wrap_ddp(self) -> None:
        """``--update full``: DDP averages the full-size gradients.  ``--update subnet`` averages the
        slice gradients itself (DDP's reducer only knows whole parameters) after the same start:
        every process takes the first process's weights, as DDP does."""
        if self.info.distributed and self.cfg.update == "subnet":
            D.broadcast_tensors_([t for t in self.model.state_dict().values() if t.is_floating_point()], self.info)
            if self.ema is not None:
                self.ema.module.load_state_dict(self.model.state_dict())
            return
        if self.info.distributed and self.ddp_model is self.model:
            from torch.nn.parallel import DistributedDataParallel as DDP

            kw = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            # separate classifiers: the k not drawn this step leave their classifier unused
            self.ddp_model = DDP(self.model, find_unused_parameters=self.cfg.separate_heads, **kw)

    # ------------------------------------------------------------------ state
    def state_dict(self, rng_states: list[dict]) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "sampler": self.sampler.state_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_score": self.best_score,
            "last_val": self.last_val,
            "rng": rng_states,
            "world_size": self.info.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise UsageError(f"state file version {state.get('version')} is not supported (expected {STATE_VERSION})")
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise UsageError("the saved run has no EMA but this configuration uses one")
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.last_val = state.get("last_val") or {}
        rngs = state["rng"]
        if int(state.get("world_size", 1)) == self.info.world_size and len(rngs) == self.info.world_size:
            _set_rng_state(rngs[self.info.rank], self.device)
        else:
            warnings.warn(
                f"resuming a {state.get('world_size')}-process run with {self.info.world_size} process(es): "
                "data order and augmentation will differ from an uninterrupted run", stacklevel=2)
            _seed_all(self.cfg.seed + 1000 * self.info.rank + 1 + 7919 * self.epoch)
        if self.sampler.step != self.epoch * self.steps_per_epoch:
            raise UsageError(f"saved sampler step {self.sampler.step} does not match {self.epoch} epochs of "
                             f"{self.steps_per_epoch} steps; was the data or --batch-size changed?")
        self.scheduler.step_update(self.sampler.step)

    # ------------------------------------------------------------------ steps
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
        """Loss of subnetwork ``k`` on one batch and its gradients (optimizer not stepped).

        ``--update subnet``: the gradients are on the leaf views in ``self.leaves`` (sized to
        subnetwork k; :func:`~.subnet_step.full_gradient` shows them full size), averaged over
        the processes; ``--update full``: on the parameters, zero outside subnetwork k.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.update == "subnet":
            with self.model.slice_leaves() as leaves:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    logits = self.model(x, heads=k)
            self.leaves = leaves
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.ddp_model(x, heads=k)
        loss = self.criterion(logits.float(), y)
        loss.backward()
        if self.leaves is not None and self.info.distributed:
            D.all_reduce_mean_([t.grad for t in step_tensors(self.leaves, self.model.parameters())], self.info)
        return loss.detach()

    def optimizer_step(self) -> None:
        """Clip (when the recipe says so) and step the optimizer over what the last backward reached."""
        if self.leaves is not None:
            if self.recipe.clip_grad:
                clip_grad_norm(step_tensors(self.leaves, self.model.parameters()), self.recipe.clip_grad)
            subnet_step(self.optimizer, self.leaves)
            self.leaves = None
            return
        if self.recipe.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad)
        self.optimizer.step()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[int, torch.Tensor]:
        """One optimisation step through the k the sampler draws; returns (k, loss)."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.data.batch_transform is not None:
            x = self.data.batch_transform(x)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        k = self.sampler.next()
        loss = self.forward_backward(x, y, k)
        self.optimizer_step()
        self.scheduler.step_update(self.sampler.step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.sampler.step)
        self.k_history.append(k)
        return k, loss

    def validate(self) -> dict[str, dict[int, dict[str, float]]]:
        ks = list(self.cfg.heads)
        out = {"model": evaluate_model(self.model, self.val_loader, ks, self.device, self.info,
                                       progress=self.cfg.progress, description="validating every k",
                                       log=self.console)}
        if self.ema is not None:
            out["ema"] = evaluate_model(self.ema.module, self.val_loader, ks, self.device, self.info,
                                        progress=self.cfg.progress, description="validating every k (EMA)",
                                        log=self.console)
        return out

    # ------------------------------------------------------------------ epochs
    def _progress(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("k {task.fields[k]:>2}"),
            TextColumn("{task.fields[ips]} img/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False, disable=not (self.cfg.progress and self.info.is_main),
        )

    def train_epoch(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        self.ddp_model.train()
        self.train_loader.sampler.set_epoch(self.epoch)
        counts: Counter[int] = Counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        n_steps = 0
        seen = 0
        t0 = time.perf_counter()
        refresh = 1 if self.device.type == "cpu" else 10  # .item() syncs a GPU: only now and then
        with self._progress() as bar:
            task = bar.add_task(f"epoch {self.epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch,
                                loss="-", k="-", ips="-")
            for x, y in self.train_loader:
                k, loss = self.train_step(x, y)
                counts[k] += 1
                n_steps += 1
                seen += x.shape[0] * info.world_size
                loss_sum += loss
                if n_steps % refresh == 0 or n_steps == self.steps_per_epoch:
                    lv = loss.item()
                    if not math.isfinite(lv):
                        raise HydraEdgeError(f"training diverged: loss is {lv} at step {self.sampler.step} "
                                             f"(k={k}); lower --lr")
                    bar.update(task, completed=n_steps, loss=f"{lv:.3f}", k=k,
                               ips=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}")
                if self.on_step is not None:
                    self.on_step(self.epoch, self.sampler.step, k, float(loss))
        dt = time.perf_counter() - t0
        mean_loss = (loss_sum / max(n_steps, 1)).reshape(1)
        D.all_reduce_sum(mean_loss, info)
        self.epoch += 1
        return {
            "event": "epoch", "epoch": self.epoch, "step": self.sampler.step,
            "train_loss": mean_loss.item() / info.world_size, "lr": self.optimizer.param_groups[-1]["lr"],
            "epoch_seconds": dt, "images_per_second": seen / max(dt, 1e-9),
            "k_counts": {str(k): counts[k] for k in sorted(counts)},
        }

    def _metadata(self, score: Optional[float]) -> dict[str, Any]:
        return jsonable({
            "epoch": self.epoch, "step": self.sampler.step, "run": self.run.name if self.run else None,
            "data": self.data.source, "recipe": self.cfg.recipe, "labels": list(self.data.labels),
            "trained_heads": list(self.cfg.heads),
            "sampling_weights": list(self.cfg.weights) if self.cfg.weights else None,
            "separate_heads": self.cfg.separate_heads, "score_mean_top1": score,
            "val": self.last_val,
        })

    def checkpoint(self, val_now: bool) -> bool:
        """Save state, ``last`` and (when it improved) ``best``; returns whether ``best`` was written."""
        rngs = D.all_gather_object(_rng_state(self.device), self.info)
        improved = False
        if self.info.is_main and self.run is not None:
            preferred = self.last_val.get("preferred") if self.last_val else None
            score = _score({int(k): v for k, v in self.last_val[preferred].items()}) if preferred else None
            improved = val_now and score is not None and score > self.best_score
            if improved:
                self.best_score = score
            self.run.save_state(self.state_dict(rngs))
            ema = self.ema.module if self.ema is not None else None
            meta = self._metadata(score)
            save_checkpoint(self.model, self.run.last, ema=ema, metadata=meta)
            if improved:
                save_checkpoint(self.model, self.run.best, ema=ema, metadata=meta)
        self.best_score = D.broadcast_object(self.best_score, self.info)
        D.barrier(self.info)
        return improved

    def fit(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        self.wrap_ddp()
        t_start = time.perf_counter()
        if info.is_main and self.epoch == 0:
            self.console.print(
                f"training HydraViT k in {format_heads(cfg.heads)} "
                f"({'uniform' if not cfg.weights else 'weights ' + ','.join(f'{w:g}' for w in cfg.weights)}) "
                f"on {self.data.source}: {len(self.data.train)} train / {len(self.data.val)} val images, "
                f"recipe '{cfg.recipe}', {cfg.epochs} epochs x {self.steps_per_epoch} steps, "
                f"batch {cfg.batch_size} x {info.world_size}, lr {cfg.lr:.3g}, {self.device}"
                + (f", run dir {self.run.path}" if self.run else "")
            )
        while self.epoch < cfg.epochs:
            record = self.train_epoch()
            records = [record]
            val_now = self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
            if val_now:
                results = self.validate()
                preferred = "ema" if "ema" in results else "model"
                self.last_val = {"epoch": self.epoch, "preferred": preferred,
                                 **{name: {str(k): v for k, v in r.items()} for name, r in results.items()}}
                for name, r in results.items():
                    records.append({"event": "val", "epoch": self.epoch, "step": self.sampler.step,
                                    "weights": name, "mean_top1": _score(r),
                                    "per_k": {str(k): v for k, v in r.items()}})
                if info.is_main:
                    self.console.print(per_k_table(
                        results, f"validation after epoch {self.epoch}/{cfg.epochs} ({len(self.data.val)} images)"))
            if info.is_main:
                if self.run is not None:
                    self.run.append_metrics(jsonable(records))
                if cfg.progress and not val_now:
                    self.console.print(f"epoch {self.epoch}: loss {record['train_loss']:.4f}, "
                                       f"{record['images_per_second']:.0f} img/s")
            self.checkpoint(val_now)
        seconds = time.perf_counter() - t_start
        preferred = self.last_val.get("preferred", "model") if self.last_val else "model"
        val = {int(k): v for k, v in self.last_val.get(preferred, {}).items()} if self.last_val else {}
        return TrainResult(self.run.path if self.run else Path("."), cfg, self.model_config, self.epoch,
                           self.sampler.step, val, self.best_score, seconds, list(self.k_history), self.model)


# --------------------------------------------------------------------------- API

def _prepare_run_dir(cfg: TrainConfig, info: D.DistInfo) -> Path:
    path = Path(cfg.out).expanduser() if cfg.out else default_run_dir()
    path = Path(D.broadcast_object(str(path), info))
    run = RunDir(path)
    if info.is_main:
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {path}: is a file")
        if run.has_run():
            raise UsageError(f"--out {path}: already holds a training run; continue it with "
                             f"`hydravit-edge train --resume {path}` or choose another --out")
        path.mkdir(parents=True, exist_ok=True)
    D.barrier(info)
    return path


def train(config: TrainConfig, *, on_step: Optional[Callable[[int, int, int, float], None]] = None,
          log: Optional[Console] = None) -> TrainResult:
    """Train universal HydraViT weights; returns a :class:`TrainResult`.

    Run under ``torchrun`` for several processes (DDP; gloo on CPU, NCCL on GPUs).
    ``on_step(epoch, step, k, loss)`` is called after every optimisation step; messages,
    progress bars and tables go to ``log`` (default: the stdout console).
    """
    info = D.setup(config.device)
    threads = torch.get_num_threads()
    try:
        cfg = config.resolve(info.world_size)
        path = _prepare_run_dir(cfg, info)
        cfg.out = str(path)
        trainer = Trainer(cfg, info=info, run_dir=path, on_step=on_step, log=log)
        if info.is_main:
            trainer.run.write_config(cfg.to_dict(), trainer.model_config.to_dict())
        D.barrier(info)
        return trainer.fit()
    finally:
        torch.set_num_threads(threads)
        D.teardown(info)


def resume(run_dir: str | Path, *, progress: Optional[bool] = None, device: Optional[str] = None,
           on_step: Optional[Callable[[int, int, int, float], None]] = None,
           log: Optional[Console] = None) -> TrainResult:
    """Continue an interrupted run from its last finished epoch, bit for bit."""
    run = RunDir(run_dir)
    saved = run.read_config()
    cfg = TrainConfig.from_dict(saved["train"])
    if progress is not None:
        cfg.progress = progress
    if device is not None:
        cfg.device = device
    info = D.setup(cfg.device)
    threads = torch.get_num_threads()
    try:
        cfg.out = str(run.path)
        if not run.state.exists():  # stopped inside its first epoch: nothing to restore, start again
            trainer = Trainer(cfg, info=info, run_dir=run.path, on_step=on_step, log=log)
            if info.is_main:
                run.truncate_metrics(0)
                trainer.console.print(f"{run.path} stopped before finishing its first epoch; starting it again")
        else:
            trainer = Trainer(cfg, info=info, run_dir=run.path, resuming=True, on_step=on_step, log=log)
            trainer.load_state_dict(run.load_state())
            if info.is_main:
                run.truncate_metrics(trainer.epoch)
                trainer.console.print(f"resuming {run.path} after epoch {trainer.epoch}/{cfg.epochs} "
                                      f"(step {trainer.sampler.step})")
        D.barrier(info)
        return trainer.fit()
    finally:
        torch.set_num_threads(threads)
        D.teardown(info)
