"""The import rules of the package layout, checked on the source (every import, also inside functions).

* The core package (``hydravit_edge/*.py`` and its subpackages: model, runtime, engines, contract,
  policy, ...) imports nothing from ``hydravit_edge.train``, ``.export`` or ``.bench``; only the CLI
  entry point (``hydravit_edge/cli.py``) may, to register their sub-apps.
* No import cycles anywhere: the module graph is acyclic.

The modules are found through ``[tool.setuptools.package-dir]`` of pyproject.toml (``train/`` is
``hydravit_edge.train`` and so on), so this needs nothing installed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hydravit_edge"
SIDE_PACKAGES = tuple(f"{PACKAGE}.{p}" for p in ("train", "export", "bench"))
#: core modules allowed to import the side packages
CORE_EXCEPTIONS = {f"{PACKAGE}.cli"}


def _package_dirs() -> dict[str, Path]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {pkg: ROOT / d for pkg, d in meta["tool"]["setuptools"]["package-dir"].items()}


def source_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of the distribution's packages."""
    dirs = _package_dirs()
    out: dict[str, Path] = {}
    for pkg, d in dirs.items():
        for f in sorted(d.rglob("*.py")):
            rel = f.relative_to(d).with_suffix("").parts
            name = ".".join((pkg, *rel))
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            # a file below a directory mapped to another package belongs to that one
            if any(other != pkg and other.startswith(pkg + ".") and name.startswith(other + ".")
                   for other in dirs):
                continue
            out[name] = f
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The module a dotted name refers to: itself, else its longest known prefix (an attribute of it)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``module`` imports anywhere in its source (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                prefix = f"{base}.{node.module}" if node.module else base
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{a.name}" for a in node.names]  # a submodule, or an attribute of prefix
        else:
            continue
        for n in names:
            if n == PACKAGE or n.startswith(PACKAGE + "."):
                target = _resolve(n, known)
                if target is not None and target != module:
                    out.add(target)
    return out


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = modules if modules is not None else source_modules()
    known = set(modules)
    return {m: imports_of(m, p, known) for m, p in modules.items()}


def _is_side(module: str) -> bool:
    return any(module == s or module.startswith(s + ".") for s in SIDE_PACKAGES)


def core_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items()
                  if not _is_side(m) and m not in CORE_EXCEPTIONS for t in targets if _is_side(t))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(out)


# --------------------------------------------------------------------------- the rules

def test_the_source_tree_is_found():
    mods = source_modules()
    for name in (f"{PACKAGE}.runtime", f"{PACKAGE}.engines.base", f"{PACKAGE}.train.trainer",
                 f"{PACKAGE}.export.base", f"{PACKAGE}.bench.worker", f"{PACKAGE}.cli"):
        assert name in mods, name


def test_core_imports_nothing_from_train_export_or_bench():
    bad = core_violations(import_graph())
    assert not bad, "the core package must not import train/, export/ or bench/ (only hydravit_edge/cli.py may):\n" \
                    + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_a_bad_import(tmp_path):
    """The same checks on a copy of the tree with a core->bench import that closes a cycle: both fire."""
    modules = source_modules()
    bad = tmp_path / "runtime.py"
    bad.write_text(modules[f"{PACKAGE}.runtime"].read_text() + "\nfrom hydravit_edge.bench import harness\n")
    modules[f"{PACKAGE}.runtime"] = bad
    graph = import_graph(modules)
    assert f"{PACKAGE}.runtime imports {PACKAGE}.bench.harness" in core_violations(graph)
    graph[f"{PACKAGE}.bench.harness"].add(f"{PACKAGE}.runtime")
    assert any(f"{PACKAGE}.runtime" in c and f"{PACKAGE}.bench.harness" in c for c in cycles(graph))


def test_every_package_is_in_the_distribution():
    """A subpackage missing from ``[tool.setuptools] packages`` works in the checkout and is absent from the wheel."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    packages = {m for m, p in source_modules().items() if p.name == "__init__.py"}
    assert packages <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(packages - listed)}"
