"""The policy over (k, precision) options: forms it accepts, the rank, the cap in latency, references."""

from __future__ import annotations

import pytest

from hydravit_edge.policy import (
    PRECISION_ORDER, PolicyConfig, PolicyError, PolicyInput, PolicyOption, PolicyState, decide,
)
from hydravit_edge.policy_options import Ranking, as_options, parse_ref, resolve_ref

NO_BUDGET = PolicyConfig.from_dict({"budget_ms": None})

#: fp32 grows with k; int8 is faster and a little less accurate
OPTIONS = [PolicyOption(3, "fp32", 6.0, 0.70), PolicyOption(3, "int8", 4.0, 0.69),
           PolicyOption(6, "fp32", 12.0, 0.74), PolicyOption(6, "int8", 7.0, 0.735),
           PolicyOption(12, "fp32", 24.0, 0.80), PolicyOption(12, "int8", 11.0, 0.79)]


def test_precision_order_is_the_precision_table_order():
    from hydravit_edge.precision import precision_names

    assert PRECISION_ORDER == precision_names()


def test_old_call_style_is_every_k_at_fp32():
    d = decide({3: 4.0, 6: 9.0, 12: 40.0}, PolicyConfig(), PolicyInput(battery=80))
    assert (d.k, d.precision, d.limit, d.top1) == (6, "fp32", "budget", None)
    assert d.as_dict()["precision"] == "fp32" and d.cap_ms == 40.0
    assert "fp32" not in d.reason  # one precision: the reason names k only
    state = PolicyState({3: 1.0, 6: 2.0, 12: 3.0}, previous_k=6)
    assert state.previous_k == 6 and state.latency == {3: 1.0, 6: 2.0, 12: 3.0}
    assert state.update(PolicyInput(battery=52)).limit == "hysteresis"


def test_the_three_forms_agree():
    inp = PolicyInput(battery=35)
    by_pair = {(o.k, o.precision): o.p90_ms for o in OPTIONS}
    a, b = decide(OPTIONS, PolicyConfig(), inp), decide(by_pair, PolicyConfig(), inp)
    # with top1 (options) the most accurate allowed; without (pairs) the largest k, then the fastest
    assert (a.k, a.precision, a.top1) == (12, "int8", 0.79)
    assert (b.k, b.precision, b.top1) == (12, "int8", None)
    assert "k=12 int8" in a.reason and "within k=6's 12 ms" in a.reason


def test_the_cap_in_latency_is_the_slowest_option_of_cap_k():
    slower = [o if o.ref != (12, "int8") else PolicyOption(12, "int8", 12.5, 0.79) for o in OPTIONS]
    d = decide(slower, PolicyConfig(), PolicyInput(battery=35))  # 12.5 ms > k=6 fp32's 12 ms
    assert (d.k, d.precision, d.limit, d.cap_k, d.cap_ms) == (6, "fp32", "battery", 6, 12.0)
    equal = [o if o.ref != (12, "int8") else PolicyOption(12, "int8", 12.0, 0.79) for o in OPTIONS]
    assert decide(equal, PolicyConfig(), PolicyInput(battery=35)).k == 12  # inclusive


def test_unmeasured_latency_never_passes_the_latency_cap():
    """The runtime without a LUT runs the policy on p90 0: the caps in k must still hold."""
    state = PolicyState({3: 0.0, 6: 0.0, 12: 0.0}, NO_BUDGET)
    assert [state.update(PolicyInput(battery=b)).k for b in (100, 30, 10)] == [12, 6, 3]


def test_rank_ties_follow_the_precision_order():
    same = [PolicyOption(6, p, 5.0) for p in ("int8-static", "int8", "fp16", "fp32", "bf16")]
    assert decide(same, NO_BUDGET, PolicyInput(battery=100)).precision == "fp32"
    rank = Ranking(as_options(same))
    assert [o.precision for o in sorted(as_options(same), key=rank.order)] == [
        "fp32", "fp16", "int8", "int8-static", "bf16"]
    # lower p90 beats the precision order; top1 beats both when every candidate has it
    assert decide([PolicyOption(6, "fp32", 5.0), PolicyOption(6, "int8", 4.0)], NO_BUDGET,
                  PolicyInput(battery=100)).precision == "int8"
    assert decide([PolicyOption(3, "fp32", 5.0, 0.9), PolicyOption(6, "int8", 4.0, 0.8)], NO_BUDGET,
                  PolicyInput(battery=100)).k == 3
    # one candidate without top1: rank by k for all
    assert decide([PolicyOption(3, "fp32", 5.0, 0.9), PolicyOption(6, "int8", 4.0)], NO_BUDGET,
                  PolicyInput(battery=100)).k == 6


