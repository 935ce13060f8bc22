"""The slicing table: how subnetwork k is cut from every parameter of a HydraViT.

One table per model (:func:`slicing_table`); the sliced forward, ``subnet(k)``, ``narrow(kmax)``,
the corner copy of narrower checkpoints and the single-artifact exporters all take their cuts
from it.  It is plain data (``SliceTable.to_dict()``, JSON Schema in
``hydravit_edge/schemas/slicing.schema.json``), so a runtime without PyTorch cuts any k out of the
full weights with :func:`cut` or its own few lines.  The JSON form::

    {"format": "hydravit-slicing", "version": 1, "num_heads": 4, "head_dim": 8, "heads": [1, 2, 3, 4],
     "mlp_ratio": 4.0,
     "units": {"e": [8, 16, 24, 32], "h": [32, 64, 96, 128]},
     "rules": {"qkv.weight": {"axes": [[{"start": 0, "length": 1, "unit": "e"},
                                        {"start": 32, "length": 1, "unit": "e"},
                                        {"start": 64, "length": 1, "unit": "e"}],
                                       [{"start": 0, "length": 1, "unit": "e"}]]},
               "whole": {"axes": null}, ...},
     "params": {"blocks.0.attn.qkv.weight": {"rule": "qkv.weight", "shape": [96, 32],
                                             "subnet_key": null, "heads": null}, ...}}

To cut subnetwork k (one of ``heads``) from the full tensor ``W`` of parameter ``P``:

* ``rule = rules[params[P].rule]``; ``axes`` null: ``W`` is used whole;
* otherwise axis ``a`` keeps the ranges ``axes[a]``, in order: range ``r`` is the elements
  ``[r.start, r.start + n)`` with ``n = r.length * units[r.unit][k - 1]``, or ``n = r.length``
  when ``unit`` is null; several ranges on one axis are concatenated (at most one axis per rule
  has several: the q, k and v thirds of ``qkv``, at row offsets 0, D and 2D);
* the result is subnetwork k's ``params[P].subnet_key`` (null: ``P``) -- the timm ViT key of
  ``model.subnet(k)`` -- when ``params[P].heads`` is null or lists k, and is not part of it otherwise.

Units: ``e`` = head_dim*k (the width), ``h`` = int(head_dim*k*mlp_ratio) (timm's MLP hidden width;
listed, so readers need no floating point).  Importing this module needs pydantic only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Mapping, NamedTuple, Optional, Union

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt, model_validator

from .errors import UsageError

__all__ = ["FORMAT", "SCHEMA_PATH", "Range", "Rule", "Param", "SliceTable", "Cut", "units", "slicing_table",
           "cut", "schema", "render_schema"]

FORMAT = "hydravit-slicing"
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "slicing.schema.json"
_SCHEMA_ID = "https://github.com/hydravit-edge/hydravit-edge/hydravit_edge/schemas/slicing.schema.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, use_attribute_docstrings=True,
                              frozen=True)


class Range(_Model):
    """Elements ``[start, start + length * units[unit][k-1])`` of one axis (``length`` elements when unit is null)."""

    start: NonNegativeInt
    length: NonNegativeInt
    unit: Optional[str] = None
    """A key of ``units`` (``e``: head_dim*k, ``h``: MLP hidden width), or null for a fixed length."""


class Rule(_Model):
    """How one kind of parameter is cut: per axis the ranges kept, concatenated in order."""

    axes: Optional[list[list[Range]]]
    """One list of ranges per tensor axis; null: the tensor is used whole."""


class Param(_Model):
    """One parameter of the full model (its state-dict key is the key of this entry)."""

    rule: str
    """A key of ``rules``."""
    shape: list[NonNegativeInt]
    """Shape of the full parameter."""
    subnet_key: Optional[str] = None
    """Key of the cut in subnetwork k's state dict; null: the same key."""
    heads: Optional[list[PositiveInt]] = None
    """The k whose subnetwork uses this parameter; null: every k."""


class Cut(NamedTuple):
    """A rule resolved for one k: what :func:`take` and the exporters index with."""

    ranges: Optional[tuple[tuple[tuple[Any, Any], ...], ...]]
    """Per axis the ``(start, stop)`` ranges; None: whole."""
    axis: Optional[int]
    """The axis whose ranges are concatenated (None: one range per axis)."""
    pieces: tuple[tuple, ...]
    """One index tuple of slices per piece, in concatenation order (``(Ellipsis,)`` when whole)."""
    joined: Optional[tuple]
    """One index for the whole cut when there is one piece or the pieces lie end to end; else None."""

    def shape(self, full_shape) -> tuple:
        """Shape of the cut of a tensor of ``full_shape``."""
        if self.ranges is None:
            return tuple(full_shape)
        return tuple(sum(b - a for a, b in rs) for rs in self.ranges)


