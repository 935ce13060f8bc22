"""The policy's candidates: (k, precision) options, the order that ranks them, and references to them.

An option is one row of a device's LUT entry: head count ``k`` at a ``precision`` with its p90
latency, and where known its top-1 accuracy and MACs, and whether the LUT puts it on the
entry's accuracy/latency frontier.  The policy (:mod:`hydravit_edge.policy`) takes them as

* a mapping ``{k: p90_ms}`` (the old form: every option fp32, no accuracy);
* a mapping ``{(k, precision): p90_ms}``;
* a sequence of :class:`PolicyOption`.

**Rank** (:class:`Ranking`, "more accurate" in the policy's rules), over one table's candidates:
highest ``top1`` when every candidate has one, else largest ``k``; ties: lower p90, then the
precision order :data:`PRECISION_ORDER` (fp32, fp16, int8, int8-static; a name outside it after
them, alphabetically), then larger k.

**References** (:func:`parse_ref`, for the previous option and ``materialized``): an int ``k``,
a string ``"k@precision"`` (``"12@int8"``), an object ``{"k": 12, "precision": "int8"}``, a
``(k, precision)`` pair or a :class:`PolicyOption`.  A bare ``k`` means k at fp32 where the
table has it, else at the first precision (in :data:`PRECISION_ORDER`) the table has for k
(:func:`resolve_ref`).

No torch, no numpy (:mod:`hydravit_edge.precision` imports numpy, so its order is repeated
here; ``tests/test_policy_precision.py`` checks the two agree).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .errors import UsageError

__all__ = ["PolicyError", "PRECISION_ORDER", "PolicyOption", "Ranking", "OptionRef", "as_options", "precision_rank", "parse_ref",
           "resolve_ref", "default_latency"]

#: The precisions in the order that breaks rank ties (the order of hydravit_edge.precision.PRECISIONS).
PRECISION_ORDER: tuple[str, ...] = ("fp32", "fp16", "int8", "int8-static")

#: (k, precision); precision None: "k at fp32, or its first precision" (:func:`resolve_ref`).
OptionRef = tuple[int, Optional[str]]

_REF = re.compile(r"^\s*(\d+)\s*@\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*$")


class PolicyError(UsageError):
    """Bad policy input or policy data (re-exported as :class:`hydravit_edge.policy.PolicyError`).  ``code`` is
    shared with the Kotlin/Swift ports and the vectors: ``invalid_battery``, ``invalid_thermal``,
    ``invalid_budget``, ``invalid_switch_state``, ``invalid_policy``, ``empty_table``, plus
    ``invalid_table`` (a bad option) and ``invalid_previous`` (a previous option of no accepted form)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PolicyOption:
    """One (k, precision) the policy may pick."""

    k: int
    precision: str = "fp32"
    p90_ms: float = 0.0
    """Latency compared with the budget; 0: not measured (the runtime's table without a LUT)."""
    top1: Optional[float] = None
    macs: Optional[int] = None
    """Carried for callers that show it; the rules do not read it."""
    frontier: bool = True
    """False: the LUT marks it dominated (another row is at least as fast and as accurate); not a candidate."""

    @property
    def ref(self) -> tuple[int, str]:
        return (self.k, self.precision)

    def label(self, with_precision: bool) -> str:
        return f"k={self.k} {self.precision}" if with_precision else f"k={self.k}"


def precision_rank(name: str) -> tuple[int, str]:
    """Sort key of a precision: its place in :data:`PRECISION_ORDER`, unknown names after, by name."""
    return (PRECISION_ORDER.index(name), "") if name in PRECISION_ORDER else (len(PRECISION_ORDER), name)


def _bad(message: str) -> PolicyError:
    return PolicyError("invalid_table", message)


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _option(item: Any) -> PolicyOption:
    if not isinstance(item, PolicyOption):
        raise _bad(f"a policy option must be a PolicyOption, got {item!r}")
    if isinstance(item.k, bool) or not isinstance(item.k, int) or item.k < 1:
        raise _bad(f"option k must be an integer >= 1, got {item.k!r}")
    if not isinstance(item.precision, str) or not item.precision:
        raise _bad(f"option precision must be a non-empty string, got {item.precision!r}")
    if not _finite(item.p90_ms) or item.p90_ms < 0:
        raise _bad(f"option k={item.k} {item.precision}: p90_ms must be a number >= 0, got {item.p90_ms!r}")
    if item.top1 is not None and (not _finite(item.top1) or not 0 <= item.top1 <= 1):
        raise _bad(f"option k={item.k} {item.precision}: top1 must be a fraction 0..1, got {item.top1!r}")
    return PolicyOption(item.k, item.precision, float(item.p90_ms), None if item.top1 is None else float(item.top1),
                        item.macs, bool(item.frontier))


