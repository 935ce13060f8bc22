"""The accuracy/latency frontier of a LUT device entry's rows (``frontier`` of each LUT row).

A row is on the frontier unless another row of the entry DOMINATES it: a p90 latency no higher
and an accuracy no lower, and strictly better in at least one of the two.  Accuracy is ``top1``
when every row of the entry has one; otherwise it is ``k`` for every row (more heads: more
accurate, as HydraViT's subnetworks are), so a row is dominated by one of a larger-or-equal k
that is at least as fast.  Rows equal in both (two precisions measured the same) are both on
it; the policy breaks that tie by the precision order.

With one precision whose latency grows with k, every row is on the frontier.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["frontier_flags", "mark_frontier"]


def frontier_flags(rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Per row (``k``, ``p90_ms``, optional ``top1``): on the frontier."""
    by_top1 = bool(rows) and all(r.get("top1") is not None for r in rows)
    points = [(float(r["p90_ms"]), float(r["top1"] if by_top1 else r["k"])) for r in rows]

    def dominated(i: int) -> bool:
        p90, acc = points[i]
        return any(q <= p90 and a >= acc and (q < p90 or a > acc) for j, (q, a) in enumerate(points) if j != i)

    return [not dominated(i) for i in range(len(points))]


def mark_frontier(rows: Sequence[dict]) -> None:
    """Set ``frontier`` on each row of one entry, in place."""
    for row, flag in zip(rows, frontier_flags(rows)):
        row["frontier"] = flag
