"""The names the Android and iOS demo apps use match what the exporter writes and the schemas define.

The apps keep their names in one place each (``android_demo/policy/.../Contract.kt``,
``ios_demo/HydraPolicy/Sources/HydraPolicy/Contract.swift``); the JSON fields they read and write
are parsed out of their sources.  Checked against: the exporter registry and a real single ONNX
export (artifact files, ``image``/``heads`` inputs, ExecuTorch method and Core ML function names),
the manifest, LUT and report schemas, the policy's field and state names, and the
``hydravit-edge bench android`` contract.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from hydravit_edge.policy import DEFAULT_POLICY, LIMITS, THERMAL_STATES

ROOT = Path(__file__).resolve().parents[1]
KOTLIN = ROOT / "android_demo" / "policy" / "src" / "main" / "kotlin" / "org" / "hydravit" / "edge" / "policy"
SWIFT = ROOT / "ios_demo" / "HydraPolicy" / "Sources" / "HydraPolicy"
MANIFEST_SCHEMA = ROOT / "export" / "schemas" / "manifest.schema.json"


def kotlin_consts() -> dict[str, str]:
    return dict(re.findall(r'const val (\w+)\s*=\s*"([^"]*)"', (KOTLIN / "Contract.kt").read_text()))


def swift_consts() -> dict[str, str]:
    return dict(re.findall(r'static let (\w+)\s*=\s*"([^"]*)"', (SWIFT / "Contract.swift").read_text()))


def schema_properties(schema) -> set[str]:
    """Every property name defined anywhere in a JSON Schema."""
    out: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                out |= set(value)
            out |= schema_properties(value)
    elif isinstance(schema, list):
        for item in schema:
            out |= schema_properties(item)
    return out


def resolve(schema: dict, node: dict) -> dict:
    """``node`` with its ``$ref`` (to the schema's ``$defs``) followed; the schemas are generated from models."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _between(text: str, start: str, end: str) -> str:
    a = text.index(start)
    return text[a:text.index(end, a)]


KOTLIN_READ = re.compile(r'(?:get|opt|isNull|has)(?:String|Int|Double|Boolean|JSONObject|JSONArray|Long)?\("(\w+)"')
SWIFT_READ = re.compile(r'\["(\w+)"\]')


# ------------------------------------------------------------------ exporter

def _exporter(name: str):
    from hydravit_edge.export import exporter_names, get_exporter

    if name not in exporter_names():
        pytest.skip(f"export target '{name}' is not registered yet (pending in export/)")
    return get_exporter(name)


def test_onnx_export_manifest_and_the_kotlin_reader(tmp_path):
    """A real single ONNX export of a tiny model: file, inputs and output as the Android app expects them,
    and the app's Kotlin manifest reader (run on the JVM) accepts the manifest.json the exporter wrote."""
    import shutil
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import tiny_model

    k = kotlin_consts()
    exp = _exporter(k["ONNX_TARGET"])
    from hydravit_edge.export.api import export_model

    out = tmp_path / "export"
    export_model(tiny_model(), heads=(1, 2), targets=k["ONNX_TARGET"], mode="single", out=out, validate=False,
                 precisions="fp32,int8")
    manifest = json.loads((out / k["MANIFEST_FILE"]).read_text())
    records = manifest["targets"][exp.name]["artifacts"]
    assert [r["k"] for r in records] == [1, 2]
    for r in records:
        assert r["file"] == k["ONNX_SINGLE_FILE"] and (out / r["file"]).is_file() and r["mode"] == "single"
        names = {t["name"]: t for t in r["inputs"]}
        assert names[k["ONNX_IMAGE_INPUT"]]["dtype"] == "float32"
        heads = names[k["ONNX_HEADS_INPUT"]]
        assert heads["dtype"] == "int64" and heads["shape"] == [1]  # the app feeds a LongBuffer [k] of shape [1]
        assert [t["name"] for t in r["outputs"]] == [k["ONNX_LOGITS_OUTPUT"]]
    assert manifest["input"]["name"] == k["ONNX_IMAGE_INPUT"]

    if shutil.which("java") is None or shutil.which("make") is None:
        pytest.skip("java/make absent: the Kotlin manifest reader was not run (names were checked)")
    proc = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "mk" / "kotlin.mk"), "kotlin-test",
                           f"KOTLIN_MANIFEST={out / k['MANIFEST_FILE']}", f"KOTLIN_REPORT_OUT={tmp_path / 'r.json'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    # printed after the reader's assertions passed (a failure makes the launcher exit non-zero)
    assert ("real manifest read: k=[1, 2] img_size=32 labels=5 precisions=[fp32, int8] "
            "options=[1@fp32, 2@fp32, 1@int8, 2@int8]") in text, text[-3000:]


