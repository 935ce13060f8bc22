"""The training entry points: :func:`train` starts a run, :func:`resume` continues one.

A run directory is created only once everything a run needs has been checked (the data, its
images, ``--init``, the batch size): a run that cannot start leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from rich.console import Console

from hydravit_edge.errors import UsageError

from . import distributed as D
from .config import TrainConfig, default_run_dir
from .runs import RunDir
from .trainer import Trainer, TrainResult

__all__ = ["train", "resume"]


def _run_path(cfg: TrainConfig, info: D.DistInfo) -> Path:
    """The run directory ``cfg`` names (checked, not created: see :func:`train`)."""
    path = Path(cfg.out).expanduser() if cfg.out else default_run_dir()
    path = Path(D.broadcast_object(str(path), info))
    if info.is_main:
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {path}: is a file")
        if RunDir(path).has_run():
            raise UsageError(f"--out {path}: already holds a training run; continue it with "
                             f"`hydravit-edge train --resume {path}` or choose another --out")
    return path


def train(config: TrainConfig, *, on_step: Optional[Callable[[int, int, int, float], None]] = None,
          log: Optional[Console] = None) -> TrainResult:
    """Train universal HydraViT weights; returns a :class:`~.trainer.TrainResult`.

    Run under ``torchrun`` for several processes (DDP; gloo on CPU, NCCL on GPUs).
    ``on_step(epoch, step, k, loss)`` is called after every optimisation step; messages,
    progress bars and tables go to ``log`` (default: the stdout console).
    """
    info = D.setup(config.device)
    threads = torch.get_num_threads()
    try:
        cfg = config.resolve(info.world_size)
        path = _run_path(cfg, info)
        cfg.out = str(path)
        trainer = Trainer(cfg, info=info, run_dir=path, on_step=on_step, log=log)  # checks data and --init
        if info.is_main:
            path.mkdir(parents=True, exist_ok=True)
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
