"""The JSON Schemas of the three documents, generated from their models.

The committed files are what the Kotlin and Swift apps (and their tests) read::

    python -m hydravit_edge.contract.schemas --write   # regenerate them after changing a model
    python -m hydravit_edge.contract.schemas --check   # exit 1 when a committed file is stale

``tests/test_contract.py`` runs the check.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic.json_schema import GenerateJsonSchema

from ._base import Document
from .lut import Lut
from .manifest import Manifest
from .report import Report

__all__ = ["SCHEMAS", "schema_path", "generate", "render", "stale", "write", "main"]

_ID = "https://github.com/hydravit-edge/hydravit-edge/"

#: document model -> (package holding the schema file, its path inside the repository)
SCHEMAS: dict[type[Document], tuple[str, str]] = {
    Manifest: ("hydravit_edge.export", "export/schemas/manifest.schema.json"),
    Report: ("hydravit_edge.bench", "bench/schemas/report.schema.json"),
    Lut: ("hydravit_edge", "hydravit_edge/schemas/lut.schema.json"),
}


def schema_path(model: type[Document]) -> Path:
    """Where the committed schema of ``model`` lives (found without importing export/ or bench/)."""
    package, rel = SCHEMAS[model]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "schemas" / Path(rel).name
    return Path(__file__).resolve().parents[2] / rel  # a source checkout


class _Generator(GenerateJsonSchema):
    """Pydantic's draft 2020-12 schema without a title on every property."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def _def_name(cls_name: str) -> str:
    """``ReportRow`` -> ``row``, ``TensorSpecModel`` -> ``tensor``, ``ValidationResultModel`` -> ``validation_result``."""
    name = re.sub(r"^(Report|Lut|Manifest)(?=[A-Z])", "", cls_name)
    name = re.sub(r"(Model|Entry)$", "", name)
    name = re.sub(r"(?<=[a-z])Spec$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _rename_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/$defs/" + names.get(v[len("#/$defs/"):], v[len("#/$defs/"):])
            else:
                out[k] = _rename_refs(v, names)
        return out
    if isinstance(node, list):
        return [_rename_refs(v, names) for v in node]
    return node


def generate(model: type[Document]) -> dict:
    """The JSON Schema (draft 2020-12) of ``model``, with readable ``$defs`` names."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_Generator)
    defs = raw.pop("$defs", {})
    names = {name: _def_name(name) for name in defs}
    if len(set(names.values())) != len(names):
        raise RuntimeError(f"two $defs of {model.__name__} get the same name: {sorted(names.values())}")
    _, rel = SCHEMAS[model]
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _ID + rel}
    schema.update(_rename_refs(raw, names))
    if defs:
        schema["$defs"] = {names[n]: _rename_refs(d, names) for n, d in defs.items()}
    return schema


def render(model: type[Document]) -> str:
    """The schema file's text."""
    return json.dumps(generate(model), indent=2, ensure_ascii=False) + "\n"


def stale(models: Optional[Sequence[type[Document]]] = None) -> list[Path]:
    """Committed schema files that differ from the generated ones (or are missing)."""
    out = []
    for model in models or list(SCHEMAS):
        path = schema_path(model)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(model):
            out.append(path)
    return out


def write(models: Optional[Sequence[type[Document]]] = None) -> list[Path]:
    """(Re)write the schema files; returns those that changed."""
    changed = []
    for model in models or list(SCHEMAS):
        path = schema_path(model)
        text = render(model)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydravit_edge.contract.schemas", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the committed schema files")
    group.add_argument("--check", action="store_true", help="exit 1 when a committed schema file is stale")
    args = parser.parse_args(argv)
    if args.write:
        for p in write():
            print(f"wrote {p}")
        return 0
    bad = stale()
    for p in bad:
        print(f"stale: {p} (run `python -m hydravit_edge.contract.schemas --write`)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
