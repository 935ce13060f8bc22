"""One benchmark measurement in a process of its own: one backend, one artifact, one k.

``python -m hydravit_edge.bench.worker JOB.json RESULT.json`` is started by
:func:`hydravit_edge.bench.harness.run_job`.  Thread pools, allocator caches and the peak
resident memory therefore belong to this measurement alone, and no other runtime (or eager
PyTorch) shares the process.  The job names the backend, the artifact and its manifest
records, the k to measure and the protocol (threads, warm-up, timed runs, throughput batch).
The artifact is opened and run by its engine (:mod:`hydravit_edge.engines`), as the Python
runtime and export validation run it.

What it measures, in this order:

1. load: the runtime's modules are imported first (not counted), then opening the artifact
   and preparing k's entry (``load_ms``; ``prepare_ms`` is the entry part).
2. latency: ``warmup`` untimed then ``runs`` timed batch-1 calls -> samples (ms).
3. throughput at ``batch``: one call on the whole batch when the artifact takes it, else
   ``batch`` consecutive batch-1 calls (artifacts with a static batch of 1), images/s.
4. peak resident memory (VmHWM; ``ru_maxrss`` off Linux) at this point: the artifact, k's entry, its runs.
   Then the steady resident memory with this k active, after freed heap memory went back to the
   OS (``malloc_trim``): anonymous pages (``RssAnon``: copies, folded and packed weights) and
   file-backed pages (``RssFile``: memory-mapped weights, clean pages the OS may drop).
5. k-switch cost (single artifacts): alternately run another k of the same session and k;
   the first k call after each switch, minus the steady-state median, is the (warm) switch
   cost.  A lazily materialised k (``job["lazy_other"]``: the graph of another k over the same
   shared weights) is a session of its own: the cold switch is building that session while
   k's stays open (``cold_switch_ms``, and the peak memory while it happens), the warm switch
   alternates the two open sessions.
6. accuracy, when the job names an evaluation set.

The result is written as JSON to RESULT.json (``{"error": ...}`` when it failed).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from hydravit_edge.memory import peak_rss_mb, release_freed_memory, resident_bytes, rss_mb


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def _warm_switch(other_session, other: int, session, k: int, x1, feed1, samples: list[float], n: int,
                 other_prepare_ms: float) -> dict[str, Any]:
    """Alternate a run of ``other`` (on ``other_session``) and one of k ``n`` times: the first k run
    after each switch, minus k's steady median, is the warm switch cost."""
    feed_o = other_session.feed(other, x1)
    other_session.timed(other, feed_o, 2)
    after = []
    for _ in range(n):
        other_session.timed(other, feed_o, 1)
        after.append(session.timed(k, feed1, 1)[0])
    steady = session.timed(k, feed1, n)
    raw = _median(after) - _median(steady + samples)
    return {"from_k": other, "runs": n, "first_after_switch_median_ms": round(_median(after), 5),
            "steady_median_ms": round(_median(steady + samples), 5), "raw_ms": round(raw, 5),
            "ms": round(max(0.0, raw), 5), "other_prepare_ms": other_prepare_ms}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    from hydravit_edge.engines import get_engine

    backend = get_engine(job["backend"])
    backend.preload()  # import the runtime before timing the load
    k = int(job["k"])
    threads = job.get("threads")
    device = job.get("device", "cpu")
    runs, warmup, batch = int(job["runs"]), int(job["warmup"]), int(job["batch"])
    shape = [int(s) for s in job["input_shape"]]  # [C, H, W]
    rng = np.random.default_rng(int(job.get("seed", 0)))
    x1 = rng.standard_normal((1, *shape)).astype(np.float32)
    result: dict[str, Any] = {"k": k, "pid": os.getpid(), "rss_before_load_mb": round(rss_mb(), 2)}
    # 1. load
    t0 = time.perf_counter()
    session = backend.open(Path(job["path"]) if job.get("path") else None, job["records"], threads=threads,
                           device=device, details=job.get("details") or {})
    t1 = time.perf_counter()
    session.prepare(k)
    t2 = time.perf_counter()
    result["load_ms"] = round((t2 - t0) * 1e3, 4)
    result["prepare_ms"] = round((t2 - t1) * 1e3, 4)
    result["rss_after_load_mb"] = round(rss_mb(), 2)

    # 2. latency at batch 1
    feed1 = session.feed(k, x1)
    first = session.timed(k, feed1, 1)[0]
    result["first_run_ms"] = round(first, 4)
    if warmup > 1:
        session.timed(k, feed1, warmup - 1)
    samples = session.timed(k, feed1, runs)
    result["latency_samples_ms"] = [round(s, 5) for s in samples]
    median1 = _median(samples)

    # 3. throughput at the batch size
    limit = session.max_batch(k)
    tp_iters = max(2, min(runs, 5 if batch > 1 else 10))
    if batch == 1:
        result["throughput"] = {"batch": 1, "per_s": 1000.0 / median1, "method": "batch-1 latency"}
    elif limit is None or limit >= batch:
        xb = rng.standard_normal((batch, *shape)).astype(np.float32)
        feedb = session.feed(k, xb)
        session.timed(k, feedb, 2)
        tb = session.timed(k, feedb, tp_iters)
        result["throughput"] = {"batch": batch, "per_s": batch * 1000.0 / _median(tb), "method": "batched",
                                "iterations": tp_iters}
    else:  # static batch (usually 1): the batch goes through as consecutive calls, as an app would
        chunks = [session.feed(k, rng.standard_normal((limit, *shape)).astype(np.float32))
                  for _ in range(math.ceil(batch / limit))]
        totals = []
        for _ in range(tp_iters):
            t = 0.0
            for f in chunks:
                t += session.timed(k, f, 1)[0]
            totals.append(t)
        images = limit * len(chunks)
        result["throughput"] = {"batch": images, "per_s": images * 1000.0 / _median(totals),
                                "method": f"{len(chunks)} consecutive batch-{limit} calls (static batch)",
                                "iterations": tp_iters}
        result["throughput_static_batch"] = limit

    # 4. memory of this k alone
    result["peak_rss_mb"] = round(peak_rss_mb(), 2)
    release_freed_memory()
    res = resident_bytes()
    result["rss_anon_mb"] = round(res["RssAnon"] / 1e6, 2)
    result["rss_file_mb"] = round(res["RssFile"] / 1e6, 2)

    # 5. switching k inside one artifact, or to another lazily materialised k
    others = [h for h in session.heads if h != k]
    lazy_other = job.get("lazy_other")
    n = max(3, min(int(job.get("switch_runs", 10)), runs))
    if lazy_other:  # another k's own session, built next to k's (a cold switch), then alternated with it
        ok = int(lazy_other["k"])
        t = time.perf_counter()
        other_session = backend.open(Path(lazy_other["path"]), lazy_other["records"], threads=threads, device=device,
                                     details=job.get("details") or {})
        other_session.prepare(ok)
        release_freed_memory()
        result["cold_switch_ms"] = round((time.perf_counter() - t) * 1e3, 4)
        result["peak_switch_rss_mb"] = round(peak_rss_mb(), 2)
        result["switch"] = _warm_switch(other_session, ok, session, k, x1, feed1, samples, n, result["cold_switch_ms"])
        result["peak_rss_after_switch_mb"] = result["peak_switch_rss_mb"]
        other_session.close()
    elif others:  # another k of the same session
        other = max(others, key=lambda h: (abs(h - k), h))  # the most different k: the worst case
        t = time.perf_counter()
        session.prepare(other)
        result["switch"] = _warm_switch(session, other, session, k, x1, feed1, samples, n,
                                        round((time.perf_counter() - t) * 1e3, 4))
        result["peak_rss_after_switch_mb"] = round(peak_rss_mb(), 2)

    # 6. accuracy
    acc = job.get("accuracy")
    if acc:
        images = np.load(acc["images"])
        labels = np.load(acc["labels"])
        logits = session.run(k, images)
        if logits.shape[0] != labels.shape[0]:
            raise RuntimeError(f"accuracy: {logits.shape[0]} outputs for {labels.shape[0]} labels")
        top1 = float(np.mean(logits.argmax(-1) == labels))
        entry = {"dataset": acc["dataset"], "top1": round(top1, 6), "samples": int(labels.shape[0])}
        if logits.shape[-1] >= 5:
            top5 = np.argsort(-logits, axis=-1)[:, :5]
            entry["top5"] = round(float(np.mean(np.any(top5 == labels[:, None], axis=-1))), 6)
        result["accuracy"] = entry
    if hasattr(backend, "gpu_name"):
        result["gpu"] = backend.gpu_name(device)
    result["threads"] = threads
    session.close()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    try:
        result = measure(job)
        code = 0
    except Exception as exc:  # reported to the harness, which prints it and goes on
        from hydravit_edge.errors import HydraEdgeError

        text = str(exc).strip().splitlines()
        msg = text[0] if text else type(exc).__name__
        if not isinstance(exc, HydraEdgeError):
            msg = f"{type(exc).__name__}: {msg}"
            traceback.print_exc(file=sys.stderr)
        result = {"error": msg[:1000]}
        code = 3
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
