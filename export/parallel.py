"""Per-k export work spread over worker processes (``hydravit-edge export --jobs N``).

Exporting a ViT is mostly single-threaded Python graph work: ``torch.export``, ExecuTorch's
FX passes and XNNPACK preprocessing, the ONNX translator and optimiser.  On the 12-head base
model one k costs about a minute of one core whatever the runtime threads do, so ten k take
ten minutes in one process.  The k are independent, so an :class:`ExportPool` runs them in
``jobs`` worker processes, each holding the model (loaded once, memory-mapped from a temporary
file), and targets ask it for per-k results::

    records = pool.map(functools.partial(per_k_task, target="onnx", out_dir=str(out_dir)), heads, progress)

``fn(model, k)`` must be a module-level function (or a ``functools.partial`` of one) so it can
be pickled, and its result must pickle (bytes, records, protobufs).  With ``jobs == 1`` the
same calls run in this process on the caller's model, so the serial path is the parallel
path minus the processes.  Errors raised in a worker (an :class:`~.errors.ExportError` with its
message) are re-raised here and the other workers are stopped.

The scheduling (one task per idle worker, results in completion order, the rest cancelled on
the first error) is a :class:`concurrent.futures.ThreadPoolExecutor` with one thread per worker
process.  The processes are not a ``ProcessPoolExecutor``'s: its workers are started by
multiprocessing, whose ``spawn`` and ``forkserver`` re-run the caller's ``__main__`` in every
worker, so a script without an ``if __name__ == "__main__":`` guard breaks.  Measured with the
script of ``test_a_script_without_a_main_guard_can_use_workers`` on a ProcessPoolExecutor (spawn
context, an initializer loading the model): each worker failed with "An attempt has been made to
start a new process before the current process has finished its bootstrapping phase" and the map
ended in ``BrokenProcessPool``.  (``fork`` would copy a process running torch's threads, and
stopping running workers on an error needs the executor's private ``_processes`` before Python
3.14.)  Start-up costs the same either way (2 workers, tiny model: 5.6-5.7 s as a
ProcessPoolExecutor with a guard, 6.8-7.3 s as these).  So a worker is a plain ``python -c``
subprocess fed pickled tasks over a pipe, and never imports the caller's ``__main__``.
"""

from __future__ import annotations

import os
import pickle
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

from hydravit_edge.memory import available_bytes as _available_bytes
from hydravit_edge.memory import cpu_count

from .errors import ExportError
from .progress import ProgressFn
from .registry import get_exporter

__all__ = ["ExportPool", "ProgressFn", "auto_jobs", "cpu_count", "per_k_task"]

R = TypeVar("R")

#: Models with fewer parameters export serially by default: a worker's start-up (importing
#: torch and the exporter's toolkit, 5-15 s) costs more than it saves on a small graph.
PARALLEL_MIN_PARAMS = 20_000_000
#: Peak resident memory of one export worker, as a multiple of the model's fp32 bytes, plus a
#: fixed 1.5 GB (torch, executorch, the traced graphs).  Measured on the 12-head base model
#: (344 MB of weights, ``--jobs 2``): workers peaked at 2.7 GB (ONNX) and 4.1 GB (ExecuTorch
#: per-k); this budgets 4.25 GB.
WORKER_MEMORY_FACTOR = 8.0
WORKER_MEMORY_BASE = 1.5e9


