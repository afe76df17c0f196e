"""Elasticsearch 8 and later refuse index deletes by wildcard (``action.destructive_requires_name``):
no delete request of ours, in the connector or in the test suites' teardown, names indices by pattern."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _literal_text(node: ast.expr) -> str:
    """The literal parts of a string or f-string argument ('' for anything else)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(v) for v in node.values if isinstance(v, ast.Constant))
    return ""


def wildcard_deletes(source: str) -> list[int]:
    """Lines of ``….indices.delete(index=…)`` calls whose index names carry a ``*``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "delete"):
            continue
        if "indices" not in ast.unparse(node.func.value):
            continue
        names = [k.value for k in node.keywords if k.arg == "index"] + node.args[:1]
        if any("*" in _literal_text(name) for name in names):
            lines.append(node.lineno)
    return lines


def test_the_check_finds_a_wildcard_delete() -> None:
    assert wildcard_deletes('await client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)') == [1]
    assert wildcard_deletes("await client.options(ignore_status=404).indices.delete(index=name)") == []


def test_no_elasticsearch_delete_request_names_indices_by_wildcard() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for folder in ("connectors", "servers", "embeddings", "tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := wildcard_deletes(path.read_text(encoding="utf-8")))
    }
    assert found == {}
