"""Latency of one exported artifact in its own runtime, in a process of its own (``export-bench``).

Started by :mod:`hydravit_edge.export.bench_sizes` as ``python -m hydravit_edge.export.latency JOB``;
the artifact is opened and run with its engine (:mod:`hydravit_edge.engines`), so no PyTorch is
imported for onnxruntime (ExecuTorch's runtime imports torch itself but runs nothing in it):

    JOB = {"target": "onnx"|"executorch", "path": ..., "records": [{"k": 3, "entry": null|"forward_k3", ...}],
           "runs": 10, "warmup": 2, "threads": 0, "img": [1, 3, 224, 224]}

``records`` are the manifest's artifact records of that file (``k`` and ``entry`` are enough; an
ONNX graph's ``heads`` input is fed whenever the graph has one).  Prints one JSON line: load
seconds (the runtime's import included), resident memory after loading (MB), per record the
median and all run times (ms), and the peak resident memory.

With ``"serve": true`` the process loads the artifact and its entries, warms them up, prints a
JSON "ready" line, then answers each stdin line ``run <k>`` with the milliseconds of one run.
:func:`hydravit_edge.export.bench_sizes._alternate` alternates single runs between two such
processes (say the single artifact and a per-k file), so that the load of a shared machine hits
both sides alike.
"""

from __future__ import annotations

import json
import sys
import time

from hydravit_edge.memory import peak_rss_mb, rss_mb


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
