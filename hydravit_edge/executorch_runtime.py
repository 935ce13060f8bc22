"""ExecuTorch's Python runtime without ExecuTorch's compiler.

``import executorch.runtime`` (executorch 1.5) goes through
``executorch.extension.pybindings.portable_lib``, whose first line imports
``executorch.exir._warnings`` for one warning class.  Importing that submodule executes
``executorch/exir/__init__.py``: the whole ahead-of-time compiler (torch.export, dynamo,
inductor's pattern matcher, the edge dialect).  On the 2-core reference machine that is
5.8 s more start-up (7.7 s against 1.9 s) and ~220 MB more resident memory (765 against
544 MB for a digits-model ``.pte``) in every process that only runs a ``.pte`` -- each
benchmark measurement, each validation run, each latency probe -- and the benchmark would
report that memory as the artifact's.

:func:`import_runtime` imports the runtime with ``executorch.exir`` standing in as a bare
package (its ``__path__`` points at the real directory, so ``_warnings`` loads from its own
file), then removes the stand-in, so a
later ``import executorch.exir`` in the same process gets the real compiler.  If the runtime
ever needs more of ``exir`` than that, the import is retried the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

_EXIR = "executorch.exir"
_RUNTIME_MODULES = ("executorch.runtime", "executorch.extension.pybindings.portable_lib")


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in [n for n in sys.modules if n in prefixes or n.startswith(tuple(p + "." for p in prefixes))]:
        del sys.modules[name]


def _ordinary() -> Any:
    for m in _RUNTIME_MODULES:
        importlib.import_module(m)
    return sys.modules["executorch.runtime"]


def import_runtime() -> Any:
    """``executorch.runtime`` (``Runtime``, ``Program``, ``Method``), imported without the compiler.

    Also imports ``executorch.extension.pybindings.portable_lib`` (thread pool control).  When
    ``executorch.exir`` is already imported (a process that exports), the ordinary import is used.
    """
    if _EXIR in sys.modules or all(m in sys.modules for m in _RUNTIME_MODULES):
        return _ordinary()
    spec = importlib.util.find_spec(_EXIR)
    if spec is None or not spec.submodule_search_locations:  # not a package any more: nothing to skip
        return _ordinary()
    stub = types.ModuleType(_EXIR)
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__package__ = _EXIR
    sys.modules[_EXIR] = stub
    ok = False
    try:
        _ordinary()
        ok = True
    except Exception:  # the runtime wanted more of exir: undone below, then imported the ordinary way
        _forget(_RUNTIME_MODULES)
    finally:
        # the stand-in and what loaded through it go; the runtime keeps its own references
        _forget((_EXIR,))
        parent = sys.modules.get("executorch")
        if parent is not None and getattr(parent, "exir", None) is stub:
            delattr(parent, "exir")
    return sys.modules["executorch.runtime"] if ok else _ordinary()