def test_off_frontier_options_are_not_candidates_but_count_for_the_caps():
    opts = OPTIONS + [PolicyOption(9, "fp32", 30.0, 0.76, frontier=False)]
    d = decide(opts, NO_BUDGET, PolicyInput(battery=100))
    assert (d.k, d.precision) == (12, "fp32")
    d = decide(opts, PolicyConfig(), PolicyInput(battery=100), previous="9@fp32")
    assert "previous k=9 fp32 is off the frontier, ignored" in d.reason
    with pytest.raises(PolicyError) as info:
        decide([PolicyOption(3, "fp32", 1.0, frontier=False)], NO_BUDGET, PolicyInput(battery=100))
    assert info.value.code == "empty_table"


def test_nothing_fits_takes_the_smallest_k_at_its_fastest_precision():
    d = decide(OPTIONS, PolicyConfig(), PolicyInput(battery=100, budget_ms=1))
    assert (d.k, d.precision, d.fits_budget, d.limit) == (3, "int8", False, "budget")
    assert "no option fits the 1 ms budget" in d.reason and "fastest precision" in d.reason


@pytest.mark.parametrize("value, ref", [
    (6, (6, None)), ("6@int8", (6, "int8")), (" 12 @ int8-static ", (12, "int8-static")),
    ({"k": 6, "precision": "fp16"}, (6, "fp16")), ({"k": 6}, (6, None)), ((6, "int8"), (6, "int8")),
    (PolicyOption(6, "int8", 1.0), (6, "int8")),
    ("six", None), ("6", None), (0, None), (True, None), ({"k": 6, "x": 1}, None), ({"k": "6"}, None), (6.0, None),
])
def test_option_references(value, ref):
    assert parse_ref(value) == ref


def test_a_bare_k_is_fp32_else_its_first_precision():
    opts = as_options([PolicyOption(6, "int8", 1.0), PolicyOption(6, "fp16", 2.0), PolicyOption(3, "fp32", 1.0),
                       PolicyOption(3, "int8", 0.5)])
    assert resolve_ref((3, None), opts).precision == "fp32"
    assert resolve_ref((6, None), opts).precision == "fp16"
    assert resolve_ref((6, "fp32"), opts) is None and resolve_ref((9, None), opts) is None


def test_materialized_and_previous_accept_references():
    inp = PolicyInput(battery=100, materialized=[6, "6@int8", {"k": 12, "precision": "int8"}], cold_switch_age_s=1)
    assert inp.checked().materialized == ((6, None), (6, "int8"), (12, "int8"))
    for bad in (["six"], ["6"], [{"k": 6, "x": 1}], "6@int8", [True]):
        with pytest.raises(PolicyError) as info:
            PolicyInput(battery=50, materialized=bad).checked()
        assert info.value.code == "invalid_switch_state", bad
    # materialised 6@int8, previous 6@int8: no rise onto unbuilt k=12 within 30 s of the last cold switch
    held = decide(OPTIONS, PolicyConfig(), PolicyInput(battery=100, materialized=["6@int8"], cold_switch_age_s=1),
                  previous={"k": 6, "precision": "int8"})
    assert (held.k, held.precision, held.limit, held.held) == (6, "int8", "switch_cost", True)
    with pytest.raises(PolicyError) as info:
        decide(OPTIONS, PolicyConfig(), PolicyInput(battery=100), previous="six")
    assert info.value.code == "invalid_previous"


def test_hysteresis_never_holds_an_option_over_the_budget():
    """Previous 12@fp32 ranks between low (3@fp32) and now (12@int8) but the 15 ms budget excludes it: low is held."""
    opts = [PolicyOption(3, "fp32", 6.0, 0.70), PolicyOption(12, "fp32", 24.0, 0.78), PolicyOption(12, "int8", 11.0, 0.79)]
    d = decide(opts, PolicyConfig(), PolicyInput(battery=52, budget_ms=15), previous="12@fp32")
    assert (d.k, d.precision, d.limit, d.fits_budget) == (3, "fp32", "hysteresis", True)
    d = decide(opts, PolicyConfig(), PolicyInput(battery=52, budget_ms=30), previous="12@fp32")
    assert (d.k, d.precision, d.limit) == (12, "fp32", "hysteresis")  # within 30 ms: the previous one stays
    state = PolicyState(opts, PolicyConfig())
    state.update(PolicyInput(battery=52))
    assert state.previous == (12, "int8") and state.previous_k == 12


@pytest.mark.parametrize("bad, words", [
    ([], "no rows"),
    ([PolicyOption(3, "fp32", 1.0), PolicyOption(3, "fp32", 2.0)], "twice: 3@fp32"),
    ([PolicyOption(0, "fp32", 1.0)], "k must be an integer >= 1"),
    ([PolicyOption(3, "", 1.0)], "precision must be a non-empty string"),
    ([PolicyOption(3, "fp32", -1.0)], "p90_ms must be a number >= 0"),
    ([PolicyOption(3, "fp32", 1.0, 1.5)], "top1 must be a fraction"),
    ({"3": 1.0}, "maps k"),
])
def test_bad_options(bad, words):
    with pytest.raises(PolicyError, match=words):
        decide(bad, PolicyConfig(), PolicyInput(battery=50))
