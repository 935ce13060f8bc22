"""Runs exported artifacts in their own runtime, in a process of its own.

Started by :func:`hydravit_edge.export.base.run_in_runner` (without executing
``hydravit_edge/__init__``, see ``base.light_python``; ``python -m hydravit_edge.export.runner JOB.json``
works too): it loads the target's exporter, calls
``predict`` for every record on the job's inputs and writes ``outputs.npz`` (``k<k>`` ->
logits) and, for records that failed, ``errors.json`` (``k`` -> message) next to the job file.
PyTorch is never run here, so runtimes are exercised exactly as a deployment would.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    from .base import ArtifactRecord, get_exporter

    exporter = get_exporter(job["target"])
    inputs = np.load(job["inputs"])
    target_dir = Path(job["dir"])
    outputs: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for rec in (ArtifactRecord.from_dict(d) for d in job["records"]):
        try:
            got = exporter.predict(target_dir / rec.file, rec, inputs)
            outputs[f"k{rec.k}"] = np.asarray(got, dtype=np.float32)
        except Exception as exc:  # reported per record; the parent turns it into an 'error' result
            line = str(exc).strip().splitlines()
            errors[str(rec.k)] = f"{type(exc).__name__}: {line[0] if line else ''}"[:500]
            traceback.print_exc(file=sys.stderr)
    with open(job["output"], "wb") as f:
        np.savez(f, **outputs)
    (job_path.parent / "errors.json").write_text(json.dumps(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
