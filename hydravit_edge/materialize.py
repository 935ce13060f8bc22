"""Which subnetworks are materialised: a least-recently-used cache of sessions within a memory budget.

A *unit* is one file the runtime can open as a :class:`~hydravit_edge.engines.Session`: the graph
of one k cut from the single ONNX artifact's shared weights (lazy mode), a per-k file, or the
whole single artifact (eager mode: every k in one session).  :class:`SessionCache` opens units
on request, in the calling thread (:meth:`SessionCache.build`) or in one background thread
(:meth:`SessionCache.build_async`), and closes the least recently used ones so that the
resident memory it attributes to its units never exceeds ``budget_bytes``.

What a unit costs is measured when it is built: the growth of the process's anonymous resident
memory (``RssAnon``: the folded and prepacked weights; memory-mapped weights are file-backed
clean pages the OS may drop, and are not counted).  Before the first build of a unit its cost
is the caller's estimate.

Standard library (and psutil for the default budget); the sessions come from the caller's ``open_unit``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from .errors import UsageError
from .memory import release_freed_memory, resident_bytes

__all__ = ["SessionCache", "Built", "MemoryBudgetError", "default_budget_bytes"]


class MemoryBudgetError(UsageError):
    """A unit that does not fit the memory budget on its own."""


def default_budget_bytes() -> int:
    """A quarter of the machine's memory (psutil), when neither the caller nor the LUT names a budget."""
    import psutil

    return int(psutil.virtual_memory().total // 4)


@dataclass
class Built:
    """A materialised unit."""

    unit: str
    session: Any
    #: resident bytes attributed to it (measured RssAnon growth while it was built, else the estimate)
    bytes: int
    build_ms: float
    measured: bool


class SessionCache:
    """Sessions of units, least recently used first, within ``budget_bytes`` (and ``keep`` units).

    ``open_unit(unit) -> session``; ``estimate(unit) -> bytes`` before a unit was first built.
    Thread-safe: builds run in the caller's thread or in one background thread; the cache is
    changed only under its lock.  A unit being used (``pin``) is never closed.
    """

    def __init__(self, open_unit: Callable[[str], Any], estimate: Callable[[str], int], *,
                 budget_bytes: Optional[int] = None, keep: Optional[int] = None, measure: bool = True) -> None:
        if keep is not None and keep < 1:
            raise UsageError(f"keep must be >= 1, got {keep}")
        if budget_bytes is not None and budget_bytes <= 0:
            raise UsageError(f"the memory budget must be > 0, got {budget_bytes / 2**20:.0f} MB")
        self._open = open_unit
        self._estimate = estimate
        self.budget_bytes = budget_bytes
        self.keep = keep
        #: attribute to a unit the RssAnon growth while it was built (False: always the estimate)
        self.measure = measure
        self._entries: "OrderedDict[str, Built]" = OrderedDict()
        self._cost: dict[str, int] = {}  # measured cost of units built before
        self._lock = threading.RLock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: dict[str, Future] = {}
        self.pinned: set[str] = set()
        #: units opened so far (a unit reopened after eviction counts again)
        self.builds = 0
        #: (unit, build_ms) of every build, in order
        self.history: list[tuple[str, float]] = []

    # ---- state --------------------------------------------------------------------------
    def __contains__(self, unit: str) -> bool:
        with self._lock:
            return unit in self._entries

    @property
    def units(self) -> list[str]:
        """Materialised units, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(b.bytes for b in self._entries.values())

    def cost(self, unit: str) -> int:
        """Bytes ``unit`` takes when materialised (measured once it has been built, else estimated)."""
        return self._cost.get(unit) or int(self._estimate(unit))

    def pending(self) -> list[str]:
        with self._lock:
            return [u for u, f in self._pending.items() if not f.done()]

    def get(self, unit: str) -> Optional[Any]:
        """The session of ``unit`` when materialised (marked most recently used), else None."""
        with self._lock:
            built = self._entries.get(unit)
            if built is None:
                return None
            self._entries.move_to_end(unit)
            return built.session

    def entry(self, unit: str) -> Optional[Built]:
        with self._lock:
            return self._entries.get(unit)

    # ---- fitting ------------------------------------------------------------------------
    def fits(self, unit: str, keep: Iterable[str] = ()) -> bool:
        """Whether ``unit`` fits the budget next to the units ``keep`` (others may be closed for it)."""
        if unit in self:
            return True
        keep = set(keep) | self.pinned
        with self._lock:
            kept = [u for u in self._entries if u in keep]
            if self.keep is not None and len(kept) + 1 > self.keep:
                return False
            if self.budget_bytes is None:
                return True
            return sum(self._entries[u].bytes for u in kept) + self.cost(unit) <= self.budget_bytes

    def _make_room(self, unit: str, keep: set[str]) -> None:
        need = self.cost(unit)
        if self.budget_bytes is not None and need > self.budget_bytes:
            raise MemoryBudgetError(
                f"{unit} needs about {need / 2**20:.0f} MB, more than the memory budget of "
                f"{self.budget_bytes / 2**20:.0f} MB on its own; raise memory_budget_mb")
        with self._lock:
            for victim in list(self._entries):
                over_count = self.keep is not None and len(self._entries) + 1 > self.keep
                over_bytes = self.budget_bytes is not None and self.used_bytes + need > self.budget_bytes
                if not (over_count or over_bytes):
                    break
                if victim in keep or victim in self.pinned:
                    continue
                self._entries.pop(victim).session.close()
                release_freed_memory()

    # ---- building -----------------------------------------------------------------------
    def build(self, unit: str, keep: Iterable[str] = ()) -> Built:
        """Materialise ``unit`` now (closing least recently used units, except ``keep``, to make room)."""
        with self._lock:
            if unit in self._entries:
                self._entries.move_to_end(unit)
                return self._entries[unit]
            pending = self._pending.get(unit)
        if pending is not None:
            return pending.result()
        return self._build(unit, set(keep))

    def _build(self, unit: str, keep: set[str]) -> Built:
        self._make_room(unit, keep)
        before = resident_bytes()["RssAnon"]
        t0 = time.perf_counter()
        session = self._open(unit)
        release_freed_memory()
        ms = (time.perf_counter() - t0) * 1e3
        grown = resident_bytes()["RssAnon"] - before
        measured = self.measure and grown > 0
        cost = grown if measured else self.cost(unit)
        built = Built(unit, session, cost, ms, measured)
        with self._lock:
            if measured:
                self._cost[unit] = cost
            self._entries[unit] = built
            self._entries.move_to_end(unit)
            self.builds += 1
            self.history.append((unit, ms))
            self._pending.pop(unit, None)
        return built

    def build_async(self, unit: str, keep: Iterable[str] = ()) -> Future:
        """Materialise ``unit`` in the background thread; returns its future (the same one while it runs)."""
        with self._lock:
            if unit in self._entries:
                f: Future = Future()
                f.set_result(self._entries[unit])
                return f
            if unit in self._pending:
                return self._pending[unit]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydravit-materialize")
            future = self._pool.submit(self._build, unit, set(keep))
            self._pending[unit] = future
            return future

    def ready(self, unit: str) -> bool:
        """Whether ``unit`` is materialised (a background build of it that failed raises here)."""
        with self._lock:
            if unit in self._entries:
                return True
            future = self._pending.get(unit)
        if future is not None and future.done():
            with self._lock:
                self._pending.pop(unit, None)
            future.result()  # re-raises the build's error
        return False

    def wait(self) -> None:
        """Wait for every background build."""
        for future in list(self._pending.values()):
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            while self._entries:
                self._entries.popitem()[1].session.close()
            self._pending.clear()
