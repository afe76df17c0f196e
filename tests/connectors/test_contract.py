"""The connector contract suite: the same behaviour asked of every store (see conftest.STORES)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
import sqlglot
from sqlglot import exp

from catalog.errors import ConnectorUnavailableError, NotFoundError, QueryExecutionError, QueryTimeoutError
from catalog.query import Limits
from tests.connectors import dataset
from tests.connectors.conftest import Store

pytestmark = pytest.mark.anyio


def normalised(value: Any) -> Any:
    """One spelling per value across stores (SQLite keeps dates as text and booleans as 0/1)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal | float):
        return round(float(value), 2)
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def normalised_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(normalised(v) for v in row) for row in rows]


def select_all() -> exp.Select:
    return exp.select(*dataset.COLUMNS).from_(dataset.TABLE).order_by("order_id")


async def test_introspect_reports_columns_with_native_and_neutral_types_primary_key_and_exact_row_count(
    store: Store,
) -> None:
    schema = await store.connector.introspect("orders")

    assert schema.column_names == list(dataset.COLUMNS)
    assert {c.name: c.type for c in schema.columns} == store.types
    assert all(c.native_type for c in schema.columns)
    assert schema.primary_key == store.primary_key
    assert schema.row_count == len(dataset.ROWS)
    assert next(c for c in schema.columns if c.name == "customer").nullable


async def test_introspect_of_an_unknown_table_names_the_closest_existing_table(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"unknown table 'ordres'.*did you mean 'orders'"):
        await store.connector.introspect("ordres")


async def test_list_assets_names_the_tables_and_views_of_the_store(store: Store) -> None:
    assert await store.connector.list_assets() == ["orders"]


async def test_every_value_round_trips_including_quotes_unicode_and_nulls(store: Store) -> None:
    result = await store.connector.execute(select_all(), Limits())

    assert result.columns == list(dataset.COLUMNS)
    assert normalised_rows(result.rows) == normalised_rows(dataset.ROWS)
    assert not result.truncated
    assert result.bytes > 0


async def test_a_select_with_where_order_by_and_limit_runs_in_the_store_dialect(store: Store) -> None:
    statement = exp.select("order_id", "customer").from_("orders").where("quantity >= 1")
    result = await store.connector.execute(statement.order_by("order_id DESC").limit(3), Limits())

    assert result.columns == ["order_id", "customer"]
    assert result.rows == [(6, "plain"), (4, "Łódź; DROP TABLE orders"), (3, "日本語テキスト")]


@pytest.mark.parametrize("text", ["O'Brien", 'Zoë "Zed" Ünal', "日本語テキスト"])
async def test_string_literals_with_quotes_and_unicode_match_exactly(store: Store, text: str) -> None:
    statement = exp.select("customer").from_("orders").where(exp.column("customer").eq(exp.Literal.string(text)))
    result = await store.connector.execute(statement, Limits())

    assert result.rows == [(text,)]


async def test_percent_signs_in_literals_like_patterns_and_modulo_are_sql_not_placeholders(store: Store) -> None:
    statement = sqlglot.parse_one(
        "SELECT '100% sure' AS p, order_id % 4 AS m FROM orders WHERE customer LIKE 'O%' OR note LIKE '%ji %'"
    )
    result = await store.connector.execute(cast(exp.Query, statement), Limits())

    assert sorted(result.rows) == [("100% sure", 1), ("100% sure", 1)]


async def test_the_row_cap_stops_streaming_and_marks_the_result_truncated(store: Store) -> None:
    capped = await store.connector.execute(select_all().limit(3), Limits(max_rows=2))
    uncapped_statement = await store.connector.execute(select_all(), Limits(max_rows=2))

    for result in (capped, uncapped_statement):
        assert [row[0] for row in result.rows] == [1, 2]
        assert result.truncated
        assert result.truncated_by == "rows"


