"""The run_sql attacks as reported, word for word, against the demo through the SDK's real client.

``ana`` (role sales-eu: EU rows only, e-mail hashed, phone partly shown) sends each; none may return
what ``sam`` sees, put the hash salt anywhere, or hold up the server.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import anyio
import pytest
from mcp import Client

from servers.demo import DemoWorkspace
from servers.settings import Settings
from tests.servers.test_mcp_tools import call, call_error

pytestmark = pytest.mark.anyio

INJECTION = (
    'SELECT CAST(1 AS VARCHAR("1)) AS A, CUSTOMER_ID, FULL_NAME, EMAIL, PHONE FROM CUSTOMERS --")) FROM shop.customers'
)


def shop(demo: DemoWorkspace, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(demo.path / "data" / "shop.db") as conn:
        return conn.execute(sql).fetchall()


def raw_emails(demo: DemoWorkspace) -> set[str]:
    return {email for (email,) in shop(demo, "SELECT email FROM customers") if email}


@pytest.mark.parametrize(
    "sql",
    [
        INJECTION,
        'SELECT CAST(1 AS VARCHAR("1)) AS a FROM sqlite_master --")) FROM shop.customers',
        'SELECT EXTRACT("year) FROM order_date) AS y, email FROM customers --" FROM order_date) FROM shop.orders',
        'SELECT CAST(1 AS VARCHAR("1)) AS a, * FROM order_facts --")) FROM analytics.order_facts',
    ],
)
async def test_sql_smuggled_through_a_cast_or_date_part_is_refused(ana: Client, demo: DemoWorkspace, sql: str) -> None:
    message = await call_error(ana, "run_sql", sql=sql)
    assert "sql_refused:" in message
    assert not any(email in message for email in raw_emails(demo))


async def test_result_column_names_never_carry_the_salt(ana: Client, settings: Settings) -> None:
    result = await call(ana, "run_sql", sql="SELECT (SELECT email FROM shop.customers LIMIT 1)")
    salt = settings.require_salt()
    assert result["columns"] == ["col_1"]
    assert salt not in str(result)
    nested = await call(
        ana,
        "run_sql",
        sql="SELECT * FROM (SELECT (SELECT email FROM shop.customers LIMIT 1), count(*) FROM shop.orders) s",
    )
    assert nested["columns"] == ["col_1", "count"] and salt not in str(nested)


async def test_a_cte_named_like_the_physical_table_is_refused(ana: Client) -> None:
    shadow = (
        "WITH RECURSIVE orders(order_id, region) AS (SELECT 1, 'EU' UNION ALL SELECT order_id + 1, 'US' "
        "FROM orders WHERE order_id < 5000) SELECT count(*) FROM shop.order_lines"
    )
    message = await call_error(ana, "run_sql", sql=shadow)
    assert "CTE name 'orders' is taken" in message
    oracle = "WITH customers AS (SELECT 'ann@example.org' AS email) SELECT email FROM shop.customers"
    assert "CTE name 'customers' is taken" in await call_error(ana, "run_sql", sql=oracle)


async def test_ana_counts_only_eu_lines_whatever_she_names_her_ctes(ana: Client, demo: DemoWorkspace) -> None:
    (eu,) = shop(
        demo,
        "SELECT count(*) FROM order_lines l JOIN orders o ON o.order_id = l.order_id WHERE o.region = 'EU'",
    )
    result = await call(ana, "run_sql", sql="WITH x AS (SELECT * FROM shop.order_lines) SELECT count(*) AS n FROM x")
    assert result["rows"] == [[eu[0]]]


async def test_deep_or_huge_input_is_refused_while_another_client_keeps_reading(
    ana: Client, sam: Client, demo: DemoWorkspace
) -> None:
    deep = "SELECT " + "(" * 60 + "1" + ")" * 60 + " FROM shop.orders"
    huge = "SELECT count(*) FROM shop.orders WHERE order_id IN (" + ",".join(["1"] * 1_000_000) + ")"
    answers: dict[str, str] = {}

    async def hostile() -> None:
        answers["deep"] = await call_error(ana, "run_sql", sql=deep)
        answers["huge"] = await call_error(ana, "run_sql", sql=huge)

    async def lookups() -> None:
        for (order_id,) in shop(demo, "SELECT order_id FROM orders ORDER BY order_id LIMIT 5"):
            result = await call(
                sam,
                "query_product",
                product="shop.orders",
                where=[{"column": "order_id", "op": "=", "value": order_id}],
            )
            assert result["row_count"] == 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(hostile)
        tg.start_soon(lookups)
    assert "nested too deeply" in answers["deep"] and "Traceback" not in answers["deep"]
    assert "characters long" in answers["huge"] and len(answers["huge"]) < 400


async def test_a_join_product_is_read_through_the_wall_even_when_no_column_is_used(
    sam: Client, demo: DemoWorkspace
) -> None:
    """shop.order_lines joins two tables; counting it uses none of their columns, yet the store's wall
    must still see both reads as the governed view's, not refuse them."""
    (total,) = shop(demo, "SELECT count(*) FROM order_lines l JOIN orders o ON o.order_id = l.order_id")
    for sql in ("SELECT count(*) AS n FROM shop.order_lines", "SELECT 1 AS one FROM shop.order_lines LIMIT 1"):
        result = await call(sam, "run_sql", sql=sql)
        assert result["rows"] in ([[total[0]]], [[1]])
