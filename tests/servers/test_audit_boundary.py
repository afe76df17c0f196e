"""Every tool call and resource read leaves one audit row, refusals before the service included; crashes
read as one ``internal_error`` line. Through the SDK's real client, in memory."""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError
from sqlglot import exp

from catalog.audit import AuditLog, AuditRecord
from catalog.query import Limits, Query, RowSet
from catalog.registry import Registry
from connectors.base import Connector, Prepared
from connectors.sqlite import SQLiteConnector
from servers.mcp import create_server
from servers.service import DataProductsService
from servers.settings import TOOL_NAMES, Settings
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


def with_principal(settings: Settings, name: str, roles: list[str]) -> Settings:
    """``settings`` with one more principal (a fresh name keeps its audit rows apart from other tests')."""
    extra = settings.principals[0].model_copy(update={"name": name, "roles": frozenset(roles)})
    return settings.model_copy(update={"principals": [*settings.principals, extra]})


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    [content] = result.content
    return str(content.text)


def rows_of(log: AuditLog, principal: str) -> list[AuditRecord]:
    return log.query(principal=principal, limit=1000)


@pytest.mark.parametrize(
    ("tool", "args", "code", "product"),
    [
        ("query_product", {"product": "shop.orders", "limit": 0}, "invalid_arguments", "shop.orders"),
        (
            "query_product",
            {"product": "shop.orders", "where": [{"column": "region", "op": "between", "value": 1}]},
            "invalid_arguments",
            "shop.orders",
        ),
        ("query_product", {"product": 42}, "invalid_arguments", None),
        ("query_product", {}, "invalid_arguments", None),
        (
            "query_product",
            {"product": "shop.orders", "columns": ["region"], "aggregates": [{"fn": "count", "as": "n"}]},
            "invalid_arguments",
            "shop.orders",
        ),
        ("search_products", {"query": ""}, "invalid_arguments", None),
        ("drop_product", {"product": "shop.orders"}, "unknown_tool", "shop.orders"),
    ],
)
async def test_a_call_refused_before_the_service_leaves_one_audit_row_and_one_line(
    settings: Settings, audit_log: AuditLog, tool: str, args: dict[str, Any], code: str, product: str | None
) -> None:
    name = f"rita{next(_fresh)}"
    async with client_for(with_principal(settings, name, ["analyst"]), name) as client:
        message = error_text(await client.call_tool(tool, args))
    assert message.startswith(f"{code}: ") and "\n" not in message
    [row] = rows_of(audit_log, name)
    assert (row.tool, row.outcome, row.error_code, row.product) == (tool, "error", code, product)
    assert row.rows is None and row.objects is None


async def test_argument_errors_say_where_and_what_without_the_values_sent(ana: Client) -> None:
    message = error_text(
        await ana.call_tool("query_product", {"product": "shop.orders", "where": [{"column": "region", "op": "in"}]})
    )
    assert message == "invalid_arguments: where[0]: op 'in' needs a non-empty list value, e.g. [1, 2, 3]"
    limit = error_text(await ana.call_tool("query_product", {"product": "shop.orders", "limit": -7}))
    assert limit == "invalid_arguments: limit: should be greater than or equal to 1"


async def test_an_unknown_tool_is_refused_with_the_tools_there_are(ana: Client) -> None:
    message = error_text(await ana.call_tool("delete_rows", {}))
    assert message == f"unknown_tool: no tool 'delete_rows'; the tools are {', '.join(sorted(TOOL_NAMES))}"


async def test_a_call_that_reaches_the_service_is_audited_once(settings: Settings, audit_log: AuditLog) -> None:
    async with client_for(with_principal(settings, "otto", ["analyst"]), "otto") as client:
        error_text(await client.call_tool("describe_product", {"product": "shop.nope"}))
        error_text(await client.call_tool("run_sql", {"sql": "select * from shop.orders; select 1"}))
        await client.call_tool("describe_product", {"product": "shop.orders"})
    assert [(r.tool, r.error_code) for r in rows_of(audit_log, "otto")] == [
        ("describe_product", None),
        ("run_sql", "sql_refused"),
        ("describe_product", "not_found"),
    ]


class FailingConnector(SQLiteConnector):
    """A store whose driver fails with something that is not a DataProductsError (a bug to the server)."""

    failure: BaseException = RuntimeError("driver crashed while reading 4111-1111-1111-1111")

    async def _execute(self, statement: exp.Query | str | Prepared, limits: Limits, *, governed: bool) -> RowSet:
        raise self.failure

    async def _execute_then(self, prepared: Prepared, limits: Limits, then: Callable[[RowSet], Any]) -> Any:
        raise self.failure


class RecursingConnector(FailingConnector):
    failure = RecursionError("maximum recursion depth exceeded")


def _validation_error() -> ValidationError:
    try:
        Query(limit=0)
    except ValidationError as exc:
        return exc
    raise AssertionError("Query(limit=0) validated")


class InvalidatingConnector(FailingConnector):
    """A ValidationError past the tool's arguments is a bug too, never the caller's invalid_arguments."""

    failure = _validation_error()