def as_options(candidates: Union[Mapping[Any, float], Iterable[PolicyOption]]) -> tuple[PolicyOption, ...]:
    """The validated options of any accepted form (module docstring), sorted by (k, precision order).

    Raises (as the policy's error) ``empty_table`` when there are none and ``invalid_table`` for
    a bad option or one (k, precision) listed twice.
    """
    if isinstance(candidates, Mapping):
        items = []
        for key, p90 in candidates.items():
            k, precision = key if isinstance(key, tuple) and len(key) == 2 else (key, "fp32")
            if isinstance(k, bool) or not isinstance(k, int):
                raise _bad(f"a latency table maps k (or (k, precision)) to p90 ms; got key {key!r}")
            items.append(PolicyOption(int(k), precision, p90))
    else:
        items = list(candidates)
    options = [_option(o) for o in items]
    if not options:
        raise PolicyError("empty_table", "the lookup table has no rows for this device")
    refs = [o.ref for o in options]
    twice = sorted({r for r in refs if refs.count(r) > 1})
    if twice:
        raise _bad(f"the table lists (k, precision) twice: {', '.join(f'{k}@{p}' for k, p in twice)}")
    return tuple(sorted(options, key=lambda o: (o.k, precision_rank(o.precision))))


class Ranking:
    """The rank of one table's options (module docstring): a smaller ``order`` is a more preferred option."""

    def __init__(self, candidates: Sequence[PolicyOption]):
        #: rank by accuracy (every candidate has top1) or by k
        self.by_top1 = all(o.top1 is not None for o in candidates)

    def order(self, o: PolicyOption) -> tuple:
        return (-(o.top1 if self.by_top1 else o.k), o.p90_ms, precision_rank(o.precision), -o.k)

    def best(self, options: Iterable[PolicyOption]) -> PolicyOption:
        return min(options, key=self.order)

    def above(self, a: PolicyOption, b: PolicyOption) -> bool:
        """``a`` ranks higher than ``b`` (a move from b to a is a rise)."""
        return self.order(a) < self.order(b)

    @staticmethod
    def smallest_fastest(options: Iterable[PolicyOption]) -> PolicyOption:
        """The smallest k at its fastest precision (ties: the precision order)."""
        options = list(options)
        k0 = min(o.k for o in options)
        return min((o for o in options if o.k == k0), key=lambda o: (o.p90_ms, precision_rank(o.precision)))


def parse_ref(value: Any) -> Optional[OptionRef]:
    """An option reference from any accepted form (module docstring); None when ``value`` is none of them."""
    if isinstance(value, PolicyOption):
        return value.ref
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, None) if value >= 1 else None
    if isinstance(value, str):
        m = _REF.match(value)
        return (int(m.group(1)), m.group(2)) if m and int(m.group(1)) >= 1 else None
    if isinstance(value, Mapping):
        if set(value) - {"k", "precision"} or "k" not in value:
            return None
        k, precision = value["k"], value.get("precision")
        value = (k, precision)
    if isinstance(value, tuple) and len(value) == 2:
        k, precision = value
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            return None
        if precision is not None and (not isinstance(precision, str) or not precision):
            return None
        return (k, precision)
    return None


def resolve_ref(ref: OptionRef, options: Iterable[PolicyOption]) -> Optional[PolicyOption]:
    """The option ``ref`` names among ``options`` (None: not there).  A bare k: fp32, else k's first precision."""
    k, precision = ref
    at_k = [o for o in options if o.k == k]
    if precision is not None:
        return next((o for o in at_k if o.precision == precision), None)
    return min(at_k, key=lambda o: precision_rank(o.precision)) if at_k else None


def default_latency(options: Iterable[PolicyOption]) -> dict[int, float]:
    """k -> p90 ms of each k's default option (fp32 where present, else its first precision): the old table form."""
    options = list(options)
    out = {}
    for k in sorted({o.k for o in options}):
        o = resolve_ref((k, None), options)
        assert o is not None
        out[k] = o.p90_ms
    return out
