"""Progress reporting of export and validation: the callback targets call, and the rich bars
``hydravit-edge export`` / ``validate`` show."""

from __future__ import annotations

from typing import Callable

__all__ = ["ProgressFn", "ProgressBars"]

#: ``progress(description)``: called once per finished unit of work (a k exported or validated).
ProgressFn = Callable[[str], None]


class ProgressBars:
    """Rich progress bars when shown; a no-op otherwise."""

    def __init__(self, show: bool) -> None:
        self.bar = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from hydravit_edge.console import err_console

            self.bar = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err_console, transient=False)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int) -> ProgressFn:
        if not self.bar:
            return lambda _msg="": None
        tid = self.bar.add_task(description, total=total)

        def step(msg: str = "") -> None:
            self.bar.update(tid, advance=1, description=f"{description} {msg}".strip()[:60])
        return step
