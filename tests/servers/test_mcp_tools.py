"""MCP behaviour through the SDK's real client, in memory, on the registered demo workspace."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from mcp import Client

from catalog.audit import AuditLog
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.settings import ServerConfig, Settings
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


def shop_rows(demo: DemoWorkspace, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(demo.path / "data" / "shop.db") as conn:
        return conn.execute(sql).fetchall()


async def test_the_tool_list_is_small_read_only_and_typed(ana: Client) -> None:
    tools = {t.name: t for t in (await ana.list_tools()).tools}
    assert set(tools) >= {"search_products", "describe_product", "query_product", "run_sql", "search_documents"}
    assert set(tools) >= {"list_metrics", "query_metrics"}
    for tool in tools.values():
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.output_schema is not None and tool.description
    semantic = {"list_metrics", "query_metrics"}
    listing = " ".join(t.model_dump_json() for t in tools.values() if t.name not in semantic)
    assert len(listing) < 12_000  # the whole list stays cheap for the agent (~2-3k tokens)
    assert len(" ".join(tools[name].model_dump_json() for name in semantic)) < 7_000  # the semantic layer's share


async def test_the_tool_allow_list_hides_tools_that_are_not_listed(settings: Settings) -> None:
    narrowed = settings.model_copy(update={"server": ServerConfig(tools=["search_products", "describe_product"])})
    async with client_for(narrowed, "ana") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"search_products", "describe_product"}
        result = await client.call_tool("run_sql", {"sql": "select 1"})
        assert result.is_error


async def test_search_finds_products_by_meaning_words_in_descriptions_and_columns(ana: Client) -> None:
    found = await call(ana, "search_products", query="customer email")
    assert found["products"][0]["name"] == "shop.customers"


async def test_describe_tells_the_principal_which_columns_are_masked(ana: Client, sam: Client) -> None:
    masked = {
        c["name"]: c["masked"] for c in (await call(ana, "describe_product", product="shop.customers"))["columns"]
    }
    assert masked["email"] == "hash" and masked["full_name"] == "redact" and masked["phone"] == "partial"
    assert masked["country"] is None
    raw = {c["name"]: c["masked"] for c in (await call(sam, "describe_product", product="shop.customers"))["columns"]}
    assert set(raw.values()) == {None}
    orders = await call(ana, "describe_product", product="shop.orders")
    assert orders["rows_filtered_for_you"] is True


async def test_masked_values_never_reach_a_principal_without_the_pii_role(
    ana: Client, sam: Client, demo: DemoWorkspace
) -> None:
    emails = {r[0] for r in shop_rows(demo, "select email from customers")}
    masked = await call(ana, "query_product", product="shop.customers", columns=["customer_id", "email"], limit=50)
    assert masked["masked_columns"] == ["email"]
    assert not emails & {row[1] for row in masked["rows"]}
    raw = await call(sam, "query_product", product="shop.customers", columns=["customer_id", "email"], limit=50)
    assert {row[1] for row in raw["rows"]} <= emails
    # filtering on the raw value finds nothing: filters only ever see masked values
    some_email = sorted(emails)[0]
    probe = await call(
        ana, "query_product", product="shop.customers", where=[{"column": "email", "op": "=", "value": some_email}]
    )
    assert probe["row_count"] == 0
    via_sql = await call(ana, "run_sql", sql=f"select count(*) as n from shop.customers where email = '{some_email}'")
    assert via_sql["rows"] == [[0]]


async def test_row_filters_hold_for_queries_aggregates_and_sql(ana: Client, sam: Client) -> None:
    by_region = await call(
        ana, "query_product", product="shop.orders", group_by=["region"], aggregates=[{"fn": "count", "as": "n"}]
    )
    assert [row[0] for row in by_region["rows"]] == ["EU"]
    escape = await call(
        ana,
        "query_product",
        product="shop.orders",
        where=[
            {"or": [{"column": "region", "op": "=", "value": "US"}, {"column": "region", "op": "!=", "value": "EU"}]}
        ],
    )
    assert escape["row_count"] == 0
    sql = await call(ana, "run_sql", sql="select region, count(*) as n from shop.orders group by region")
    assert [row[0] for row in sql["rows"]] == ["EU"]
    everyone = await call(sam, "run_sql", sql="select count(distinct region) as n from shop.orders")
    assert everyone["rows"] == [[3]]


async def test_pages_follow_next_cursor_without_gaps_or_repeats(sam: Client, demo: DemoWorkspace) -> None:
    expected = [
        r[0] for r in shop_rows(demo, "select order_id from orders where status = 'delivered' order by order_id")
    ]
    seen: list[int] = []
    cursor = None
    for _ in range(1000):
        page = await call(
            sam,
            "query_product",
            product="shop.orders",
            columns=["order_id"],
            where=[{"column": "status", "op": "=", "value": "delivered"}],
            limit=400,
            **({"cursor": cursor} if cursor else {}),
        )
        seen += [row[0] for row in page["rows"]]
        cursor = page["next_cursor"]
        assert page["truncated"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == expected


async def test_the_row_cap_truncates_and_says_so(settings: Settings) -> None:
    capped = settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_rows": 7})})
    async with client_for(capped, "sam") as client:
        page = await call(client, "query_product", product="shop.orders", limit=100)
        assert page["row_count"] == 7 and page["truncated"] is True and page["next_cursor"]
        sql = await call(client, "run_sql", sql="select order_id from shop.orders")
        assert sql["row_count"] == 7 and sql["truncated"] is True


async def test_errors_tell_the_agent_what_would_work(ana: Client) -> None:
    assert "did you mean 'shop.orders'" in await call_error(ana, "query_product", product="shop.ordrs")
    bad_column = await call_error(ana, "query_product", product="shop.orders", columns=["regin"])
    assert "region" in bad_column
    refused = await call_error(ana, "run_sql", sql="drop table shop.orders")
    assert "sql_refused" in refused and "SELECT" in refused
    physical = await call_error(ana, "run_sql", sql="select * from orders")
    assert "sql_refused" in physical


async def test_a_principal_without_access_is_refused_with_the_reason(settings: Settings) -> None:
    outsider = settings.model_copy(
        update={
            "principals": [*settings.principals, settings.principals[0].model_copy(update={"name": "eve", "roles": []})]
        }
    )
    async with client_for(outsider, "eve") as client:
        message = await call_error(client, "query_product", product="shop.orders")
        assert "access_denied" in message and "role:analyst" in message
        found = await call(client, "search_products", query="orders")
        assert found["products"] == []


async def test_the_product_resource_is_the_contract_as_the_principal_sees_it(ana: Client) -> None:
    result = await ana.read_resource("product://shop.customers")
    text = result.contents[0].text  # type: ignore[union-attr]
    assert '"masked": "hash"' in text and "shop.customers" in text


async def test_every_call_leaves_one_audit_row(settings: Settings) -> None:
    registry = Registry.from_url(settings.resolved_registry_url())
    log = AuditLog.from_registry(registry)
    try:
        before = len(log.query(principal="sam", limit=10_000))
        async with client_for(settings, "sam") as client:
            await call(client, "query_product", product="shop.orders", limit=3)
            await call_error(client, "run_sql", sql="delete from shop.orders")
            await call(client, "describe_product", product="shop.customers")
        rows = log.query(principal="sam", limit=3)
        assert len(log.query(principal="sam", limit=10_000)) == before + 3
        assert [(r.tool, r.outcome) for r in rows] == [
            ("describe_product", "ok"),
            ("run_sql", "error"),
            ("query_product", "ok"),
        ]
        assert rows[1].error_code == "sql_refused" and rows[2].rows == 3 and rows[2].product == "shop.orders"
    finally:
        registry.close()


async def test_a_call_whose_audit_row_cannot_be_written_fails_and_serves_nothing(
    settings: Settings, tmp_path: Any
) -> None:
    registry_url = settings.resolved_registry_url()
    path = registry_url.removeprefix("sqlite:///")
    copy = tmp_path / "registry.db"
    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("create trigger audit_full before insert on dp_audit begin select raise(abort, 'disk full'); end")
    broken = settings.model_copy(update={"registry_url": f"sqlite:///{copy}"})
    async with client_for(broken, "sam") as client:
        message = await call_error(client, "query_product", product="shop.orders", limit=3)
        assert "audit_failed" in message
