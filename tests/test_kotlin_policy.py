"""The Android demo's Kotlin policy module passes the shared vectors (kotlinc + JUnit 5, no Gradle).

Runs ``make -f mk/kotlin.mk kotlin-test``, which installs kotlinc (npm), JUnit 5 and Android's
org.json (Debian) when missing, compiles ``android_demo/policy`` (cached in ``.kotlin-build/``
while the sources are unchanged) and runs its tests.  The report the Kotlin writer produces is
validated by the harness's report reader and against the generated report schema.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hydravit_edge.bench.report import load_report

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "policy_vectors.json"

pytestmark = pytest.mark.skipif(shutil.which("java") is None,
                                reason="java is not installed: the Kotlin policy tests need a JVM")


def _kotlin_test(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.fail("make is required to build the Kotlin policy module (mk/kotlin.mk)")
    return subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "mk" / "kotlin.mk"), "kotlin-test",
                           f"KOTLIN_REPORT_OUT={tmp_path / 'kotlin-report.json'}", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def _count(text: str, what: str) -> int:
    m = re.search(rf"\[\s*(\d+) tests {what}\s*\]", text)
    assert m, f"no '{what}' count in the JUnit output:\n{text[-3000:]}"
    return int(m.group(1))


def test_kotlin_policy_passes_the_shared_vectors(tmp_path):
    proc = _kotlin_test(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    cases = json.loads(VECTORS.read_text())["cases"]
    assert _count(out, "failed") == 0
    assert _count(out, "successful") >= len(cases)  # one dynamic test per vector case, plus unit tests
    for case in cases[:3] + cases[-3:]:
        assert case["name"] in out

    # the Kotlin report writer produces what the harness accepts
    report = load_report(tmp_path / "kotlin-report.json")
    assert report["device"]["platform"] == "android" and [r["k"] for r in report["rows"]] == [3, 6, 12]
    # and so does the generated schema file the apps' developers read
    import jsonschema

    jsonschema.validate(report, json.loads((ROOT / "bench" / "schemas" / "report.schema.json").read_text()))

    # and the Kotlin tests do fail on a wrong expectation
    bad = json.loads(VECTORS.read_text())
    bad["cases"][0]["steps"][0]["expect"]["k"] = 4
    bad_path = tmp_path / "bad_vectors.json"
    bad_path.write_text(json.dumps(bad))
    proc = _kotlin_test(tmp_path, f"KOTLIN_VECTORS={bad_path}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and _count(out, "failed") == 1, out[-3000:]