def test_executorch_names():
    k = kotlin_consts()
    exp = _exporter(k["EXECUTORCH_TARGET"])
    assert f"{exp.name}/{exp.single_filename}" == k["EXECUTORCH_SINGLE_FILE"]
    for h in (1, 3, 12):
        assert exp.entry_name(h) == f"{k['EXECUTORCH_METHOD_PREFIX']}{h}"


def test_coreml_names():
    s = swift_consts()
    exp = _exporter(s["coremlTarget"])
    assert f"{exp.name}/{exp.single_filename}" == s["coremlSingleFile"]
    for h in (1, 3, 12):
        assert exp.entry_name(h) == f"{s['coremlFunctionPrefix']}{h}"


def test_manifest_fields_the_apps_read():
    if not MANIFEST_SCHEMA.exists():
        pytest.skip("export/schemas/manifest.schema.json is not written yet (pending in export/)")
    schema = json.loads(MANIFEST_SCHEMA.read_text())
    props = schema_properties(schema)
    fmt, version = schema["properties"]["format"]["const"], schema["properties"]["manifest_version"]["const"]
    assert f'MANIFEST_FORMAT = "{fmt}"' in (KOTLIN / "Manifest.kt").read_text()
    assert f"MANIFEST_VERSION = {version}" in (KOTLIN / "Manifest.kt").read_text()
    assert f'manifestFormat = "{fmt}"' in (SWIFT / "Manifest.swift").read_text()
    assert f"manifestVersion = {version}" in (SWIFT / "Manifest.swift").read_text()
    assert resolve(schema, schema["properties"]["input"])["properties"]["name"]["const"] == kotlin_consts()["ONNX_IMAGE_INPUT"]
    assert resolve(schema, schema["properties"]["output"])["properties"]["name"]["const"] == swift_consts()["logitsOutput"]
    kotlin = set(KOTLIN_READ.findall((KOTLIN / "Manifest.kt").read_text()))
    swift = set(SWIFT_READ.findall((SWIFT / "Manifest.swift").read_text()))
    # each app reads the input spec either from `input` or from `model.config`; both must be defined
    assert {"targets", "artifacts", "k", "file", "entry", "mode", "inputs", "name", "dtype"} <= kotlin & swift
    assert kotlin - props == set(), f"Manifest.kt reads fields the manifest schema lacks: {sorted(kotlin - props)}"
    assert swift - props == set(), f"Manifest.swift reads fields the manifest schema lacks: {sorted(swift - props)}"


def test_both_apps_name_the_same_targets_and_files():
    k, s = kotlin_consts(), swift_consts()
    assert k["MANIFEST_FILE"] == s["manifestFile"] == "manifest.json"
    assert k["LUT_FILE"] == s["lutFile"] == "lut.json"
    assert k["ASSET_DIR"] == s["resourceDir"]
    assert k["REPORT_FILE"] == s["reportFile"]
    assert k["ONNX_IMAGE_INPUT"] == s["imageInput"] and k["ONNX_LOGITS_OUTPUT"] == s["logitsOutput"]
    # single artifacts follow the exporter's naming: <target>/hydravit<suffix>
    assert k["ONNX_SINGLE_FILE"] == "onnx/hydravit.onnx"
    assert k["EXECUTORCH_SINGLE_FILE"] == "executorch/hydravit.pte"
    assert s["coremlSingleFile"] == "coreml/hydravit.mlpackage"


