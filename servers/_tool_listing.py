"""The tool list as agents read it: the schemas pydantic derives, without what tells an agent nothing.

Every token of ``tools/list`` is paid in each agent turn. :func:`lean_tools` rewrites the listed
tools' input and output schemas into equivalent, shorter JSON Schema:

* no ``title``: pydantic derives it from the name beside it (``"limit": {"title": "Limit"}``);
* a choice of plain types is ``"type": ["string", "null"]``, not ``anyOf`` with a branch per type (a
  ``$ref``, ``enum`` or ``const`` branch keeps the ``anyOf``);
* an input that defaults to null lists no null (leaving the argument out says as much) and no
  ``"default": null``; on outputs no defaults and
  no ``required``, since every key is always sent; no ``"additionalProperties": true`` and no empty
  ``items``, which are what JSON Schema assumes anyway;
* an output description is given once per listing (the first tool that carries it), as an agent
  reads the listing whole; no reStructuredText markup (````code````) in descriptions;
* annotations without the hints MCP reads only for tools that write (``destructiveHint``,
  ``idempotentHint``) when the tool is read-only.

Descriptions may name a guardrail as ``{max_rows}`` (any field of :class:`~catalog.query.Limits`): the
listing states the deployment's value, so the limits an agent reads are the limits it meets. The
arguments a call sends are still checked against the tool's own (full) model, not this listing.
"""

from __future__ import annotations

from typing import Any

from mcp_types import Tool

from catalog.query import Limits

__all__ = ["lean_tools"]

_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
_NOT_MERGEABLE = frozenset({"enum", "const", "$ref", "anyOf", "oneOf", "allOf", "not"})


def lean_tools(tools: list[Tool], limits: Limits) -> list[Tool]:
    """``tools`` with lean schemas, their descriptions stating ``limits``."""
    values = {f"{{{name}}}": _shown(value) for name, value in limits.model_dump().items()}
    said: set[str] = set()  # output descriptions already given in this listing
    return [_lean_tool(tool, values, said) for tool in tools]


def _lean_tool(tool: Tool, values: dict[str, str], said: set[str]) -> Tool:
    annotations = tool.annotations
    if annotations is not None and annotations.read_only_hint:
        annotations = annotations.model_copy(update={"destructive_hint": None, "idempotent_hint": None})
    output = None if tool.output_schema is None else _Lean(values, said=said).schema(tool.output_schema)
    return tool.model_copy(
        update={
            "annotations": annotations,
            "description": _stating(tool.description, values) if tool.description else tool.description,
            "input_schema": _Lean(values).schema(tool.input_schema),
            "output_schema": output,
        }
    )


class _Lean:
    """Leans one schema: an input schema, or (``said`` given) an output schema of a listing whose
    descriptions so far are ``said``."""

    def __init__(self, values: dict[str, str], *, said: set[str] | None = None) -> None:
        self.values = values
        self.said = said
        self.output = said is not None

    def schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A lean copy of the JSON Schema ``schema`` (``schema`` itself is left as it is)."""
        lean: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict) and not self.output:
                lean[key] = {name: self.schema(_unsent_null(sub)) for name, sub in value.items()}
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                lean[key] = {name: self.schema(sub) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                lean[key] = [self.schema(sub) for sub in value]
            elif key in _SCHEMA_VALUES and isinstance(value, dict):
                if not (self.output and key == "items" and not value):
                    lean[key] = self.schema(value)
            elif key == "description" and isinstance(value, str):
                if self.said is None or value not in self.said:
                    lean[key] = _stating(value, self.values).replace("``", "")
                    if self.said is not None:
                        self.said.add(value)
            elif not self._noise(key, value):
                lean[key] = value
        return _merged(lean)

    def _noise(self, key: str, value: Any) -> bool:
        if key == "title":
            return isinstance(value, str)
        if key == "default":
            return self.output or value is None
        if key == "required":
            return self.output
        return key == "additionalProperties" and value is True


def _merged(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [{"type": "string"}, {"type": "null"}]}`` as ``{"type": ["string", "null"]}``, where that
    is the same schema: every branch is one plain type, no two alike, and the keywords a branch adds
    (``items``, ``pattern``, ``minimum``...) constrain only values no other branch admits (``minimum``
    on an ``integer`` branch would reach a ``number`` branch's values too: such a choice stays)."""
    branches = schema.get("anyOf")
    if not (isinstance(branches, list) and all(_plain(branch) for branch in branches)):
        return schema
    types = [branch["type"] for branch in branches]
    families = ["number" if kind == "integer" else kind for kind in types]
    if len(set(types)) < len(types):
        return schema
    merged = {key: value for key, value in schema.items() if key != "anyOf"}
    for branch, family in zip(branches, families, strict=True):
        for key, value in branch.items():
            if key == "type":
                continue
            if key in merged or families.count(family) > 1:
                return schema  # said twice, or a keyword that would reach another branch's values
            merged[key] = value
    plain_integer = {"type": "integer"} in branches and "number" in types  # a number already admits it
    merged["type"] = [kind for kind in types if not (kind == "integer" and plain_integer)]
    return merged


def _unsent_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An input property that defaults to null without its null branch: leaving it out says the same."""
    branches = schema.get("anyOf")
    if "default" not in schema or schema["default"] is not None or not isinstance(branches, list):
        return schema
    rest = [branch for branch in branches if branch != {"type": "null"}]
    if len(rest) == len(branches):
        return schema
    unsent = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    if len(rest) == 1 and isinstance(rest[0], dict) and not unsent.keys() & rest[0].keys():
        return unsent | rest[0]
    return unsent | {"anyOf": rest}


def _plain(branch: Any) -> bool:
    return isinstance(branch, dict) and isinstance(branch.get("type"), str) and not _NOT_MERGEABLE & branch.keys()


def _stating(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
