"""Run artifacts in their own runtime, in a process of its own (export validation).

:func:`run_isolated` starts ``python -m hydravit_edge.engines.runner JOB.json``: a fresh
interpreter that imports only the target's runtime (never the exporter, never PyTorch for
onnxruntime and LiteRT), so the artifacts run exactly as a deployment runs them, and a runtime
that crashes takes only this process down.  The child opens each artifact file once with the
target's engine (:func:`~hydravit_edge.engines.engine_for_target`), runs every record's k on
the job's inputs and writes ``outputs.npz`` (``k<k>`` -> logits) and ``errors.json``
(``k`` -> message, for records that failed) next to the job file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

__all__ = ["run_records", "run_isolated", "main"]


def _error_text(exc: BaseException) -> str:
    line = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {line[0] if line else ''}"[:500]


def run_records(target: str, target_dir: Path, records: Sequence[Mapping[str, Any]],
                inputs: np.ndarray) -> dict[int, np.ndarray | str]:
    """``{k: logits}`` of each record (``file`` relative to ``target_dir``) on ``inputs``, in this
    process; ``{k: "error text"}`` for a record that could not be run."""
    from . import engine_for_target

    engine = engine_for_target(target)
    out: dict[int, np.ndarray | str] = {}
    by_file: dict[str, list[dict]] = {}
    for r in records:
        by_file.setdefault(r["file"], []).append(dict(r))
    for file, recs in by_file.items():
        try:
            if engine is None:
                raise RuntimeError(f"no runtime engine runs {target} artifacts")
            session = engine.open(Path(target_dir) / file, recs)
        except Exception as exc:  # reported per record; the caller turns it into an 'error' result
            traceback.print_exc(file=sys.stderr)
            out.update({int(r["k"]): _error_text(exc) for r in recs})
            continue
        with session:
            for r in recs:
                k = int(r["k"])
                try:
                    out[k] = np.asarray(session.run(k, inputs), dtype=np.float32)
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    out[k] = _error_text(exc)
    return out


def run_isolated(target: str, target_dir: Path, records: Sequence[Mapping[str, Any]], inputs: np.ndarray,
                 timeout: float = 1800.0, env: Optional[Mapping[str, str]] = None) -> dict[int, np.ndarray | str]:
    """:func:`run_records` in a fresh ``python -m hydravit_edge.engines.runner`` process."""
    records = [dict(r) for r in records]
    with tempfile.TemporaryDirectory(prefix="hydravit-validate-") as tmp:
        tmp = Path(tmp)
        job = {"target": target, "dir": str(Path(target_dir).resolve()), "records": records,
               "inputs": str(tmp / "inputs.npy"), "output": str(tmp / "outputs.npz")}
        np.save(tmp / "inputs.npy", np.ascontiguousarray(inputs, dtype=np.float32))
        (tmp / "job.json").write_text(json.dumps(job))
        env = dict(os.environ if env is None else env)
        env.setdefault("PYTHONWARNINGS", "ignore")
        try:
            proc = subprocess.run([sys.executable, "-m", "hydravit_edge.engines.runner", str(tmp / "job.json")],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {int(r["k"]): f"{target} runtime did not finish within {timeout:.0f} s" for r in records}
        out: dict[int, np.ndarray | str] = {}
        errors = {}
        if (tmp / "errors.json").exists():
            errors = {int(k): v for k, v in json.loads((tmp / "errors.json").read_text()).items()}
        if (tmp / "outputs.npz").exists():
            with np.load(tmp / "outputs.npz") as z:
                for name in z.files:
                    out[int(name[1:])] = z[name]
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        for r in records:
            k = int(r["k"])
            if k in errors:
                out[k] = errors[k]
            elif k not in out:
                out[k] = (f"{target} runtime process exited with code {proc.returncode}"
                          + (f": {' | '.join(tail)}" if tail else ""))
        return out


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    results = run_records(job["target"], Path(job["dir"]), job["records"], np.load(job["inputs"]))
    with open(job["output"], "wb") as f:
        np.savez(f, **{f"k{k}": v for k, v in results.items() if not isinstance(v, str)})
    (job_path.parent / "errors.json").write_text(json.dumps({str(k): v for k, v in results.items() if isinstance(v, str)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
