"""Peak memory of a measurement subprocess is its own, not its parent's."""

import subprocess
import sys

import pytest

from hydravit_edge.memory import peak_rss_mb, rss_mb


def test_child_peak_does_not_inherit_the_parents(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    big = bytearray(400 * 1024 * 1024)  # make this process's high-water mark at least 400 MB
    big[::4096] = b"x" * len(big[::4096])
    assert peak_rss_mb() > 400 and rss_mb() > 400
    code = "from hydravit_edge.memory import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = float(out.stdout)
    assert 1 < child < 200, child  # ru_maxrss would report the parent's > 400 MB here
    del big