def _resolve(rule: Rule, u: Mapping[str, Any]) -> Cut:
    if rule.axes is None:
        return Cut(None, None, ((Ellipsis,),), (Ellipsis,))
    ranges = tuple(tuple((r.start, r.start + r.length * (u[r.unit] if r.unit else 1)) for r in rs) for rs in rule.axes)
    multi = [a for a, rs in enumerate(ranges) if len(rs) > 1]
    axis = multi[0] if multi else None
    base = [slice(*rs[0]) for rs in ranges]
    if axis is None:
        return Cut(ranges, None, (tuple(base),), tuple(base))
    pieces = tuple(tuple(base[:axis]) + (slice(a, b),) + tuple(base[axis + 1:]) for a, b in ranges[axis])
    joined = None
    spans = ranges[axis]
    # end to end (only decidable for int bounds, not for a symbolic k): one slice, a view
    ints = all(isinstance(x, int) for ab in spans for x in ab)
    if ints and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1)):
        joined = tuple(base[:axis]) + (slice(spans[0][0], spans[-1][1]),) + tuple(base[axis + 1:])
    return Cut(ranges, axis, pieces, joined)


class SliceTable(_Model):
    """For every parameter of a HydraViT, how subnetwork k (one of ``heads``) is cut from it.

    Parameter P's cut at k: with ``rule = rules[params[P].rule]``, the whole tensor when
    ``rule.axes`` is null, else on every axis a the ranges ``rule.axes[a]``, concatenated in order.
    It is subnetwork k's ``params[P].subnet_key`` (null: P) when ``params[P].heads`` is null or holds k.
    """

    format: Literal["hydravit-slicing"] = FORMAT
    version: Literal[1] = 1
    num_heads: PositiveInt
    head_dim: PositiveInt
    heads: list[PositiveInt]
    """The k that can be cut: 1..num_heads, or those with a separate classifier."""
    mlp_ratio: float
    """Informational: the ``h`` unit is listed per k."""
    units: dict[str, list[NonNegativeInt]]
    """``units[u][k-1]``: unit ``u`` at k heads, for k = 1..num_heads."""
    rules: dict[str, Rule]
    params: dict[str, Param]
    """Every parameter of the full model, in state-dict order."""

    @model_validator(mode="after")
    def _check(self) -> "SliceTable":
        if any(not 1 <= k <= self.num_heads for k in self.heads):
            raise ValueError(f"heads {self.heads} must lie in 1..{self.num_heads}")
        for u, vals in self.units.items():
            if len(vals) != self.num_heads:
                raise ValueError(f"units.{u} has {len(vals)} entries, expected num_heads={self.num_heads}")
        for name, rule in self.rules.items():
            for rs in rule.axes or []:
                for r in rs:
                    if r.unit is not None and r.unit not in self.units:
                        raise ValueError(f"rule {name}: unit {r.unit!r} is not one of {sorted(self.units)}")
            if rule.axes is not None and sum(len(rs) > 1 for rs in rule.axes) > 1:
                raise ValueError(f"rule {name}: more than one axis has several ranges")
        for name, p in self.params.items():
            rule = self.rules.get(p.rule)
            if rule is None:
                raise ValueError(f"params.{name}: rule {p.rule!r} is not one of {sorted(self.rules)}")
            if rule.axes is not None and len(rule.axes) != len(p.shape):
                raise ValueError(f"params.{name}: rule {p.rule} has {len(rule.axes)} axes, the tensor {len(p.shape)}")
            if any(not 1 <= k <= self.num_heads for k in p.heads or ()):
                raise ValueError(f"params.{name}: heads {p.heads} must lie in 1..{self.num_heads}")
        for k in range(1, self.num_heads + 1):
            cuts = self.cuts(self.widths(k))
            for name, p in self.params.items():
                for rs, n in zip(cuts[p.rule].ranges or (), p.shape):
                    if any(not 0 <= a <= b <= n for a, b in rs):
                        raise ValueError(f"params.{name}: ranges {list(rs)} at k={k} leave its axis of {n}")
        return self

    # ---- resolving ---------------------------------------------------------------
    def widths(self, k: int) -> dict[str, int]:
        """The units at k heads, from the listed values."""
        if not 1 <= k <= self.num_heads:
            raise UsageError(f"heads={k} is outside 1..{self.num_heads}")
        return {u: vals[k - 1] for u, vals in self.units.items()}

    def cuts(self, u: Mapping[str, Any]) -> dict[str, Cut]:
        """Every rule resolved for the unit values ``u`` (ints, or symbolic ints while tracing)."""
        return {name: _resolve(rule, u) for name, rule in self.rules.items()}

    def cut_of(self, name: str, k: int) -> Cut:
        """The cut of parameter ``name`` for subnetwork k."""
        return _resolve(self.rules[self.params[name].rule], self.widths(k))

    def subnet_params(self, k: int) -> dict[str, str]:
        """``{key in subnetwork k's state dict: full parameter}`` in state-dict order."""
        if k not in self.heads:
            raise UsageError(f"heads={k} cannot be cut from this model; it offers k in {self.heads}")
        out = {}
        for name, p in self.params.items():
            if p.heads is None or k in p.heads:
                out[p.subnet_key or name] = name
        return out

    def check_shapes(self, shapes: Mapping[str, Any]) -> None:
        """Raise RuntimeError unless ``shapes`` (a state dict's) has exactly the table's parameters and shapes."""
        got = {n: list(s) for n, s in shapes.items()}
        want = {n: p.shape for n, p in self.params.items()}
        if got != want:
            diff = sorted(set(got) ^ set(want)) or sorted(n for n in got if got[n] != want.get(n))
            raise RuntimeError("the slicing table does not describe this model's parameters "
                               f"(first differences: {diff[:4]})")

    # ---- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Union[Mapping[str, Any], "SliceTable"]) -> "SliceTable":
        return d if isinstance(d, SliceTable) else cls.model_validate(dict(d))


