"""Run directories: what a training run leaves on disk, and how to find it again.

::

    runs/NAME/
      config.json        resolved TrainConfig ("train") + HydraConfig ("model"), written at start
      metrics.jsonl      one JSON object per line: {"event": "epoch", ...} / {"event": "val", ...}
      last.safetensors   weights (+ EMA under ema.*) after the latest finished epoch
      best.safetensors   the validated weights with the best mean top-1 over the trained k
      state.pt           everything --resume needs: model, EMA, optimizer, scheduler,
                         head sampler, RNG states of every rank, epoch, step, best score

Every file is written to a temporary file in the same directory and renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from hydravit_edge.checkpoints import atomic_write
from hydravit_edge.errors import UsageError

__all__ = ["RunDir", "latest_run", "latest_checkpoint", "CONFIG", "METRICS", "LAST", "BEST", "STATE"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
STATE = "state.pt"


class RunDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # paths
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def name(self) -> str:
        return self.path.name

    def has_run(self) -> bool:
        """A run that finished at least one epoch (one killed earlier has nothing to lose)."""
        return self.state.exists()

    # config
    def write_config(self, train_cfg: dict, model_cfg: dict) -> None:
        text = json.dumps({"train": train_cfg, "model": model_cfg}, indent=2, sort_keys=True) + "\n"
        atomic_write(self.config, lambda tmp: tmp.write_text(text))

    def read_config(self) -> dict:
        if not self.path.is_dir():
            raise UsageError(f"--resume {self.path}: no such run directory")
        if not self.config.exists():
            raise UsageError(f"--resume {self.path}: no {CONFIG} here; not a training run directory")
        try:
            return json.loads(self.config.read_text())
        except ValueError as exc:
            raise UsageError(f"--resume {self.path}: {CONFIG} is not valid JSON ({exc})") from None

    # metrics
    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut short by a kill: drop it
                    continue
        return out

    def append_metrics(self, records: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        old = self.metrics.read_text() if self.metrics.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write(self.metrics, lambda tmp: tmp.write_text(old + text))

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop records of epochs after ``epochs_done`` (written before a kill, then redone)."""
        keep = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= epochs_done]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep)
        atomic_write(self.metrics, lambda tmp: tmp.write_text(text))

    # resumable state
    def save_state(self, state: dict) -> None:
        atomic_write(self.state, lambda tmp: torch.save(state, tmp))

    def load_state(self) -> dict:
        if not self.state.exists():
            raise UsageError(f"--resume {self.path}: no {STATE} yet (the run stopped before finishing its "
                             "first epoch); start it again")
        try:
            return torch.load(self.state, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is one user-facing error
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"--resume {self.path}: {STATE} is unreadable ({first})") from None


def _runs(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if p.is_dir() and ((p / BEST).exists() or (p / LAST).exists())]


def latest_run(base: str | os.PathLike = "runs") -> Optional[Path]:
    """The run directory under ``base`` whose checkpoint was written last (None if none)."""
    runs = _runs(Path(base))
    if not runs:
        return None

    def stamp(p: Path) -> float:
        return max((p / f).stat().st_mtime for f in (BEST, LAST) if (p / f).exists())

    return max(runs, key=stamp)


def latest_checkpoint(base: str | os.PathLike = "runs", which: str = "best") -> Path:
    """``runs/<newest>/best.safetensors`` (falls back to ``last``); UsageError when there is none."""
    run = latest_run(base)
    if run is None:
        raise UsageError(f"no trained run under {base}/; train one with `hydravit-edge train --data digits`")
    first, second = (BEST, LAST) if which == "best" else (LAST, BEST)
    for name in (first, second):
        if (run / name).exists():
            return run / name
    raise UsageError(f"{run}: holds no checkpoint")  # pragma: no cover - _runs guarantees one


def jsonable(obj: Any) -> Any:
    """Turn tuples/ints-as-keys into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 6)
    return obj
