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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from rich.console import Console
from torch.utils.data import DataLoader, DistributedSampler

from hydravit_edge.config import HydraConfig
from hydravit_edge.console import console
from hydravit_edge.errors import HydraEdgeError, UsageError
from hydravit_edge.heads import format_heads
from hydravit_edge.model import HydraViT, SliceLeaves

from . import distributed as D
from .config import TrainConfig
from .data import DataBundle, build_data
from .evaluation import ShardSampler, evaluate_model, mean_top1, per_k_table
from .image_check import check_images
from .optim import build_criterion, build_mixup, build_optimizer, build_scheduler
from .progress import SMALL_DATA_HINT, TimeEstimate, epoch_progress
from .recipes import Recipe
from .runs import RunDir, jsonable
from .sampler import HeadSampler
from .state import init_weights, load_trainer_state, save_epoch, seed_all, trainer_state
from .subnet_step import clip_grad_norm, step_tensors, subnet_step

__all__ = ["Trainer", "TrainResult"]

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
        seed_all(config.seed)
        base = config.model_config(10, None)  # sizes only; classes come from the data
        self.data: DataBundle = build_data(config.data, base.img_size, base.mean, base.std, self.recipe)
        #: image files left out by --skip-bad-images, with why Pillow cannot read them
        self.bad_images: list[tuple[str, str]] = []
        if self.data.kind == "folder":  # every image opened and decoded before anything else happens
            self.bad_images = check_images(Path(self.data.source), {"train": self.data.train, "val": self.data.val},
                                           skip=config.skip_bad_images, progress=config.progress,
                                           console=self.console, info=self.info)
        # the model records the evaluation transform its validation images went through
        self.model_config = config.model_config(self.data.num_classes, self.data.labels).replace(
            **self.data.eval_transform)
        self.model = HydraViT(self.model_config)
        if config.init and not resuming:
            init_weights(self.model, Path(config.init), announce=self._say)
        self.model.to(self.device)
        self.ema = None
        if config.ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=config.ema_decay)
        seed_all(config.seed + 1000 * self.info.rank + 1)

        self.train_loader, self.val_loader = self._loaders()
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"--data {config.data}: {len(self.data.train)} training images are fewer than one batch of "
                f"{config.batch_size} x {self.info.world_size} process(es); lower --batch-size"
            )
        self.optimizer = build_optimizer(self.model, self.recipe.opt, config.lr, config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config, self.recipe, self.steps_per_epoch)
        self.mixup = build_mixup(config, self.recipe, self.data.num_classes)
        self.criterion: nn.Module = build_criterion(config, self.mixup)
        self.sampler = HeadSampler(config.heads, config.weights, seed=config.seed)
        self.epoch = 0  # epochs finished
        self.best_score = -math.inf
        self.last_val: dict[str, Any] = {}
        self.ddp_model: nn.Module = self.model
        self.leaves: Optional[SliceLeaves] = None  # --update subnet: the last forward's weight views
        self.amp = self.device.type == "cuda"
        self._estimated = False  # the time estimate is said once, in the first epoch this process trains

    # ------------------------------------------------------------------ construction
    def _say(self, message: str) -> None:
        if self.info.is_main:
            self.console.print(message)

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

    # ------------------------------------------------------------------ state (:mod:`.state`)
    def state_dict(self, rng_states: list[dict]) -> dict[str, Any]:
        return trainer_state(self, rng_states)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_trainer_state(self, state)

    def checkpoint(self, val_now: bool) -> bool:
        """Save state, ``last`` and (when it improved) ``best``; returns whether ``best`` was written."""
        return save_epoch(self, val_now)

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
    def _time_estimate(self) -> Optional[TimeEstimate]:
        if self._estimated or not self.info.is_main:
            return None
        self._estimated = True
        return TimeEstimate(self.steps_per_epoch, self.cfg.epochs - self.epoch)

    def _say_estimate(self, estimate: TimeEstimate, message: str) -> None:
        if estimate.run_seconds > 3600 and self.cfg.model == "base" and self.device.type == "cpu":
            message += f"\n{SMALL_DATA_HINT}"
        self.console.print(message, markup=False, highlight=False)

    def train_epoch(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        self.ddp_model.train()
        self.train_loader.sampler.set_epoch(self.epoch)
        counts: Counter[int] = Counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        n_steps = 0
        seen = 0
        estimate = self._time_estimate()
        t0 = time.perf_counter()
        refresh = 1 if self.device.type == "cpu" else 10  # .item() syncs a GPU: only now and then
        with epoch_progress(self.console, cfg.progress and info.is_main) as bar:
            task = bar.add_task(f"epoch {self.epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch,
                                loss="-", k="-", ips="-")
            for x, y in self.train_loader:
                k, loss = self.train_step(x, y)
                counts[k] += 1
                n_steps += 1
                seen += x.shape[0] * info.world_size
                loss_sum += loss
                if estimate is not None and estimate.seconds_per_step is None:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    message = estimate.step()
                    if message:
                        self._say_estimate(estimate, message)
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
                                    "weights": name, "mean_top1": mean_top1(r),
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
