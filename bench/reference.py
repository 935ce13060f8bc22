"""The paper's published A100 reference next to measured reports: only for a model of its geometry.

The reference (``bench/data/reference_a100_paper.json``) holds the full-size model's figures
(12 heads x 64, depth 12, 224 px, patch 16).  ``bench report`` and ``lut build`` add it where a
measured export has that geometry, and say in one line why they leave it out otherwise.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from hydravit_edge.contract.report import GEOMETRY_FIELDS

from .report import load_reference

__all__ = ["model_geometry", "same_geometry", "describe_geometry", "reference_if_matching"]


def model_geometry(model: Optional[Mapping[str, Any]]) -> dict[str, int]:
    """The :data:`~hydravit_edge.contract.report.GEOMETRY_FIELDS` a report's model section states
    (directly or in its ``config``)."""
    if not model:
        return {}
    cfg = model.get("config") or {}
    out = {}
    for name in GEOMETRY_FIELDS:
        value = model.get(name)
        if value is None:
            value = cfg.get(name)
        if value is not None:
            out[name] = value
    return out


def same_geometry(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> bool:
    """Both model sections state every geometry field, and they agree."""
    ga, gb = model_geometry(a), model_geometry(b)
    return all(name in ga and name in gb and ga[name] == gb[name] for name in GEOMETRY_FIELDS)


def describe_geometry(model: Optional[Mapping[str, Any]]) -> str:
    """``12 heads x 64, depth 12, 224 px, patch 16`` (``?`` for what the section does not say)."""
    g = model_geometry(model)
    if not g:
        return "of unstated geometry"
    v = {name: g.get(name, "?") for name in GEOMETRY_FIELDS}
    return (f"{v['num_heads']} heads x {v['head_dim']}, depth {v['depth']}, {v['img_size']} px, "
            f"patch {v['patch_size']}")


def reference_if_matching(models: Sequence[Optional[Mapping[str, Any]]]) -> tuple[Optional[dict], Optional[str]]:
    """The published reference report when its model has the geometry of one of ``models`` (the measured ones).

    Otherwise ``(None, one line saying it was left out and why)``.  With no measured model at all
    the reference is returned (there is nothing it could be mistaken for).
    """
    ref = load_reference()
    if not models or any(same_geometry(ref.get("model"), m) for m in models):
        return ref, None
    measured = list(dict.fromkeys(describe_geometry(m) for m in models))
    return None, (f"the published {ref['device']['name']} reference is left out: its model is "
                  f"{describe_geometry(ref.get('model'))}, the measured one{'s are' if len(measured) > 1 else ' is'} "
                  f"{'; '.join(measured)}")
