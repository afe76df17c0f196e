"""Placeholders a drafted contract still holds (``TODO`` values left by ``dataproducts init``).

A draft is a valid contract, so the loader accepts it; :func:`placeholder_problems` names each
placeholder with its line and field path so ``validate`` can report it and ``register`` can refuse a
draft unless the owner asks for one (``--allow-draft``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from catalog.errors import ContractProblem
from catalog.loader import LoadedContract

__all__ = ["PLACEHOLDER", "placeholder_problems"]

#: A value still holding this word (in capitals, as ``init`` writes it) is a placeholder.
PLACEHOLDER = re.compile(r"\bTODO\b")


def placeholder_problems(loaded: LoadedContract) -> list[ContractProblem]:
    """One problem per value of ``loaded`` that is still a ``TODO`` placeholder, in line order."""
    data = loaded.contract.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    problems = [
        loaded.locate(
            ContractProblem(
                message=f"placeholder left from the draft: {_shown(value)}",
                path=path,
                hint=_hint(path),
            )
        )
        for path, value in _strings(data, "")
        if PLACEHOLDER.search(value)
    ]
    return sorted(problems, key=lambda p: (p.line or 0, p.path))


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _hint(path: str) -> str:
    field = re.sub(r"\[\d+\]", "", path).rsplit(".", 1)[-1]
    return {
        "title": "write a short human title",
        "description": "say what it holds, in the words of its owner",
        "team": "name the owning team",
        "email": "give the owning team's address",
    }.get(field, "replace it with the real value")
