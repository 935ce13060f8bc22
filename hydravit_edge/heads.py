"""Parsing head-count selections such as ``3..12``, ``3,6,12`` or ``5``."""

from __future__ import annotations

from typing import Iterable, Sequence

from .errors import UsageError


def parse_heads(spec: str | int | Iterable[int], available: Sequence[int] | None = None) -> tuple[int, ...]:
    """Turn a heads argument into a sorted tuple of distinct head counts.

    Accepts ``"3..12"`` (inclusive range), ``"3,6,12"``, ``"5"``, an int, or an iterable of
    ints. With ``available`` given, every k must be one of them. Raises :class:`UsageError`.
    """
    if isinstance(spec, int):
        ks = [spec]
    elif isinstance(spec, str):
        text = spec.strip().replace(" ", "")
        if not text:
            raise UsageError("empty heads argument; use e.g. '3..12', '3,6,12' or '6'")
        try:
            if ".." in text:
                lo_s, hi_s = text.split("..", 1)
                lo, hi = int(lo_s), int(hi_s)
                if lo > hi:
                    raise UsageError(f"heads range '{spec}' is empty: {lo} > {hi}")
                ks = list(range(lo, hi + 1))
            else:
                parts = text.split(",")
                if "" in parts:
                    raise UsageError(f"cannot read heads '{spec}': an empty item in the list "
                                     "(use e.g. '3,6,12')")
                ks = [int(p) for p in parts]
        except ValueError:
            raise UsageError(
                f"cannot read heads '{spec}': use a range '3..12', a list '3,6,12' or one number '6'"
            ) from None
    else:
        try:
            ks = [int(k) for k in spec]
        except (TypeError, ValueError):
            raise UsageError(f"cannot read heads {spec!r}: expected integers") from None
    if not ks:
        raise UsageError(f"heads '{spec}' selects no head count")
    bad = [k for k in ks if k < 1]
    if bad:
        raise UsageError(f"head counts must be >= 1, got {bad}")
    if available is not None:
        missing = sorted(set(ks) - set(available))
        if missing:
            raise UsageError(
                f"head count(s) {missing} not available in this model; it has k in {format_heads(available)}"
            )
    return tuple(sorted(set(ks)))


def format_heads(ks: Sequence[int]) -> str:
    """Compact text for a set of head counts: ``3..12`` when contiguous, else ``3,6,12``."""
    ks = sorted(set(ks))
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}..{ks[-1]}"
    return ",".join(str(k) for k in ks)