def units(config, k) -> dict[str, Any]:
    """The per-k widths the rules use: ``e`` = ``config.width(k)``, ``h`` = ``config.mlp_hidden(k)``.

    ``k`` may be symbolic (``torch.export`` with a dynamic head count).
    """
    return {"e": config.width(k), "h": config.mlp_hidden(k)}


def _rules(config) -> dict[str, Rule]:
    D, C, P = config.embed_dim, config.num_classes, config.patch_size

    def r(start: int, length: int, unit: Optional[str] = None) -> list[Range]:
        return [Range(start=start, length=length, unit=unit)]

    e, h = r(0, 1, "e"), r(0, 1, "h")
    thirds = [Range(start=i * D, length=1, unit="e") for i in range(3)]  # q, k, v rows of the first k heads
    return {
        "token": Rule(axes=[r(0, 1), r(0, 1), e]),
        "pos_embed": Rule(axes=[r(0, 1), r(0, config.num_tokens), e]),
        "patch.weight": Rule(axes=[e, r(0, config.in_chans), r(0, P), r(0, P)]),
        "features": Rule(axes=[e]),  # patch bias, LayerNorms, proj / fc2 biases, LayerScale gammas
        "qkv.weight": Rule(axes=[thirds, e]),
        "qkv.bias": Rule(axes=[thirds]),
        "proj.weight": Rule(axes=[e, e]),
        "fc1.weight": Rule(axes=[h, e]),
        "fc1.bias": Rule(axes=[h]),
        "fc2.weight": Rule(axes=[e, h]),
        "head.weight": Rule(axes=[r(0, C), e]),
        "whole": Rule(axes=None),  # shared classifier bias, separate classifier of k, qk-norm (per head)
    }


