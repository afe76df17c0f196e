"""Turn pydantic validation errors on contract data into problems that say what would be valid."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from catalog.contract import IDENTIFIER, PRODUCT_NAME, SEMVER, SUBJECT, ProductContract
from catalog.errors import ContractProblem
from catalog.suggest import close_matches

__all__ = ["close_match_hint", "line_of", "problem_from_pydantic", "problems_from_validation_error"]

_PATTERN_HINTS = {
    PRODUCT_NAME: "write <domain>.<product> in lower case, e.g. sales.orders",
    SEMVER: "write a semantic version MAJOR.MINOR.PATCH, e.g. 1.0.0",
    IDENTIFIER: "letters, digits and underscores, not starting with a digit, e.g. order_id",
    SUBJECT: "write '*', 'role:<name>' or 'principal:<name>'",
}
_TYPE_MISMATCHES = {"list_type", "string_type", "dict_type", "model_type", "model_attributes_type", "none_required"}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def close_match_hint(word: str, choices: list[str], *, label: str) -> str:
    """``"did you mean 'x'? <label>: a, b, c"`` (the question only when a close match exists)."""
    matches = close_matches(word, choices, ignore_case=True)
    listing = f"{label}: {', '.join(choices)}"
    return f"did you mean {matches[0]!r}? {listing}" if matches else listing


def problems_from_validation_error(
    exc: ValidationError, data: Any, *, file: str | None, lines: Mapping[str, int]
) -> list[ContractProblem]:
    """Every pydantic error on ``data`` as a located problem with a hint, without union-branch noise.

    A value that fails a union (``unless: role-x`` against ``Subject | list[Subject]``) yields one error
    per branch; when one branch says more than "wrong type", the bare type mismatches are dropped.
    """
    errors = exc.errors(include_url=False)
    by_path: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        by_path.setdefault(_resolve(error["loc"], data, missing=error["type"] == "missing"), []).append(error)
    problems: list[ContractProblem] = []
    seen: set[tuple[str, str]] = set()
    for path, group in by_path.items():
        specific = [e for e in group if e["type"] not in _TYPE_MISMATCHES]
        for error in specific if specific and len(group) > 1 else group:
            problem = problem_from_pydantic(error, path, file=file, lines=lines)
            if (problem.path, problem.message) not in seen:
                seen.add((problem.path, problem.message))
                problems.append(problem)
    return problems


def problem_from_pydantic(
    error: ErrorDetails, path: str, *, file: str | None, lines: Mapping[str, int]
) -> ContractProblem:
    """One pydantic error at data ``path`` as a located :class:`ContractProblem` with a hint."""
    kind = error["type"]
    loc = error["loc"]
    message = error["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    ctx = error.get("ctx") or {}
    value = error.get("input")
    hint: str | None = None
    last = str(loc[-1]) if loc else ""

    if kind == "literal_error":
        message = f"{value!r} is not an allowed value"
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = close_match_hint(str(value), allowed, label="allowed values") if allowed else None
    elif kind == "extra_forbidden":
        message = f"unknown key {last!r}"
        parent_model = _model_at(loc[:-1])
        allowed = list(parent_model.model_fields) if parent_model else []
        hint = close_match_hint(last, allowed, label="allowed keys") if allowed else None
    elif kind == "missing":
        message = f"required field {last!r} is missing"
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        parent_model = _model_at(loc[:-1])
        info = parent_model.model_fields.get(last) if parent_model else None
        described = f" ({info.description})" if info and info.description else ""
        hint = f"add '{last}:' under {parent or 'the top level'}{described}"
    elif kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        message = f"{value!r} is not in the expected form"
        hint = _PATTERN_HINTS.get(pattern, f"must match {pattern}")
    elif kind in ("model_type", "model_attributes_type", "dict_type") and (model := _model_at(loc)):
        message = f"expected a mapping, got {type(value).__name__} {value!r}"
        hint = f"write a mapping with keys: {', '.join(model.model_fields)}"
    elif kind == "list_type":
        hint = "write a YAML list, e.g. [a, b] or one '- item' per line"
    elif kind == "string_type" and isinstance(value, bool | int | float):
        hint = f"YAML read this as {type(value).__name__} {value!r}; put the value in quotes"
    return ContractProblem(message=message, path=path, file=file, line=line_of(lines, path), hint=hint)


def _resolve(loc: tuple[int | str, ...], data: Any, *, missing: bool) -> str:
    """The data path named by a pydantic ``loc``, union member tags (``str``, ``list[...]``) dropped."""
    path = ""
    current = data
    for index, part in enumerate(loc):
        is_last = index == len(loc) - 1
        if isinstance(current, dict) and part in current:
            path = f"{path}.{part}" if path else str(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path = f"{path}[{part}]"
            current = current[part]
        elif is_last and missing:
            path = f"{path}.{part}" if path else str(part)
        # anything else is a union member tag such as 'str' or 'list[constrained-str]': not part of the path
    return path


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class validating the object at ``loc`` (None when it is not a model)."""
    annotation: Any = ProductContract
    for part in loc:
        annotation = _strip(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(part, str):
            if part in annotation.model_fields:
                annotation = annotation.model_fields[part].annotation
        elif get_origin(annotation) is list and isinstance(part, int):
            annotation = get_args(annotation)[0]
    annotation = _strip(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _strip(annotation: Any) -> Any:
    """Unwrap ``Annotated[...]`` and ``X | None`` down to the one meaningful type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def line_of(lines: Mapping[str, int], path: str) -> int | None:
    """The line of ``path`` (``columns[2].type``) or of its nearest ancestor written in the document."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        cut = max(path.rfind("."), path.rfind("["))
        path = path[: max(cut, 0)]