# ------------------------------------------------------------------ LUT, policy, report

def test_lut_fields_the_apps_read():
    schema = json.loads((ROOT / "hydravit_edge" / "schemas" / "lut.schema.json").read_text())
    props = schema_properties(schema)
    # the policy sources minus the PolicyInput parser (that reads the vectors' input form, not the LUT)
    kt_policy = (KOTLIN / "Policy.kt").read_text()
    kt_policy = kt_policy.replace(_between(kt_policy, "data class PolicyInput", "data class Decision"), "")
    sw_policy = (SWIFT / "Policy.swift").read_text()
    sw_policy = sw_policy.replace(_between(sw_policy, "public struct PolicyInput", "public struct Decision"), "")
    kotlin = set(KOTLIN_READ.findall((KOTLIN / "Lut.kt").read_text() + kt_policy))
    swift = set(SWIFT_READ.findall((SWIFT / "Lut.swift").read_text() + sw_policy))
    for name, used in (("Kotlin", kotlin), ("Swift", swift)):
        assert {"policy", "devices", "name", "backend", "rows", "k", "p90_ms"} <= used, name
        assert used - props == set(), f"{name} reads LUT fields the schema lacks: {sorted(used - props)}"
    assert re.search(r'LUT_FORMAT = "hydravit-edge-lut"', (KOTLIN / "Lut.kt").read_text())
    assert '"hydravit-edge-lut"' in (SWIFT / "Lut.swift").read_text()
    assert schema["properties"]["format"]["const"] == "hydravit-edge-lut"


def test_policy_names_match_python():
    kt = (KOTLIN / "Policy.kt").read_text()
    sw = (SWIFT / "Policy.swift").read_text()
    kotlin_fields = re.findall(r'"(\w+)"', _between(kt, "val FIELDS", ")"))
    swift_fields = re.findall(r'"(\w+)"', _between(sw, "static let fields", "]"))
    kotlin_optional = re.findall(r'"(\w+)"', _between(kt, "val OPTIONAL_FIELDS", ")"))
    swift_optional = re.findall(r'"(\w+)"', _between(sw, "static let optionalFields", "]"))
    assert kotlin_fields + kotlin_optional == swift_fields + swift_optional == list(DEFAULT_POLICY)
    assert re.findall(r'"(\w+)"', _between(kt, "val THERMAL_STATES", ")")) == list(THERMAL_STATES)
    assert re.findall(r'"(\w+)"', _between(sw, "let thermalStates", "]")) == list(THERMAL_STATES)
    assert re.findall(r'"(\w+)"', _between(kt, "val LIMITS", ")")) == list(LIMITS)
    assert re.findall(r'"(\w+)"', _between(sw, "let policyLimits", "]")) == list(LIMITS)
    # error codes the vectors use are raised by both ports
    for code in ("invalid_battery", "invalid_thermal", "invalid_budget", "invalid_policy", "invalid_switch_state",
                 "unknown_device"):
        assert f'"{code}"' in kt + (KOTLIN / "Lut.kt").read_text(), code
        assert f'"{code}"' in sw + (SWIFT / "Lut.swift").read_text(), code


