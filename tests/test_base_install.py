"""The base install (`pip install hydravit-edge`, no extras) runs exported models without the training stack.

Slow (a fresh virtual environment, packages from the registry or pip's cache: about a minute):
``pytest -m slow tests/test_base_install.py``.  It prints the size of the base environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def test_base_install_predicts_without_torch(tmp_path):
    from hydravit_edge.export import export_model
    from helpers import TINY, tiny_model

    export_model(tiny_model(TINY.replace(labels=("a", "b", "c", "d", "e"))), targets="onnx", mode="single",
                 heads="1,4", out=tmp_path / "exp")
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(
        tmp_path / "imgs" / "a" / "x.png")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    for name in ("hydravit_edge", "train", "export", "bench"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(src)], check=True, env=env, cwd=tmp_path)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=env).stdout.strip()
    for heavy in ("torch", "timm", "executorch", "coremltools", "litert_torch", "onnx", "matplotlib"):
        assert not (Path(site) / heavy).exists(), f"the base install pulled {heavy}"

    exe = env_dir / "bin" / "hydravit-edge"
    out = subprocess.run([str(exe), "predict", str(tmp_path / "exp"), str(tmp_path / "imgs"), "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["summary"]["images"] == 1 and data["images"][0]["k"] == 4
    # a command of an extra says which extra to install, in one line
    out = subprocess.run([str(exe), "train", "--data", "digits", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode != 0 and "hydravit-edge[train]" in out.stderr and "Traceback" not in out.stderr
    base_mb = _size_mb(env_dir)
    full_mb = _size_mb(Path(sys.prefix))
    print(f"\nbase install: {base_mb:.0f} MB; full environment ({sys.prefix}): {full_mb:.0f} MB "
          f"({100 * base_mb / full_mb:.1f} %)")
    assert base_mb < 0.10 * full_mb