class ServiceOnFailingStores(DataProductsService):
    connector_type: type[Connector] = FailingConnector

    async def connector(self, name: str) -> Connector:
        return self.connector_type(self.settings.connection(name))


@pytest.mark.parametrize("connector_type", [FailingConnector, RecursingConnector, InvalidatingConnector])
async def test_a_crash_reads_as_one_internal_error_line_and_its_traceback_is_logged(
    settings: Settings,
    audit_log: AuditLog,
    caplog: pytest.LogCaptureFixture,
    connector_type: type[FailingConnector],
) -> None:
    name = f"cora_{connector_type.__name__.lower()}"
    crashy = with_principal(settings, name, ["analyst"])
    service = ServiceOnFailingStores.open(crashy)
    service.connector_type = connector_type
    async with service, Client(create_server(crashy, principal=crashy.principal(name), service=service)) as client:
        with caplog.at_level(logging.WARNING):
            message = error_text(await client.call_tool("query_product", {"product": "shop.orders", "limit": 3}))
    failure = type(connector_type.failure).__name__
    assert message == f"internal_error: {failure} in tool 'query_product'; the server logged it"
    assert "4111" not in message and "Traceback" not in message
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert [type(r.exc_info[1]).__name__ for r in logged if r.exc_info] == [failure]
    [row] = rows_of(audit_log, name)
    assert (row.tool, row.outcome, row.error_code, row.product) == (
        "query_product",
        "error",
        "internal_error",
        "shop.orders",
    )


async def test_a_resource_of_a_missing_product_answers_resource_not_found(ana: Client) -> None:
    with pytest.raises(MCPError) as info:
        await ana.read_resource("product://shop.ordrs")
    assert info.value.error.code == INVALID_PARAMS
    assert info.value.error.message.startswith("not_found: no product 'shop.ordrs'; did you mean 'shop.orders'")


async def test_a_resource_nobody_serves_is_refused_and_audited(settings: Settings, audit_log: AuditLog) -> None:
    async with client_for(with_principal(settings, "rhea", ["analyst"]), "rhea") as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource("file:///etc/passwd")
    assert info.value.error.code == INVALID_PARAMS and info.value.error.message.startswith("not_found: no resource")
    [row] = rows_of(audit_log, "rhea")
    assert (row.tool, row.outcome, row.error_code) == ("read_resource", "error", "not_found")


async def test_a_resource_read_that_crashes_reads_as_one_internal_error_line(
    settings: Settings, audit_log: AuditLog, tmp_path: Path
) -> None:
    copy = tmp_path / "registry.db"
    with (
        sqlite3.connect(settings.resolved_registry_url().removeprefix("sqlite:///")) as src,
        sqlite3.connect(copy) as dst,
    ):
        src.backup(dst)
    with sqlite3.connect(copy) as conn:  # a contract the registry cannot read back; the audit still works
        conn.execute("update dp_product_versions set contract = '{' where name = 'shop.orders'")
    broken = with_principal(settings, "ivan", ["analyst"]).model_copy(update={"registry_url": f"sqlite:///{copy}"})
    async with client_for(broken, "ivan") as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource("product://shop.orders")
    assert info.value.error.code == INTERNAL_ERROR
    assert (
        info.value.error.message
        == "internal_error: JSONDecodeError in resource 'product://shop.orders'; the server logged it"
    )
    with Registry.from_url(f"sqlite:///{copy}") as registry:
        [row] = AuditLog.from_registry(registry).query(principal="ivan")
    assert (row.tool, row.error_code) == ("read_resource", "internal_error")


async def test_a_refusal_whose_audit_row_cannot_be_written_fails_with_audit_failed(
    settings: Settings, tmp_path: Path
) -> None:
    copy = tmp_path / "registry.db"
    with (
        sqlite3.connect(settings.resolved_registry_url().removeprefix("sqlite:///")) as src,
        sqlite3.connect(copy) as dst,
    ):
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("create trigger audit_full before insert on dp_audit begin select raise(abort, 'disk full'); end")
    broken = settings.model_copy(update={"registry_url": f"sqlite:///{copy}"})
    async with client_for(broken, "sam") as client:
        message = error_text(await client.call_tool("no_such_tool", {}))
    assert message.startswith("audit_failed: could not write the audit record of no_such_tool by sam (disk full)")


async def test_refusals_are_audited_on_the_handshake_protocol_too(settings: Settings, audit_log: AuditLog) -> None:
    legacy = with_principal(settings, "lena", ["analyst"])
    async with Client(create_server(legacy, principal=legacy.principal("lena")), mode="legacy") as client:
        assert error_text(await client.call_tool("nope", {})).startswith("unknown_tool: ")
        assert error_text(await client.call_tool("query_product", {"product": "shop.orders", "limit": 0})).startswith(
            "invalid_arguments: "
        )
        await client.call_tool("describe_product", {"product": "shop.orders"})
    assert [(r.tool, r.error_code) for r in rows_of(audit_log, "lena")] == [
        ("describe_product", None),
        ("query_product", "invalid_arguments"),
        ("nope", "unknown_tool"),
    ]