def slicing_table(config, *, layer_scale: bool = False, qk_norm: bool = False) -> SliceTable:
    """The slicing table of ``HydraViT(config)`` (``layer_scale``: timm ``init_values``; ``qk_norm``).

    Raises :class:`UsageError` when a subnetwork's MLP width does not fit inside the full one.
    """
    H, D, hd, C = config.num_heads, config.embed_dim, config.head_dim, config.num_classes
    per_k = [units(config, k) for k in range(1, H + 1)]
    hidden = [u["h"] for u in per_k]
    for k in range(1, H + 1):
        if hidden[k - 1] < 1 or (k > 1 and hidden[k - 1] < hidden[k - 2]) or hidden[k - 1] > hidden[-1]:
            raise UsageError(
                f"mlp_ratio={config.mlp_ratio} gives MLP widths {hidden} for k=1..{H} (int(head_dim*k*mlp_ratio)); "
                "each must be >= 1 and lie inside the next wider one")
    Hf = hidden[-1]
    params: dict[str, Param] = {}

    def add(name: str, rule: str, shape, **kw) -> None:
        params[name] = Param(rule=rule, shape=list(shape), **kw)

    add("cls_token", "token", (1, 1, D))
    add("pos_embed", "pos_embed", (1, config.num_tokens, D))
    add("patch_embed.proj.weight", "patch.weight", (D, config.in_chans, config.patch_size, config.patch_size))
    add("patch_embed.proj.bias", "features", (D,))
    for i in range(config.depth):
        b = f"blocks.{i}."
        add(b + "norm1.weight", "features", (D,))
        add(b + "norm1.bias", "features", (D,))
        add(b + "attn.qkv.weight", "qkv.weight", (3 * D, D))
        add(b + "attn.qkv.bias", "qkv.bias", (3 * D,))
        if qk_norm:
            for n in ("q_norm", "k_norm"):
                add(b + f"attn.{n}.weight", "whole", (hd,))
                add(b + f"attn.{n}.bias", "whole", (hd,))
        add(b + "attn.proj.weight", "proj.weight", (D, D))
        add(b + "attn.proj.bias", "features", (D,))
        if layer_scale:
            add(b + "ls1.gamma", "features", (D,))
        add(b + "norm2.weight", "features", (D,))
        add(b + "norm2.bias", "features", (D,))
        add(b + "mlp.fc1.weight", "fc1.weight", (Hf, D))
        add(b + "mlp.fc1.bias", "fc1.bias", (Hf,))
        add(b + "mlp.fc2.weight", "fc2.weight", (D, Hf))
        add(b + "mlp.fc2.bias", "features", (D,))
        if layer_scale:
            add(b + "ls2.gamma", "features", (D,))
    add("norm.weight", "features", (D,))
    add("norm.bias", "features", (D,))
    shared = [] if config.separate_heads else None  # separate classifiers: no subnetwork uses the shared one
    add("head.weight", "head.weight", (C, D), heads=shared)
    add("head.bias", "whole", (C,), heads=shared)
    if config.separate_heads:
        for k in config.heads:
            add(f"head_k.{k}.weight", "whole", (C, hd * k), subnet_key="head.weight", heads=[k])
            add(f"head_k.{k}.bias", "whole", (C,), subnet_key="head.bias", heads=[k])
    ks = list(config.heads) if config.separate_heads else list(range(1, H + 1))
    return SliceTable(num_heads=H, head_dim=hd, heads=ks, mlp_ratio=float(config.mlp_ratio),
                      units={u: [x[u] for x in per_k] for u in per_k[0]}, rules=_rules(config), params=params)


# ---- torch-free cut ------------------------------------------------------------------

def take(array, c: Cut, concat=None):
    """``array`` cut by ``c``: a view when the cut is one piece, else the pieces concatenated.

    ``concat(parts, axis)`` defaults to ``numpy.concatenate``.
    """
    if c.joined is not None:
        return array[c.joined]
    if concat is None:
        import numpy as np

        concat = np.concatenate
    return concat([array[i] for i in c.pieces], c.axis)


def cut(table: Union[SliceTable, Mapping[str, Any]], full_weights: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Subnetwork k's state dict (numpy arrays, timm ViT keys) cut from the full model's weights.

    ``table`` is a :class:`SliceTable` or its JSON form; needs numpy, not torch.
    """
    import numpy as np

    table = SliceTable.from_dict(table)
    u = table.widths(k)
    rules = table.cuts(u)
    out = {}
    for key, name in table.subnet_params(k).items():
        w = np.asarray(full_weights[name])
        if list(w.shape) != table.params[name].shape:
            raise UsageError(f"{name} has shape {tuple(w.shape)}, the slicing table says "
                             f"{tuple(table.params[name].shape)}")
        out[key] = np.array(take(w, rules[table.params[name].rule]), order="C", copy=True)
    return out


# ---- schema -------------------------------------------------------------------------

def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`SliceTable`."""
    from pydantic.json_schema import GenerateJsonSchema

    class _NoTitles(GenerateJsonSchema):
        def field_title_should_be_set(self, schema) -> bool:
            return False

    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _SCHEMA_ID}
    out.update(SliceTable.model_json_schema(schema_generator=_NoTitles))
    return out


def render_schema() -> str:
    """The text of ``schemas/slicing.schema.json`` (``python -m hydravit_edge.slicing`` writes it)."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
