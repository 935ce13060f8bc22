"""Which subnetwork each optimisation step trains.

Every step draws one head count ``k`` from ``heads``, uniformly or in proportion to
``weights``.  The draw is a pure function of ``(seed, step)`` (NumPy's ``SeedSequence``
mixes the pair into a fresh PCG64 stream), so

* every rank of a distributed run draws the same ``k`` at every step without talking to
  the others (each gradient all-reduce averages the same subnetwork);
* a resumed run continues the exact sequence: the sampler state is just ``(heads,
  weights, seed, step)``;
* the sequence does not depend on how many draws were made before, or in which order.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from hydravit_edge.errors import UsageError

__all__ = ["HeadSampler", "parse_weights"]


def parse_weights(spec: str | Iterable[float] | None, heads: Sequence[int]) -> tuple[float, ...] | None:
    """Validate sampling weights for ``heads``: as many positive finite numbers as heads.

    ``spec`` is ``"25,30,45"`` or a sequence of numbers; ``None`` (or an empty string) means uniform.
    They need not sum to 1 (they are normalised).  Raises :class:`UsageError`.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip().replace(" ", "")
        if not text:
            return None
        try:
            values = [float(p) for p in text.split(",")]
        except ValueError:
            raise UsageError(f"cannot read --weights '{spec}': give comma-separated numbers, e.g. 25,30,45") from None
    else:
        try:
            values = [float(v) for v in spec]
        except (TypeError, ValueError):
            raise UsageError(f"cannot read weights {spec!r}: expected numbers") from None
    heads = list(heads)
    if len(values) != len(heads):
        raise UsageError(
            f"--weights has {len(values)} value(s) but --heads selects {len(heads)} head count(s) {heads}; "
            "give one weight per head count, in the same order"
        )
    if any(not math.isfinite(v) for v in values):
        raise UsageError(f"--weights must be finite numbers, got {values}")
    negative = [v for v in values if v < 0]
    if negative:
        raise UsageError(f"--weights must not be negative, got {values}")
    if sum(values) <= 0:
        raise UsageError(f"--weights are all zero ({values}); at least one head count must have a positive weight")
    zero = [k for k, v in zip(heads, values) if v == 0]
    if zero:
        raise UsageError(
            f"--weights gives head count(s) {zero} weight 0, so they would never be trained; "
            "drop them from --heads instead"
        )
    return tuple(values)


class HeadSampler:
    """Deterministic per-step head-count sampler: ``k = sampler.k_at(step)``."""

    def __init__(self, heads: Sequence[int], weights: Sequence[float] | None = None, seed: int = 0,
                 step: int = 0) -> None:
        self.heads = tuple(int(k) for k in heads)
        if not self.heads:
            raise UsageError("the head sampler needs at least one head count")
        self.weights = parse_weights(weights, self.heads) if weights is not None else None
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        w = np.ones(len(self.heads)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        self.probs = w / w.sum()
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0
        self.step = int(step)

    def k_at(self, step: int) -> int:
        """The head count of optimisation step ``step`` (0-based, counted over the whole run)."""
        if len(self.heads) == 1:
            return self.heads[0]
        u = np.random.default_rng((self.seed, int(step))).random()
        return self.heads[int(np.searchsorted(self._cdf, u, side="right"))]

    def sequence(self, start: int, count: int) -> list[int]:
        return [self.k_at(s) for s in range(start, start + count)]

    def next(self) -> int:
        """The head count of the current step; advances the step counter."""
        k = self.k_at(self.step)
        self.step += 1
        return k

    # ---- checkpointing ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"heads": list(self.heads), "weights": None if self.weights is None else list(self.weights),
                "seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        heads = tuple(int(k) for k in state["heads"])
        weights = None if state.get("weights") is None else tuple(float(w) for w in state["weights"])
        if heads != self.heads or weights != self.weights or int(state["seed"]) != self.seed:
            raise UsageError(
                f"saved head sampler (heads {list(heads)}, weights {weights}, seed {state['seed']}) does not match "
                f"this run (heads {list(self.heads)}, weights {self.weights}, seed {self.seed})"
            )
        self.step = int(state["step"])

    def __repr__(self) -> str:
        probs = ", ".join(f"{k}:{p:.3f}" for k, p in zip(self.heads, self.probs))
        return f"HeadSampler(seed={self.seed}, step={self.step}, p={{{probs}}})"
