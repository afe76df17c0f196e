"""Tool argument errors reach the agent as one line per problem, saying where and what would be valid.

Through the SDK's real client on the registered demo: no pydantic dump (error counts, model names,
documentation links), only the union alternative the arguments were closest to, unknown argument
names refused instead of silently dropped, and every refusal audited exactly once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from catalog.audit import AuditLog
from catalog.registry import Registry
from servers.settings import Settings
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio

_fresh = itertools.count()


@pytest.fixture
def audit_log(settings: Settings) -> Iterator[AuditLog]:
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        yield AuditLog.from_registry(registry)
    finally:
        registry.close()


async def refusal(settings: Settings, audit_log: AuditLog, tool: str, args: dict[str, Any]) -> str:
    """The error text a fresh analyst gets for this call; checks it left exactly one invalid_arguments row."""
    name = f"argo{next(_fresh)}"
    extra = settings.principals[0].model_copy(update={"name": name, "roles": frozenset(["analyst"])})
    settings = settings.model_copy(update={"principals": [*settings.principals, extra]})
    async with client_for(settings, name) as client:
        result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    [row] = audit_log.query(principal=name, limit=10)
    assert (row.tool, row.outcome, row.error_code) == (tool, "error", "invalid_arguments")
    text = str(result.content[0].text)
    for leak in ("validation error", "Arguments", "pydantic", "https://", "For further information"):
        assert leak not in text, text
    return text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"where": [{"column": "region", "op": "equals", "value": "EU"}]},
            "invalid_arguments: where[0].op: should be '=', '!=', '<', '<=', '>', '>=', 'in', 'not_in', 'like', "
            "'is_null', 'is_not_null' or 'between'",
        ),
        (
            {"where": [{"or": [{"column": "region", "op": "~"}]}]},
            "invalid_arguments: where[0].or[0].op: should be '=', '!=', '<', '<=', '>', '>=', 'in', 'not_in', "
            "'like', 'is_null', 'is_not_null' or 'between'",
        ),
        ({"columns": "region"}, "invalid_arguments: columns: should be a list of strings"),
        (
            {"order_by": [{"column": "amount", "dir": "up"}]},
            "invalid_arguments: order_by[0]: unknown field 'dir'; its fields are column, direction",
        ),
        ({"order_by": ["amount"]}, "invalid_arguments: order_by[0]: should be an object with fields column, direction"),
    ],
)
async def test_one_problem_is_one_line_saying_where_and_what_would_be_valid(
    settings: Settings, audit_log: AuditLog, args: dict[str, Any], expected: str
) -> None:
    message = await refusal(settings, audit_log, "query_product", {"product": "shop.orders", **args})
    assert message == expected


async def test_several_problems_are_one_line_each_for_the_alternative_the_arguments_were_closest_to(
    settings: Settings, audit_log: AuditLog
) -> None:
    message = await refusal(
        settings,
        audit_log,
        "query_product",
        {"product": "shop.orders", "where": [{"col": "region", "value": "EU"}], "group_by": "region"},
    )
    assert message.splitlines() == [
        "invalid_arguments: 4 problems:",
        "- where[0].column: required, missing",
        "- where[0].op: required, missing",
        "- where[0]: unknown field 'col' (did you mean 'column'?); its fields are column, op, value, and, or",
        "- group_by: should be a list of strings",
    ]


async def test_an_argument_the_tool_does_not_take_is_refused_with_the_closest_one(
    settings: Settings, audit_log: AuditLog
) -> None:
    message = await refusal(settings, audit_log, "query_product", {"product": "shop.orders", "limitt": 5})
    assert message == (
        "invalid_arguments: limitt: not an argument of this tool; did you mean 'limit'? "
        "the arguments are product, columns, where, group_by, aggregates, order_by, limit, cursor"
    )