def auto_jobs(model, tasks: int, min_params: int = PARALLEL_MIN_PARAMS) -> int:
    """Worker processes for ``tasks`` independent per-k exports of ``model``.

    One per CPU core, at most one per task, as many as the available memory holds (see
    :data:`WORKER_MEMORY_FACTOR`), and 1 for models under ``min_params`` (a target's
    :attr:`~.base.Exporter.parallel_min_params`).
    """
    params = sum(p.numel() for p in model.parameters())
    if tasks < 2 or params < min_params:
        return 1
    jobs = min(cpu_count(), tasks)
    avail = _available_bytes()
    if avail is not None:
        per_worker = WORKER_MEMORY_FACTOR * 4 * params + WORKER_MEMORY_BASE
        jobs = min(jobs, int(avail // per_worker))
    return max(1, jobs)


def per_k_task(model, k: int, target: str, out_dir: str, quant=None):
    """One per-k file of ``target`` (:meth:`Exporter.export_k`) at ``quant``'s precision, as a picklable pool task."""
    ex = get_exporter(target)
    return ex.export_k(model, k, Path(out_dir)) if quant is None else ex.export_k(model, k, Path(out_dir), quant)


# ---- wire protocol between the pool and its workers: length-prefixed pickles -------------
def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def _recv(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def _worker_main() -> int:
    """A worker process: load the model, then run ``fn(model, k)`` for every task it is sent.

    File descriptor 1 carries the protocol; anything libraries print goes to the worker's log.
    """
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    import torch

    from hydravit_edge.config import HydraConfig
    from hydravit_edge.model import HydraViT

    model_file, threads = _recv(inp)
    torch.set_num_threads(threads)
    blob = torch.load(model_file, map_location="cpu", mmap=True, weights_only=True)
    model = HydraViT(HydraConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"], strict=True)
    model.eval()
    while True:
        try:
            fn, k = _recv(inp)
        except EOFError:
            return 0
        try:
            reply = (True, fn(model, k))
            _send(out, reply)
        except BaseException as exc:  # report it; the parent decides
            try:
                _send(out, (False, exc))
            except Exception:
                _send(out, (False, ExportError(f"{type(exc).__name__}: {exc}")))


class _Worker:
    def __init__(self, index: int, tmp: Path, model_file: Path, threads: int) -> None:
        self.log = tmp / f"worker{index}.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from hydravit_edge.export.parallel import _worker_main; "
                                       "sys.exit(_worker_main())"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        _send(self.proc.stdin, (str(model_file), threads))

    def call(self, fn, k):
        """``(ok, fn(model, k) or the exception it raised)``; EOFError/OSError when the process died."""
        _send(self.proc.stdin, (fn, k))
        return _recv(self.proc.stdout)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            try:
                if kill:
                    raise OSError
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


class ExportPool:
    """Runs ``fn(model, k)`` for many k, in ``jobs`` processes (or in this one when ``jobs == 1``)."""

    def __init__(self, model, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError("jobs must be >= 1")
        self.model = model
        self.jobs = jobs
        self._workers: list[_Worker] = []
        self._tmp: Optional[Path] = None

    def __enter__(self) -> "ExportPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, kill: bool = False) -> None:
        """Stop the workers (``kill``: without waiting for their current task) and remove the model file."""
        for w in self._workers:
            w.stop(kill)
        self._workers = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _start(self, n: int) -> list[_Worker]:
        if self._tmp is None:
            import torch

            self._tmp = Path(tempfile.mkdtemp(prefix="hydravit-export-"))
            torch.save({"config": self.model.config.to_dict(), "state_dict": self.model.state_dict()},
                       self._tmp / "model.pt")
        threads = max(1, cpu_count() // self.jobs)
        while len(self._workers) < n:
            self._workers.append(_Worker(len(self._workers), self._tmp, self._tmp / "model.pt", threads))
        return self._workers[:n]

    def _died(self, w: _Worker, k: int) -> ExportError:
        code = w.proc.wait()
        tail = w.log_tail()
        return ExportError(
            f"an export worker process died while exporting k={k} (exit code {code}; out of memory?); "
            f"run again with fewer --jobs (this run used {self.jobs})" + (f". Its last output:\n{tail}" if tail else ""))

    def map(self, fn: Callable[[Any, int], R], ks: Iterable[int], progress: Optional[ProgressFn] = None,
            label: str = "k={k}") -> dict[int, R]:
        """``{k: fn(model, k)}``; ``progress(label)`` after each k (in completion order)."""
        ks = list(ks)
        if self.jobs == 1 or len(ks) < 2:
            out = {}
            for k in ks:
                out[k] = fn(self.model, k)
                if progress:
                    progress(label.format(k=k))
            return out
        workers = self._start(min(self.jobs, len(ks)))
        idle: queue.SimpleQueue = queue.SimpleQueue()
        for w in workers:
            idle.put(w)

        def run(k: int) -> R:  # in one of the threads: k on an idle worker
            w = idle.get()
            try:
                try:
                    ok, value = w.call(fn, k)
                except (EOFError, OSError, pickle.UnpicklingError):
                    raise self._died(w, k) from None
            finally:
                idle.put(w)
            if not ok:
                raise value
            return value

        out: dict[int, Any] = {}
        with ThreadPoolExecutor(len(workers), thread_name_prefix="hydravit-export") as threads:
            futures = {threads.submit(run, k): k for k in ks}
            try:
                for done in as_completed(futures):
                    k = futures[done]
                    out[k] = done.result()
                    if progress:
                        progress(label.format(k=k))
            except BaseException:
                for f in futures:
                    f.cancel()
                self.close(kill=True)  # the tasks still running end with their worker
                raise
        return {k: out[k] for k in ks}
