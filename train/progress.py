"""What a run tells its user while it trains: the epoch progress bar and the time estimate.

:class:`TimeEstimate` times the first steps a process runs (after one warm-up step, which
pays for allocation and starting the data loader workers) and says what an epoch and the
whole run will take, so that a run that would take days says so in its first minute.
"""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console

__all__ = ["epoch_progress", "TimeEstimate", "format_duration", "SMALL_DATA_HINT"]

#: said with a long estimate of the full-size model on a CPU
SMALL_DATA_HINT = ("for small images on a CPU, `--model tiny --img-size 28 --recipe quick` trains in minutes; "
                   "the defaults (base model, 224 px, deit recipe) are for ImageNet-scale data on GPUs")


def epoch_progress(console: Console, enabled: bool):
    """The per-epoch bar: steps, loss, the k of the step, images per second, elapsed and remaining time."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("k {task.fields[k]:>2}"),
        TextColumn("{task.fields[ips]} img/s"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False, disable=not enabled,
    )


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 20 min``, ``4 d 6 h``."""
    s = max(float(seconds), 0.0)
    if s < 90:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    m = s / 60
    if m < 90:
        return f"{m:.0f} min"
    h, m = divmod(round(m), 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


class TimeEstimate:
    """Times steps 2 .. ``1 + steps`` of the first epoch this process runs; then says the estimate once.

    ``step()`` after every optimisation step returns the message when it is due (None before
    and after).  An epoch shorter than that gives its estimate at its last step.
    """

    def __init__(self, steps_per_epoch: int, epochs_left: int, steps: int = 5) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.epochs_left = epochs_left
        self.due = min(1 + steps, steps_per_epoch)
        self.n = 0
        self.t_start = time.perf_counter()
        self.t_first: Optional[float] = None
        self.seconds_per_step: Optional[float] = None

    def step(self) -> Optional[str]:
        if self.seconds_per_step is not None:
            return None
        self.n += 1
        now = time.perf_counter()
        if self.n == 1:
            self.t_first = now
        if self.n < self.due:
            return None
        timed = self.n - 1
        self.seconds_per_step = (now - self.t_first) / timed if timed else now - self.t_start
        return self.message()

    @property
    def epoch_seconds(self) -> float:
        return (self.seconds_per_step or 0.0) * self.steps_per_epoch

    @property
    def run_seconds(self) -> float:
        return self.epoch_seconds * self.epochs_left

    def message(self) -> str:
        per_step = self.seconds_per_step or 0.0
        text = (f"estimated {format_duration(self.epoch_seconds)} per epoch "
                f"({per_step * 1000:.0f} ms/step x {self.steps_per_epoch} steps)")
        if self.epochs_left > 1:
            text += f", {format_duration(self.run_seconds)} for the {self.epochs_left} epochs left"
        return text + ", plus validation"
