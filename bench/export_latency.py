"""Latency of one exported artifact in its own runtime, in a process of its own (``export-bench``).

The worker side: ``python -m hydravit_edge.bench.export_latency JOB`` opens the artifact with its
engine (:mod:`hydravit_edge.engines`), so no PyTorch is imported for onnxruntime (ExecuTorch's
runtime imports torch itself but runs nothing in it)::

    JOB = {"target": "onnx"|"executorch", "path": ..., "records": [{"k": 3, "entry": null|"forward_k3", ...}],
           "runs": 10, "warmup": 2, "threads": 0, "img": [1, 3, 224, 224]}

``records`` are the manifest's artifact records of that file (``k`` and ``entry`` are enough; an
ONNX graph's ``heads`` input is fed whenever the graph has one).  Prints one JSON line: load
seconds (the runtime's import included), resident memory after loading (MB), per record the
median and all run times (ms), and the peak resident memory.

With ``"serve": true`` the process loads the artifact and its entries, warms them up, prints a
JSON "ready" line, then answers each stdin line ``run <k>`` with the milliseconds of one run.

The caller's side: :func:`measure` runs one job; :class:`Server` holds a serving worker and
:func:`alternate` alternates single runs between two of them (say the single artifact and a
per-k file), so that the load of a shared machine hits both sides alike; :func:`summary` turns
the pairs into medians and ratios.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hydravit_edge.memory import peak_rss_mb, rss_mb

__all__ = ["LATENCY_WORKER", "measure", "Server", "alternate", "median_of", "median_ratio", "summary", "main"]

#: one artifact's latency in a process of its own: python -m hydravit_edge.bench.export_latency JOB
LATENCY_WORKER = [sys.executable, "-m", "hydravit_edge.bench.export_latency"]


# =========================================================================== the caller's side

def measure(target: str, path: Path, records: list[dict], runs: int, threads: int, img: list[int],
            timeout: float = 1800) -> dict:
    """Load and time every record of one artifact in a fresh worker process; its JSON result."""
    job = {"target": target, "path": str(path), "records": records, "runs": runs, "warmup": 2, "threads": threads,
           "img": img}
    proc = subprocess.run(LATENCY_WORKER + [json.dumps(job)], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
        raise RuntimeError(f"latency worker failed on {path} ({proc.returncode}): {tail}")
    return json.loads(lines[-1])


class Server:
    """A latency worker in serve mode: one loaded artifact answering ``run <k>``."""

    def __init__(self, target: str, path: Path, records: list[dict], threads: int, img: list[int]) -> None:
        job = {"target": target, "path": str(path), "records": records, "warmup": 2, "threads": threads, "img": img,
               "serve": True, "runs": 0}
        self.proc = subprocess.Popen(LATENCY_WORKER + [json.dumps(job)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = " | ".join(self.proc.stderr.read().strip().splitlines()[-3:])
                raise RuntimeError(f"latency worker for {path} exited: {err}")
            if line.startswith("{"):
                self.info = json.loads(line)
                break

    def run(self, k: int) -> float:
        self.proc.stdin.write(f"run {k}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def alternate(a: Server, b: Server, k: int, runs: int) -> list[tuple[float, float]]:
    """``runs`` adjacent pairs of single runs, order alternating A B, B A, ..."""
    out = []
    for i in range(runs):
        if i % 2:
            y = b.run(k)
            x = a.run(k)
        else:
            x = a.run(k)
            y = b.run(k)
        out.append((x, y))
    return out


def median_of(pairs, i: int) -> float:
    return statistics.median(p[i] for p in pairs)


def median_ratio(pairs) -> float:
    return statistics.median(p[0] / p[1] for p in pairs)


def summary(pairs, names: tuple[str, str]) -> dict[str, float]:
    """Medians of both sides, the median of the per-pair ratios (the headline figure) and the
    ratio of the minima (the least disturbed runs)."""
    a, b = names
    return {f"{a}_ms": median_of(pairs, 0), f"{b}_ms": median_of(pairs, 1), "ratio": median_ratio(pairs),
            f"{a}_min_ms": min(p[0] for p in pairs), f"{b}_min_ms": min(p[1] for p in pairs),
            "ratio_min": min(p[0] for p in pairs) / min(p[1] for p in pairs), "pairs": len(pairs)}


# =========================================================================== the worker

def main(argv: list[str]) -> int:
    import numpy as np

    from hydravit_edge.engines import engine_for_target

    job = json.loads(argv[0])
    x = np.random.default_rng(0).standard_normal(job["img"]).astype(np.float32)
    threads = int(job.get("threads") or 0)
    warmup = int(job.get("warmup", 2))
    engine = engine_for_target(job["target"])
    if engine is None:
        raise SystemExit(f"no engine runs {job['target']} artifacts")
    out: dict = {"rss_start_mb": rss_mb(), "threads": threads or "default"}
    t0 = time.perf_counter()
    session = engine.open(job["path"], job["records"], threads=threads or None)
    out["load_s"] = time.perf_counter() - t0
    out["rss_loaded_mb"] = rss_mb()
    feeds = {}

    def ready(k: int) -> None:  # k's entry prepared, its input converted, warmed up
        session.prepare(k)
        feeds[k] = session.feed(k, x)
        session.timed(k, feeds[k], warmup)

    if job.get("serve"):
        for k in session.heads:
            ready(k)
        out["rss_ready_mb"] = rss_mb()
        print(json.dumps(dict(out, ready=True)), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] != "run":
                break
            k = int(cmd[1])
            print(f"{session.timed(k, feeds[k], 1)[0]:.4f}", flush=True)
        return 0
    results = []
    for k in session.heads:
        t1 = time.perf_counter()
        ready(k)
        first_s = time.perf_counter() - t1
        times = session.timed(k, feeds[k], int(job["runs"]))
        results.append({"k": k, "median_ms": float(np.median(times)), "min_ms": float(np.min(times)),
                        "times_ms": times, "first_s": first_s})
    out["results"] = results
    out["rss_end_mb"] = rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