def test_report_fields_the_apps_write():
    schema = json.loads((ROOT / "bench" / "schemas" / "report.schema.json").read_text())
    row_props = set(schema["$defs"]["row"]["properties"])
    device_props = set(schema["$defs"]["device"]["properties"])
    top_props = set(schema["properties"])
    kt = (KOTLIN / "Report.kt").read_text()
    sw = (SWIFT / "Report.swift").read_text()
    kotlin_row = set(re.findall(r'\.put\("(\w+)"', _between(kt, "data class ReportRow", "class ReportBuilder")))
    kotlin_dev = set(re.findall(r'\.put\("(\w+)"', _between(kt, "data class DeviceInfo", "data class ReportRow")))
    kotlin_top = set(re.findall(r'\.put\("(\w+)"', _between(kt, "class ReportBuilder", "fun write")))
    swift_row = set(re.findall(r'"(\w+)":', _between(sw, "public struct ReportRow", "public final class ReportBuilder")))
    swift_dev = set(re.findall(r'"(\w+)":', _between(sw, "public struct DeviceInfo", "public struct ReportRow")))
    swift_top = set(re.findall(r'"(\w+)":', _between(sw, "public final class ReportBuilder", "public func write")))
    for rows, dev, top, name in ((kotlin_row, kotlin_dev, kotlin_top, "Kotlin"), (swift_row, swift_dev, swift_top, "Swift")):
        assert {"k", "backend", "artifact", "latency_median_ms", "latency_p90_ms", "latency_min_ms"} <= rows, name
        assert rows - row_props == set(), f"{name} writes row fields the schema lacks: {sorted(rows - row_props)}"
        assert dev - device_props == set(), f"{name} writes device fields the schema lacks: {sorted(dev - device_props)}"
        assert set(schema["required"]) <= top, name
        assert top - top_props - {"name", "version"} == set(), f"{name}: {sorted(top - top_props)}"
    assert kotlin_row == swift_row
    backends = set(schema["$defs"]["row"]["properties"]["backend"]["enum"])
    k, s = kotlin_consts(), swift_consts()
    assert {k["BACKEND_ONNXRUNTIME"], k["BACKEND_EXECUTORCH"], s["backendCoreML"]} <= backends


def test_vectors_path_of_the_swift_tests():
    src = (ROOT / "ios_demo" / "HydraPolicy" / "Tests" / "HydraPolicyTests" / "PolicyVectorTests.swift")
    text = src.read_text()
    ups = text.count(".deletingLastPathComponent()")
    rel = re.search(r'appendingPathComponent\("([^"]+)"\)', text).group(1)
    target = src
    for _ in range(ups):
        target = target.parent
    assert (target / rel).resolve() == (ROOT / "tests" / "policy_vectors.json").resolve()


# ------------------------------------------------------------------ hydravit-edge bench android

def test_android_benchmark_contract():
    k = kotlin_consts()
    android = pytest.importorskip("hydravit_edge.bench.android")
    assert android.REPORT_NAME == k["REPORT_FILE"]
    params = inspect.signature(android.run_android_benchmark).parameters
    assert params["package"].default == k["APPLICATION_ID"]
    assert params["activity"].default == k["MAIN_ACTIVITY"]
    src = inspect.getsource(android)
    assert re.search(rf'"--ez", "{k["EXTRA_BENCHMARK"]}"', src)
    assert re.search(rf'"--ei", "{k["EXTRA_RUNS"]}"', src)
    gradle = (ROOT / "android_demo" / "app" / "build.gradle.kts").read_text()
    assert re.search(rf'applicationId = "{re.escape(k["APPLICATION_ID"])}"', gradle)
    assert f'android:name="{k["MAIN_ACTIVITY"]}"' in (ROOT / "android_demo" / "app" / "src" / "main" / "AndroidManifest.xml").read_text()
    assert f'/{k["REPORT_FILE"]}' in android.device_report_path(k["APPLICATION_ID"])


def test_ios_bundle_id_matches_its_readme():
    project = (ROOT / "ios_demo" / "project.yml").read_text()
    bundle = re.search(r"PRODUCT_BUNDLE_IDENTIFIER: (\S+)", project).group(1)
    readme = (ROOT / "ios_demo" / "README.md").read_text()
    assert f"--domain-identifier {bundle}" in readme and f"UDID {bundle}" in readme
    assert f"Documents/{swift_consts()['reportFile']}" in readme
