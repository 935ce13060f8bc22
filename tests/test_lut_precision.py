"""LUT rows of several precisions: one entry per configuration, the frontier, validation, `lut pick/show`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hydravit_edge.bench.lut_build import build_lut
from hydravit_edge.bench.lut_frontier import frontier_flags
from hydravit_edge.bench.report import make_row, save_report, upsert_rows
from hydravit_edge.bench.stats import latency_stats
from hydravit_edge.contract.lut import Lut, LutError
from hydravit_edge.policy import PolicyInput

from test_reports import SMALL, sample_report

VECTORS = json.loads((Path(__file__).parent / "policy_vectors.json").read_text())

#: (k, precision, latency ms, top1)
MEASURED = [(3, "fp32", 6.0, 0.70), (6, "fp32", 12.0, 0.74), (12, "fp32", 24.0, 0.80),
            (3, "int8", 4.0, 0.69), (6, "int8", 5.5, 0.735), (12, "int8", 11.0, 0.79)]


def _report(tmp_path: Path, with_top1: bool = True) -> Path:
    rep = sample_report("laptop", ks=(), model=SMALL)
    for k, precision, ms, top1 in MEASURED:
        folder = "onnx" if precision == "fp32" else f"onnx-{precision}"
        upsert_rows(rep, [make_row(k, "onnxruntime", f"{folder}/hydravit.onnx", target="onnx", mode="single",
                                   compute="cpu", precision=precision, **latency_stats([ms] * 5),
                                   **({"accuracy": {"dataset": "digits-test", "top1": top1}} if with_top1 else {}))])
    path = tmp_path / "laptop.json"
    save_report(rep, path)
    return path


def _loaded(paths):
    from hydravit_edge.bench.report import load_reports

    return load_reports(paths)


def test_build_merges_precisions_into_one_entry_and_marks_the_frontier(tmp_path):
    notes: list[str] = []
    [entry] = build_lut(_loaded([_report(tmp_path)]), on_note=notes.append)["devices"]
    assert entry["precision"] is None and entry["artifact"] is None  # rows of two precisions, two files
    got = [(r["k"], r["precision"], r["frontier"]) for r in entry["rows"]]
    # fp32 k=3 (6 ms, 70%) is dominated by int8 k=6 (5.5 ms, 73.5%), fp32 k=6 (12 ms, 74%) by int8 k=12 (11 ms, 79%)
    assert got == [(3, "fp32", False), (3, "int8", True), (6, "fp32", False), (6, "int8", True),
                   (12, "fp32", True), (12, "int8", True)]
    assert any("laptop onnxruntime/single/cpu/fp32+int8: export" in n for n in notes)
    lut = Lut.check(build_lut(_loaded([_report(tmp_path)])))
    dev = lut.device("laptop")
    assert dev.precisions == ["fp32", "int8"] and dev.ks == [3, 6, 12]
    assert [o.ref for o in dev.options if not o.frontier] == [(3, "fp32"), (6, "fp32")]
    assert dev.latency == {3: 6.0, 6: 12.0, 12: 24.0}  # the single-precision view: fp32
    assert dev.latency_at("int8") == {3: 4.0, 6: 5.5, 12: 11.0} and dev.latency_at("fp16") == {}
    assert dev.row(12, "int8").top1 == 0.79 and dev.row(12).precision == "fp32"
    d = dev.decide(PolicyInput(battery=35))  # medium band: k <= 6, or a p90 within k=6's slowest (12 ms)
    assert (d.k, d.precision, d.limit) == (12, "int8", "battery")
    assert "k=12 int8" in d.reason and "within k=6's 12 ms" in d.reason
    assert dev.decide(PolicyInput(battery=100)).precision == "fp32"  # 24 ms fits 33 ms: fp32 k=12, 80%


def test_without_top1_the_frontier_ranks_by_k(tmp_path):
    [entry] = build_lut(_loaded([_report(tmp_path, with_top1=False)]))["devices"]
    # a row is dominated by one of a larger-or-equal k at most as slow: fp32 3 (6 ms) by int8 6 (5.5 ms),
    # and at each k the slower precision by the faster one
    got = {(r["k"], r["precision"]): r["frontier"] for r in entry["rows"]}
    assert [kp for kp, on in got.items() if on] == [(3, "int8"), (6, "int8"), (12, "int8")]


def test_single_precision_entries_keep_their_precision_and_all_rows_on_the_frontier(tmp_path):
    path = tmp_path / "one.json"
    save_report(sample_report("laptop", model=SMALL), path)
    [entry] = build_lut(_loaded([path]))["devices"]
    assert entry["precision"] == "fp32" and all(r["frontier"] and r["precision"] == "fp32" for r in entry["rows"])


@pytest.mark.parametrize("rows, flags", [
    ([{"k": 3, "p90_ms": 5, "top1": 0.7}, {"k": 6, "p90_ms": 5, "top1": 0.7}], [True, True]),  # equal: both
    ([{"k": 3, "p90_ms": 5, "top1": 0.7}, {"k": 6, "p90_ms": 5, "top1": 0.71}], [False, True]),
    ([{"k": 3, "p90_ms": 5}, {"k": 6, "p90_ms": 5}], [False, True]),  # no top1: k decides
    ([{"k": 3, "p90_ms": 5, "top1": 0.9}, {"k": 6, "p90_ms": 4}], [False, True]),  # one without top1: k for all
    ([{"k": 3, "p90_ms": 4}, {"k": 6, "p90_ms": 5}, {"k": 12, "p90_ms": 9}], [True, True, True]),
])
def test_frontier_flags(rows, flags):
    assert frontier_flags(rows) == flags


def test_the_vectors_frontier_marks_are_the_builders():
    for name, lut in VECTORS["luts"].items():
        for dev in lut["devices"]:
            marks = [r.get("frontier") for r in dev["rows"]]
            if any(m is not None for m in marks):
                assert marks == frontier_flags(dev["rows"]), (name, dev["name"])


def _p_lut() -> dict:
    return copy.deepcopy(VECTORS["luts"]["P"])


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["devices"][0]["rows"].append(dict(d["devices"][0]["rows"][0])), "lists a k twice at one precision: 3@fp32"),
    # a row without a precision is the entry's (here fp16): two rows k=3 at fp16
    (lambda d: d["devices"][3]["rows"].append({"k": 3, "precision": "fp16", "p90_ms": 1, "latency_basis": "p90"}),
     "3@fp16"),
    (lambda d: [r.update(frontier=False) for r in d["devices"][1]["rows"]], "no row on its frontier"),
    (lambda d: d["devices"][0]["rows"][0].update(precision=""), "devices[0].rows[0].precision"),
    (lambda d: d["devices"][0]["rows"][0].update(frontier="yes"), "devices[0].rows[0].frontier"),
])
def test_precision_rows_validation(mutate, words):
    data = _p_lut()
    Lut.check(copy.deepcopy(data))  # the vectors' LUT is valid: one row per (k, precision)
    mutate(data)
    with pytest.raises(LutError) as info:
        Lut.check(data, where="lut.json")
    assert words in str(info.value)


def test_memory_budget_keeps_the_smallest_k_at_every_precision():
    data = _p_lut()
    dev = data["devices"][0]
    dev["memory_budget_mb"] = 100.0
    for r in dev["rows"]:
        r["rss_anon_mb"] = 50.0 * r["k"] / (2 if r["precision"] == "int8" else 1)
    options = Lut.check(data).device("mixed-phone").options
    # within 100 MB: only int8 k=3 (75 MB); fp32 k=3 (150 MB) stays as a row of the smallest k
    assert [o.ref for o in options] == [(3, "fp32"), (3, "int8")]


# ------------------------------------------------------------------ CLI

def _cli(args, capsys):
    from hydravit_edge.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, " ".join(out.out.split()), " ".join(out.err.split())


@pytest.fixture()
def p_lut(tmp_path) -> Path:
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(_p_lut()))
    return path


def test_pick_prints_the_precision(p_lut, capsys):
    code, out, err = _cli(["lut", "pick", "--lut", str(p_lut), "--device-name", "mixed-phone", "--battery", "35"],
                          capsys)
    assert code == 0, err
    assert "k = 9, precision int8" in out and "limited by: battery" in out and "top-1 77.0%" in out
    code, out, _ = _cli(["lut", "pick", "--lut", str(p_lut), "--device-name", "mixed-phone", "--battery", "52",
                         "--previous-k", "9", "--previous-precision", "fp32", "--json"], capsys)
    d = json.loads(out)
    assert (d["k"], d["precision"], d["limit"]) == (9, "fp32", "hysteresis")
    code, _, err = _cli(["lut", "pick", "--lut", str(p_lut), "--previous-precision", "int8"], capsys)
    assert code == 2 and "--previous-precision needs --previous-k" in err


def test_show_has_a_precision_column_and_the_frontier_mark(p_lut, capsys):
    code, out, err = _cli(["lut", "show", str(p_lut)], capsys)
    assert code == 0, err
    assert "precision" in out and "int8-static" not in out
    assert "(12 @74.0%)" in out  # mixed-phone has no marks; frontier-phone marks fp32 k=6 dominated
    assert "13 @79.0% f" in out and "f: on the entry's accuracy/latency frontier" in out
