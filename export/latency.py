"""Latency of one exported artifact in its own runtime, in a process of its own.

Started by :mod:`hydravit_edge.export.bench_sizes` through ``base.light_python`` (no PyTorch
import for onnxruntime; ``executorch.runtime`` imports torch itself but runs nothing in it):

    JOB = {"kind": "onnx"|"executorch", "path": ..., "entries": [{"k": 3, "entry": null|"forward_k3",
           "heads_input": bool}], "runs": 10, "warmup": 2, "threads": 0, "img": [1, 3, 224, 224]}

Prints one JSON line: load seconds, resident memory after loading (MB), per entry the median and
all run times (ms), and the peak resident memory.

With ``"serve": true`` the process loads the artifact and its entries, warms them up, prints a
JSON "ready" line, then answers each stdin line ``run <k>`` with the milliseconds of one run.
:func:`hydravit_edge.export.bench_sizes.paired` keeps two such processes (say the single
artifact and a per-k file) and alternates single runs between them, so that the load of a shared
machine hits both sides alike.
"""

from __future__ import annotations

import json
import sys
import time

from hydravit_edge.memory import peak_rss_mb, rss_mb


def main(argv: list[str]) -> int:
    import numpy as np

    job = json.loads(argv[0])
    x = np.random.default_rng(0).standard_normal(job["img"]).astype(np.float32)
    threads = int(job.get("threads") or 0)
    out: dict = {"rss_start_mb": rss_mb()}
    t0 = time.perf_counter()
    if job["kind"] == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        sess = ort.InferenceSession(job["path"], so, providers=["CPUExecutionProvider"])
        out["threads"] = threads or "default"

        def runner(entry):
            feed = {"image": x}
            if entry.get("heads_input"):
                feed["heads"] = np.asarray([entry["k"]], dtype=np.int64)
            if entry.get("k_dummy"):  # graphs with a symbolic k: a float input of length k (bench only)
                feed[entry["k_dummy"]] = np.zeros(int(entry["k"]), dtype=np.float32)
            return lambda: sess.run(["logits"], feed)
    elif job["kind"] == "executorch":
        import torch

        from hydravit_edge.executorch_runtime import import_runtime

        Runtime = import_runtime().Runtime  # first: it imports portable_lib without ExecuTorch's compiler
        from executorch.extension.pybindings import portable_lib

        if threads:
            torch.set_num_threads(threads)
            portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's threadpool
        out["threads"] = portable_lib._threadpool_get_thread_count()
        program = Runtime.get().load_program(job["path"])
        xt = torch.from_numpy(x)
        methods = {}

        def runner(entry):
            name = entry.get("entry") or "forward"
            if name not in methods:
                methods[name] = program.load_method(name)
            m = methods[name]
            return lambda: m.execute([xt])
    else:
        raise SystemExit(f"unknown kind {job['kind']}")
    out["load_s"] = time.perf_counter() - t0
    out["rss_loaded_mb"] = rss_mb()
    if job.get("serve"):
        fns = {}
        for entry in job["entries"]:
            fns[int(entry["k"])] = runner(entry)
            for _ in range(int(job.get("warmup", 2))):
                fns[int(entry["k"])]()
        out["rss_ready_mb"] = rss_mb()
        print(json.dumps(dict(out, ready=True)), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] != "run":
                break
            fn = fns[int(cmd[1])]
            t = time.perf_counter()
            fn()
            print(f"{1000.0 * (time.perf_counter() - t):.4f}", flush=True)
        return 0
    results = []
    for entry in job["entries"]:
        t1 = time.perf_counter()
        fn = runner(entry)
        for _ in range(int(job.get("warmup", 2))):
            fn()
        first_s = time.perf_counter() - t1
        times = []
        for _ in range(int(job["runs"])):
            t = time.perf_counter()
            fn()
            times.append(1000.0 * (time.perf_counter() - t))
        results.append({"k": entry["k"], "median_ms": float(np.median(times)), "min_ms": float(np.min(times)),
                        "times_ms": times, "first_s": first_s})
    out["results"] = results
    out["rss_end_mb"] = rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
