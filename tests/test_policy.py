"""The battery/thermal policy: shared vectors, policy data validation, the sysfs reader, `lut pick`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydravit_edge.battery import read_battery, read_low_power, read_power_state, read_thermal
from hydravit_edge.contract.lut import Lut, UnknownDeviceError
from hydravit_edge.policy import (
    DEFAULT_POLICY, LIMITS, PolicyConfig, PolicyError, PolicyInput, PolicyState, cap_for_fraction, decide,
    parse_battery,
)

VECTORS_PATH = Path(__file__).parent / "policy_vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text())


def run_case(case: dict) -> list[dict]:
    """Run a vector case the way the Kotlin/Swift ports do; returns one outcome per step."""
    lut = Lut.check(VECTORS["luts"][case["lut"]])
    outcomes = []
    state = None
    for step in case["steps"]:
        try:
            if state is None:
                state = lut.device(case["device"], case.get("backend")).state()
            if "previous_k" in step:
                state.previous_k = step["previous_k"]
            if "previous" in step:
                state.previous = step["previous"]
            d = state.update(PolicyInput.from_dict(step["input"]))
            outcomes.append({"k": d.k, "precision": d.precision, "limit": d.limit, "band": d.band,
                             "fits_budget": d.fits_budget})
        except UnknownDeviceError:
            outcomes.append({"error": "unknown_device"})
        except PolicyError as exc:
            outcomes.append({"error": exc.code})
    return outcomes


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_policy_vectors(case):
    got = run_case(case)
    for i, (step, out) in enumerate(zip(case["steps"], got)):
        want = step["expect"]
        assert {k: out.get(k) for k in want} == want, f"step {i} input {step['input']}: {out}"


def test_vectors_are_well_formed():
    assert len(VECTORS["cases"]) >= 40
    for name, lut in VECTORS["luts"].items():
        Lut.check(lut, where=f"vectors lut {name}")
    expected = [s["expect"] for c in VECTORS["cases"] for s in c["steps"]]
    assert {e["limit"] for e in expected if "limit" in e} == set(LIMITS)
    assert {e["error"] for e in expected if "error" in e} == {
        "invalid_battery", "invalid_thermal", "invalid_budget", "invalid_switch_state", "unknown_device"}
    assert any(len(c["steps"]) > 3 for c in VECTORS["cases"])


def test_vector_runner_detects_a_wrong_expectation():
    case = json.loads(json.dumps(VECTORS["cases"][0]))
    case["steps"][0]["expect"]["k"] = 3
    with pytest.raises(AssertionError):
        test_policy_vectors(case)


# ------------------------------------------------------------------ policy data and inputs

def test_default_policy_round_trip():
    assert PolicyConfig.from_dict(DEFAULT_POLICY).to_dict() == PolicyConfig().to_dict() == DEFAULT_POLICY


@pytest.mark.parametrize("bad, words", [
    ({"battery_bands": [{"name": "a", "min_percent": 10, "max_k_fraction": 1}]}, "min_percent 0"),
    ({"battery_bands": []}, "non-empty"),
    ({"battery_bands": [{"name": "a", "min_percent": 0, "max_k_fraction": 1},
                        {"name": "b", "min_percent": 0, "max_k_fraction": 0.5}]}, "distinct"),
    ({"battery_bands": [{"name": "a", "min_percent": 0, "max_k_fraction": 1.5}]}, "max_k_fraction"),
    ({"thermal_max_k_fraction": {"nominal": 1}}, "thermal_max_k_fraction"),
    ({"budget_ms": 0}, "budget_ms"),
    ({"budget_ms": "fast"}, "budget_ms"),
    ({"hysteresis_percent": -1}, "hysteresis_percent"),
    ({"budget": 33}, "unknown policy field"),
])
def test_policy_data_errors(bad, words):
    with pytest.raises(PolicyError, match=words) as info:
        PolicyConfig.from_dict(bad)
    assert info.value.code == "invalid_policy"


@pytest.mark.parametrize("text, value", [("35", 35.0), ("35%", 35.0), (" 0 ", 0.0), ("100", 100.0),
                                         ("unknown", None), ("", None), (None, None), (42, 42.0)])
def test_parse_battery(text, value):
    assert parse_battery(text) == value


@pytest.mark.parametrize("text", ["101", "-1", "lots", float("nan"), True])
def test_parse_battery_rejects(text):
    with pytest.raises(PolicyError) as info:
        parse_battery(text)
    assert info.value.code == "invalid_battery"


def test_cap_for_fraction_edges():
    assert cap_for_fraction([3, 6, 12], 0.0) == 3
    assert cap_for_fraction([3, 6, 12], 0.49) == 3
    assert cap_for_fraction([3, 6, 12], 0.5) == 6
    assert cap_for_fraction(list(range(1, 101)), 0.29) == 29  # 0.29 * 100 = 28.999999999999996


def test_state_remembers_and_reset():
    state = PolicyState({3: 1.0, 6: 2.0, 12: 3.0})
    assert state.update(PolicyInput(battery=40)).k == 6
    held = state.update(PolicyInput(battery=52))
    assert (held.k, held.limit, held.held) == (6, "hysteresis", True)
    assert "hysteresis" in held.reason
    state.reset()
    assert state.update(PolicyInput(battery=52)).k == 12


def test_reason_explains_the_choice():
    d = decide({3: 4.0, 6: 9.0, 12: 40.0}, PolicyConfig(), PolicyInput(battery=80))
    assert (d.k, d.limit) == (6, "budget")
    assert "exceeds the 33 ms budget" in d.reason and "band 'high'" in d.reason
    d = decide({3: 4.0, 6: 9.0, 12: 40.0}, PolicyConfig(), PolicyInput(battery=None))
    assert d.reason.startswith("battery unknown, treated as 100%")


def test_empty_table_is_an_error():
    with pytest.raises(PolicyError) as info:
        decide({}, PolicyConfig(), PolicyInput(battery=50))
    assert info.value.code == "empty_table"


# ------------------------------------------------------------------ sysfs reader

def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def test_battery_discharging(tmp_path):
    _write(tmp_path, "class/power_supply/BAT0/type", "Battery")
    _write(tmp_path, "class/power_supply/BAT0/capacity", "35")
    _write(tmp_path, "class/power_supply/BAT0/status", "Discharging")
    _write(tmp_path, "class/power_supply/AC/type", "Mains")
    _write(tmp_path, "class/power_supply/AC/online", "0")
    _write(tmp_path, "class/power_supply/hidpp_battery_0/type", "Battery")  # a mouse
    _write(tmp_path, "class/power_supply/hidpp_battery_0/scope", "Device")
    _write(tmp_path, "class/power_supply/hidpp_battery_0/capacity", "5")
    assert read_battery(tmp_path)[:2] == (35.0, False)
    state = read_power_state(tmp_path)
    assert (state.battery_percent, state.charging, state.thermal) == (35.0, False, None)
    assert state.as_policy_input().battery == 35.0


def test_battery_charging_and_energy_counters(tmp_path):
    for name, now, full in (("BAT0", 30, 100), ("BAT1", 90, 100)):
        _write(tmp_path, f"class/power_supply/{name}/type", "Battery")
        _write(tmp_path, f"class/power_supply/{name}/energy_now", str(now * 1000))
        _write(tmp_path, f"class/power_supply/{name}/energy_full", str(full * 1000))
    _write(tmp_path, "class/power_supply/BAT0/status", "Charging")
    _write(tmp_path, "class/power_supply/BAT1/status", "Full")
    percent, charging, used = read_battery(tmp_path)
    assert (percent, charging) == (60.0, True) and used == ["BAT0", "BAT1"]


def test_mains_only_board_is_unknown_battery_on_power(tmp_path):
    _write(tmp_path, "class/power_supply/AC/type", "Mains")
    _write(tmp_path, "class/power_supply/AC/online", "1")
    assert read_battery(tmp_path)[:2] == (None, True)
    assert read_battery(tmp_path / "nothing-here")[:2] == (None, None)


def test_thermal_levels(tmp_path):
    zone = "class/thermal/thermal_zone0"
    _write(tmp_path, f"{zone}/temp", "72000")
    _write(tmp_path, f"{zone}/trip_point_0_type", "passive")
    _write(tmp_path, f"{zone}/trip_point_0_temp", "80000")
    _write(tmp_path, f"{zone}/trip_point_1_type", "critical")
    _write(tmp_path, f"{zone}/trip_point_1_temp", "100000")
    assert read_thermal(tmp_path) == ("fair", 72.0)
    _write(tmp_path, f"{zone}/temp", "85000")
    assert read_thermal(tmp_path)[0] == "serious"
    _write(tmp_path, f"{zone}/temp", "100000")
    assert read_thermal(tmp_path)[0] == "critical"
    _write(tmp_path, f"{zone}/temp", "40000")
    _write(tmp_path, "class/thermal/thermal_zone1/temp", "96000")  # no trip points: fixed thresholds
    _write(tmp_path, "class/thermal/thermal_zone2/temp", "-273000")  # broken sensor, ignored
    assert read_thermal(tmp_path) == ("critical", 96.0)
    assert read_thermal(tmp_path / "none") == (None, None)


def test_low_power_profile(tmp_path):
    assert read_low_power(tmp_path) is False
    _write(tmp_path, "firmware/acpi/platform_profile", "low-power")
    assert read_low_power(tmp_path) is True


# ------------------------------------------------------------------ lut pick (CLI)

@pytest.fixture()
def vector_lut(tmp_path) -> Path:
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(VECTORS["luts"]["A"]))
    return path


def _cli(args, capsys):
    from hydravit_edge.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pick_prints_k_and_why(vector_lut, capsys):
    code, out, _ = _cli(["lut", "pick", "--lut", str(vector_lut), "--device-name", "fast-phone", "--battery", "35"], capsys)
    assert code == 0
    assert "k = 6" in out and "limited by: battery" in out and "band 'medium'" in out


def test_pick_json_with_flags(vector_lut, capsys):
    code, out, _ = _cli(["lut", "pick", "--lut", str(vector_lut), "--device-name", "fast-phone", "--battery", "35",
                         "--charging", "--thermal", "serious", "--budget-ms", "33", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert (d["k"], d["limit"], d["device"], d["backend"]) == (6, "thermal", "fast-phone", "onnxruntime")
    code, out, _ = _cli(["lut", "pick", "--lut", str(vector_lut), "--device-name", "fast-phone", "--battery", "52",
                         "--previous-k", "6", "--json"], capsys)
    assert json.loads(out)["limit"] == "hysteresis"
    code, out, _ = _cli(["lut", "pick", "--lut", str(vector_lut), "--device-name", "fast-phone", "--low-power", "--json"],
                        capsys)
    assert json.loads(out)["k"] == 3


@pytest.mark.parametrize("args, words", [
    (["--device-name", "fast-phone", "--battery", "101"], "outside 0..100"),
    (["--device-name", "fast-phone", "--battery", "full"], "percentage 0..100"),
    (["--device-name", "nope", "--battery", "50"], "has no device 'nope'; it has: fast-phone, slow-board"),
    (["--device-name", "fast-phone", "--backend", "tflite"], "no 'tflite' rows"),
    (["--device-name", "fast-phone", "--thermal", "hot"], "nominal, fair, serious, critical"),
    (["--device-name", "fast-phone", "--budget-ms", "0"], "budget"),
])
def test_pick_errors(vector_lut, capsys, args, words):
    code, _, err = _cli(["lut", "pick", "--lut", str(vector_lut), *args], capsys)
    assert code == 2
    assert words in " ".join(err.split())
