"""Tool argument errors as the agent reads them: one line per problem, saying where and what would be valid.

Pydantic reports a mismatch per alternative of a union (a filter is a condition, an ``and`` group or
an ``or`` group): for ``{"column": "region", "op": "equals"}`` it adds "and: Field required" and
"column: Extra inputs are not permitted" for both groups. Only the alternative the arguments were
closest to is kept — the one with the fewest shape problems (missing or unknown fields), the first on
a tie — and its problems are told in plain words: a missing field, an unknown field and the field it
was probably meant to be, the values that would be valid. Values sent are never echoed, and neither
are pydantic's error counts, model names or documentation links.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from catalog.suggest import close_matches

__all__ = ["MAX_PROBLEMS", "argument_problems", "format_problems", "unknown_argument_problems"]

#: Problems listed in one message; the rest are counted.
MAX_PROBLEMS = 6

_SHAPE = frozenset({"missing", "extra_forbidden", "model_type", "model_attributes_type", "dict_type"})

Loc = tuple[int | str, ...]


def argument_problems(error: ValidationError, schema: Mapping[str, Any] | None = None) -> list[str]:
    """Each problem of ``error`` as ``<where>: <what would be valid>``, in order, without duplicates.

    ``schema`` is the tool's input JSON schema: with it, an unknown or malformed object names the
    fields it takes.
    """
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    kept = _closest_alternatives([(tuple(e["loc"]), e["type"], e["msg"]) for e in errors])
    missing_by_parent: dict[Loc, list[str]] = {}
    for loc, kind, _msg in kept:
        if kind == "missing" and loc and isinstance(loc[-1], str):
            missing_by_parent.setdefault(_fields(loc[:-1]), []).append(loc[-1])
    problems: list[str] = []
    for loc, kind, msg in kept:
        problem = _describe(_fields(loc), kind, msg, missing_by_parent, schema or {})
        if problem not in problems:
            problems.append(problem)
    return problems


def unknown_argument_problems(arguments: Mapping[str, Any], known: Sequence[str]) -> list[str]:
    """A problem per argument name the tool does not take, with the closest name it does take."""
    problems = []
    for name in arguments:
        if name in known:
            continue
        close = close_matches(name, known, ignore_case=True)
        guess = f"did you mean {close[0]!r}? " if close else ""
        problems.append(f"{name[:100]}: not an argument of this tool; {guess}the arguments are {', '.join(known)}")
    return problems


def format_problems(problems: Sequence[str]) -> str:
    """One problem: one line. Several: a count, then one line each (at most :data:`MAX_PROBLEMS`)."""
    if len(problems) == 1:
        return problems[0]
    shown = [f"- {p}" for p in problems[:MAX_PROBLEMS]]
    more = len(problems) - MAX_PROBLEMS
    if more > 0:
        shown.append(f"- and {more} more")
    return "\n".join([f"{len(problems)} problems:", *shown])


def _closest_alternatives(errors: list[tuple[Loc, str, str]], start: int = 0) -> list[tuple[Loc, str, str]]:
    """``errors`` with, at every union, only the errors of the alternative the input was closest to."""
    plain: list[tuple[Loc, str, str]] = []
    unions: dict[Loc, dict[str, list[tuple[Loc, str, str]]]] = {}
    for error in errors:
        loc = error[0]
        at = next((i for i in range(start, len(loc)) if _is_tag(loc[i])), None)
        if at is None:
            plain.append(error)
        else:
            unions.setdefault(loc[:at], {}).setdefault(str(loc[at]), []).append(error)
    kept = list(plain)
    for prefix, members in unions.items():
        depth = len(prefix)

        def shape(item: tuple[str, list[tuple[Loc, str, str]]], depth: int = depth) -> int:
            return sum(kind in _SHAPE and len(loc) <= depth + 2 for loc, kind, _ in item[1])

        _tag, chosen = min(members.items(), key=shape)  # min keeps the first of equals: the union's order
        kept += _closest_alternatives(chosen, depth + 1)
    order = {id(e): i for i, e in enumerate(errors)}
    return sorted(kept, key=lambda e: order[id(e)])


def _describe(
    where: Loc, kind: str, msg: str, missing_by_parent: Mapping[Loc, list[str]], schema: Mapping[str, Any]
) -> str:
    place = _place(where)
    if kind == "missing":
        return f"{place}: required, missing"
    if kind == "extra_forbidden" and where and isinstance(where[-1], str):
        parent, name = where[:-1], where[-1]
        fields = _object_fields(schema, parent)
        close = close_matches(name, missing_by_parent.get(parent) or fields, ignore_case=True)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        listing = f"; its fields are {', '.join(fields)}" if fields else ""
        return f"{_place(parent)}: unknown field {name[:100]!r}{guess}{listing}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        fields = _object_fields(schema, where)
        return f"{place}: should be an object" + (f" with fields {', '.join(fields)}" if fields else "")
    if kind == "list_type":
        items = _kind_of(_at(schema, (*where, 0)) if schema else None)
        return f"{place}: should be a list" + (f" of {items}" if items else "")
    text = msg.removeprefix("Value error, ").replace("Input should be", "should be")
    return f"{place}: {text}"


def _at(schema: Mapping[str, Any], where: Loc) -> Mapping[str, Any] | None:
    """The sub-schema of ``schema`` at a path of fields and list positions (unions merged), or None."""
    defs = schema.get("$defs", {})
    nodes = [schema]
    for part in where:
        following = []
        for node in _alternatives(nodes, defs):
            if isinstance(part, int) and isinstance(node.get("items"), Mapping):
                following.append(node["items"])
            elif isinstance(part, str) and isinstance(node.get("properties"), Mapping) and part in node["properties"]:
                following.append(node["properties"][part])
        if not following:
            return None
        nodes = following
    merged = _alternatives(nodes, defs)
    if len(merged) == 1:
        return {**merged[0], "$defs": defs}
    return {"anyOf": merged, "$defs": defs}


def _alternatives(nodes: list[Mapping[str, Any]], defs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``nodes`` with references resolved and unions (``anyOf``/``oneOf``) flattened."""
    found: list[Mapping[str, Any]] = []
    pending = list(nodes)
    while pending:
        node = pending.pop(0)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            pending.insert(0, defs[ref[8:]])
        elif isinstance(members := node.get("anyOf") or node.get("oneOf"), list):
            pending[:0] = [n for n in members if n.get("type") != "null"]
        else:
            found.append(node)
    return found


def _object_fields(schema: Mapping[str, Any], where: Loc) -> list[str]:
    node = _at(schema, where) if schema else None
    if node is None:
        return []
    fields: list[str] = []
    for alternative in _alternatives([node], node.get("$defs", {})):
        fields += [f for f in alternative.get("properties", {}) if f not in fields]
    return fields


def _kind_of(node: Mapping[str, Any] | None) -> str | None:
    if node is None:
        return None
    kinds = {"string": "strings", "integer": "integers", "number": "numbers", "boolean": "booleans"}
    if node.get("type") in kinds:
        return kinds[node["type"]]
    fields = _object_fields(node, ())
    return f"objects with fields {', '.join(fields)}" if fields else None


def _fields(loc: Loc) -> Loc:
    """The path of ``loc`` through fields and list positions, without union member tags."""
    return tuple(p for p in loc if isinstance(p, int) or not _is_tag(p))


def _place(where: Loc) -> str:
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "arguments"


def _is_tag(part: int | str) -> bool:
    """A union member's tag such as ``AllOf`` or ``function-after[...]``, not a field name or position."""
    return isinstance(part, str) and not (part.isidentifier() and part == part.lower())
