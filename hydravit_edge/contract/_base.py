"""What the three documents share: the pydantic base class, reading JSON, error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from hydravit_edge.errors import HydraEdgeError, not_found

__all__ = ["Model", "OpenModel", "Document", "read_json", "format_errors"]

D = TypeVar("D", bound="Document")


class Model(BaseModel):
    """A closed JSON object: unknown fields are an error, no type coercion ("3" is not 3, true is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, use_attribute_docstrings=True)


class OpenModel(Model):
    """A JSON object that may carry fields beyond the listed ones (kept as they are)."""

    model_config = ConfigDict(extra="allow")


def _path(loc: tuple) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "[" in str(p) or str(p) in ("int", "float", "str", "bool", "none", "list", "dict"):
            continue  # a union member or validator tag, not a JSON path step
        else:
            out += f".{p}" if out else str(p)
    return out


def _message(err: Mapping[str, Any]) -> tuple[str, str]:
    """(JSON path, message) of one pydantic error, worded like a JSON Schema validator."""
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing" and loc:
        return _path(loc[:-1]), f"'{loc[-1]}' is a required property"
    if kind == "extra_forbidden" and loc:
        return _path(loc[:-1]), f"additional property '{loc[-1]}' is not allowed"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind not in ("value_error", "assertion_error") and "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return _path(loc), msg


def format_errors(exc: ValidationError, where: str) -> str:
    """``where: path: message (and N more problems)`` for the first error pydantic found."""
    errors = exc.errors()
    path, msg = _message(errors[0])
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {path + ': ' if path else ''}{msg}{more}"


def read_json(path: Path, what: str, error: type[HydraEdgeError], missing: Optional[str] = None) -> Any:
    """The parsed JSON at ``path``; ``error`` with a clear message when it is absent, unreadable or not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise not_found(error, missing or f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a {what} JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


class Document(Model):
    """A top-level JSON document with one reader: :meth:`check` (a dict) and ``load`` (a file).

    The dict a document was validated from is kept (:attr:`data`): the toolkit passes the
    plain JSON on where it builds or merges documents, and writes exactly what it read.
    """

    #: error raised for a document that is missing, unreadable or invalid.
    error: ClassVar[type[HydraEdgeError]] = HydraEdgeError
    #: what the document is called in messages.
    what: ClassVar[str] = "document"
    _source: Optional[dict] = PrivateAttr(default=None)

    @classmethod
    def identify(cls, data: Any, where: str) -> None:
        """Checks before the schema: is it this kind of document, in a version this reader knows?"""

    @classmethod
    def check(cls: type[D], data: Any, where: Optional[str] = None) -> D:
        """Validate ``data`` (parsed JSON); raises :attr:`error` naming ``where``, the JSON path and the problem."""
        where = where or cls.what
        if not isinstance(data, dict):
            raise cls.error(f"{where}: not a hydravit-edge {cls.what} (expected a JSON object, got "
                            f"{type(data).__name__})")
        cls.identify(data, where)
        try:
            doc = cls.model_validate(data)
        except ValidationError as exc:
            raise cls.error(format_errors(exc, where)) from None
        doc._source = data
        return doc

    @property
    def data(self) -> dict:
        """The JSON object this document was validated from (its dump when built in Python)."""
        return self._source if self._source is not None else self.to_dict()

    def to_dict(self) -> dict:
        """The document as JSON data (fields that were not given are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)
