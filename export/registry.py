"""The registry of export targets: one :class:`~.base.Exporter` class per row of
:data:`hydravit_edge.targets.TARGETS`, registered with :func:`register_exporter` by its module.

The target modules are imported on first use, in table order (``--target all`` and every table
follow it).  A module that is not part of this install (ImportError on the module itself) is
ignored; errors inside it are not.
"""

from __future__ import annotations

import importlib
from typing import Any

from hydravit_edge.errors import UsageError
from hydravit_edge.targets import MODES, TARGETS

__all__ = ["TARGET_MODULES", "register_exporter", "get_exporter", "exporters", "exporter_names"]

#: Modules that define (and register) targets, in table order (:data:`hydravit_edge.targets.TARGETS`).
TARGET_MODULES: list[str] = [t.module for t in TARGETS]

_REGISTRY: dict[str, type] = {}
_LOADED = False


def register_exporter(cls: type) -> type:
    """Class decorator: add a target to the registry under ``cls.name``."""
    if not cls.name or not isinstance(cls.name, str):
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if not cls.suffix:
        raise TypeError(f"{cls.__name__} needs a class attribute 'suffix'")
    bad = set(cls.modes) - set(MODES)
    if bad:
        raise TypeError(f"{cls.__name__}.modes has unknown modes {sorted(bad)}")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"target '{cls.name}' registered twice ({other.__qualname__}, {cls.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_targets() -> None:
    global _LOADED
    if _LOADED:
        return
    for mod in TARGET_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:  # the target module is not part of this install
                continue
            raise
    _LOADED = True


def exporter_names() -> list[str]:
    """Registered targets in table order."""
    _load_targets()
    order = {m.rsplit(".", 1)[-1]: i for i, m in enumerate(TARGET_MODULES)}
    return sorted(_REGISTRY, key=lambda n: (order.get(n, len(order)), n))


def get_exporter(name: str) -> Any:
    """An instance of the target ``name``; unknown names are a :class:`UsageError` listing the choices."""
    _load_targets()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise UsageError(f"unknown target '{name}'; choose one of {', '.join(exporter_names() + ['all'])}")
    return cls()


def exporters() -> list[Any]:
    return [get_exporter(n) for n in exporter_names()]
