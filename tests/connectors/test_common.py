"""The shared fetch loop, type mapping and error texts of the built-in connectors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.errors import QueryTimeoutError
from catalog.query import Limits
from connectors._common import Deadline, driver_message, fetch_capped, neutral_type, unknown_table
from connectors.base import estimate_row_bytes


def batches_of(rows: list[tuple[Any, ...]]) -> tuple[list[int], Any]:
    """A fetchmany over ``rows`` that records the batch sizes asked for."""
    asked: list[int] = []
    pending: Iterator[tuple[Any, ...]] = iter(rows)

    def fetchmany(size: int) -> list[tuple[Any, ...]]:
        asked.append(size)
        return [row for _, row in zip(range(size), pending, strict=False)]

    return asked, fetchmany


@given(
    rows=st.lists(st.tuples(st.integers(), st.text(max_size=300) | st.none()), max_size=60),
    max_rows=st.integers(min_value=1, max_value=70),
    max_bytes=st.integers(min_value=1024, max_value=8000),
)
def test_fetch_capped_returns_a_prefix_within_both_caps_and_says_which_cap_cut_it(
    rows: list[tuple[Any, ...]], max_rows: int, max_bytes: int
) -> None:
    _, fetchmany = batches_of(rows)
    result = fetch_capped(["a", "b"], fetchmany, Limits(max_rows=max_rows, max_bytes=max_bytes))

    assert result.rows == rows[: len(result.rows)]
    assert len(result.rows) <= max_rows
    assert result.bytes == sum(estimate_row_bytes(r) for r in result.rows) <= max_bytes
    assert result.truncated == (len(result.rows) < len(rows))
    if result.truncated_by == "rows":
        assert len(result.rows) == max_rows
    elif result.truncated_by == "bytes":
        assert result.bytes + estimate_row_bytes(rows[len(result.rows)]) > max_bytes


def test_fetch_capped_asks_for_one_row_beyond_the_cap_at_most_per_batch() -> None:
    asked, fetchmany = batches_of([(i,) for i in range(5000)])
    fetch_capped(["i"], fetchmany, Limits(max_rows=2))
    assert asked == [3]

    asked, fetchmany = batches_of([(i,) for i in range(5000)])
    fetch_capped(["i"], fetchmany, Limits(max_rows=2500))
    assert asked == [1000, 1000, 1000]


def test_fetch_capped_stops_between_batches_once_the_deadline_passed() -> None:
    _, fetchmany = batches_of([(1,)])
    with pytest.raises(QueryTimeoutError, match="time budget"):
        fetch_capped(["i"], fetchmany, Limits(), Deadline(-1))


@pytest.mark.parametrize(
    ("native", "neutral"),
    [
        ("integer", "integer"),
        ("HUGEINT", "integer"),
        ("numeric(10,2)", "decimal"),
        ("DECIMAL(18,3)", "decimal"),
        ("double precision", "float"),
        ("character varying(20)", "string"),
        ("VARCHAR", "string"),
        ("uuid", "string"),
        ("timestamp(3) with time zone", "timestamp"),
        ("TIMESTAMP_NS", "timestamp"),
        ("time without time zone", "time"),
        ("date", "date"),
        ("jsonb", "json"),
        ("integer[]", "json"),
        ("INTEGER[3]", "json"),
        ("STRUCT(a INTEGER, b VARCHAR)", "json"),
        ("MAP(VARCHAR, INTEGER)", "json"),
        ("bytea", "bytes"),
        ("BLOB", "bytes"),
        ("boolean", "boolean"),
        ("ENUM('a', 'b')", "string"),
        ("geometry", "string"),
    ],
)
def test_native_type_names_map_to_neutral_column_types(native: str, neutral: str) -> None:
    assert neutral_type(native) == neutral


def test_unknown_table_lists_close_matches_first_then_the_rest() -> None:
    error = unknown_table("shop", "ordr", ["customers", "orders", "order_lines", "regions"])

    assert error.code == "not_found"
    assert error.message.startswith("unknown table 'ordr' on connection 'shop'; did you mean 'orders'")
    assert error.message.endswith("customers, regions")


def test_unknown_table_on_an_empty_store_says_it_has_no_tables() -> None:
    assert "has no tables" in unknown_table("shop", "x", []).message


def test_driver_message_drops_the_quoted_sql() -> None:
    exc = RuntimeError('Binder Error: column "secret" not found\n\nLINE 1: SELECT secret FROM t\n              ^')
    assert driver_message(exc) == 'Binder Error: column "secret" not found'