async def test_a_result_of_exactly_max_rows_is_not_truncated(store: Store) -> None:
    result = await store.connector.execute(select_all(), Limits(max_rows=len(dataset.ROWS)))

    assert len(result.rows) == len(dataset.ROWS)
    assert not result.truncated
    assert result.truncated_by is None


async def test_the_byte_cap_stops_streaming_and_marks_the_result_truncated(store: Store) -> None:
    statement = sqlglot.parse_one(
        "SELECT a.order_id, a.customer, a.note, b.customer AS c2, b.note AS n2 FROM orders AS a CROSS JOIN orders AS b"
    )
    result = await store.connector.execute(cast(exp.Query, statement), Limits(max_bytes=1024))

    assert result.truncated
    assert result.truncated_by == "bytes"
    assert 0 < len(result.rows) < len(dataset.ROWS) ** 2
    assert 0 < result.bytes <= 1024


async def test_a_slow_statement_is_cancelled_with_a_timeout_error_and_the_store_stays_usable(store: Store) -> None:
    slow = sqlglot.parse_one(
        f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {store.slow_rows}) "
        "SELECT count(*) AS n FROM r"
    )
    with pytest.raises(QueryTimeoutError) as caught:
        await store.connector.execute(cast(exp.Query, slow), Limits(timeout_s=0.05))

    assert caught.value.code == "timeout"
    assert caught.value.orig is not None
    assert (await store.connector.execute(exp.select("1 AS one"), Limits())).rows == [(1,)]


WRITES = [
    "INSERT INTO orders (order_id, customer) VALUES (99, 'intruder')",
    "UPDATE orders SET note = 'changed'",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "CREATE TABLE stolen (a INT)",
    "CREATE TABLE copied AS SELECT * FROM orders",
]


@pytest.mark.parametrize("sql", WRITES)
async def test_a_write_passed_directly_is_refused_and_the_store_is_unchanged(store: Store, sql: str) -> None:
    with pytest.raises(QueryExecutionError) as caught:
        await store.connector.execute(cast(exp.Query, sqlglot.parse_one(sql)), Limits())

    assert sql not in caught.value.message
    assert await store.connector.list_assets() == ["orders"]
    result = await store.connector.execute(select_all(), Limits())
    assert normalised_rows(result.rows) == normalised_rows(dataset.ROWS)


async def test_an_error_message_carries_the_driver_message_but_not_the_sql(store: Store) -> None:
    statement = exp.select("secret_governance_column").from_("orders")
    with pytest.raises(QueryExecutionError) as caught:
        await store.connector.execute(statement, Limits())

    assert "secret_governance_column" in str(caught.value.orig)
    assert "SELECT" not in caught.value.message.upper()
    assert caught.value.code == "execution_failed"


async def test_md5_hashes_utf8_text_like_postgresql(store: Store) -> None:
    if not store.connector.capabilities.supports_md5:
        pytest.skip(f"{store.id} does not support md5")
    statement = exp.select(exp.func("md5", exp.column("customer")).as_("h")).from_("orders").where("order_id = 3")
    result = await store.connector.execute(statement, Limits())

    assert result.rows == [(hashlib.md5("日本語テキスト".encode()).hexdigest(),)]


async def test_health_is_true_while_the_store_answers(store: Store) -> None:
    assert await store.connector.health() is True


async def test_aclose_is_idempotent_and_a_closed_connector_says_so(store: Store) -> None:
    await store.connector.execute(exp.select("1 AS one"), Limits())
    await store.connector.aclose()
    await store.connector.aclose()

    with pytest.raises(ConnectorUnavailableError, match="closed"):
        await store.connector.execute(exp.select("1 AS one"), Limits())
    assert await store.connector.health() is False


async def test_the_connector_renders_in_the_sqlglot_dialect_of_its_kind(store: Store) -> None:
    expected = {"sqlite": "sqlite", "postgresql": "postgres", "duckdb": "duckdb"}[store.connector.kind]

    assert store.connector.dialect == expected
    assert store.connector.render(exp.select("a").from_("t").limit(1)) == "SELECT a FROM t LIMIT 1"
