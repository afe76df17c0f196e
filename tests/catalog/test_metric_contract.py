"""Contract checks of the semantic layer: metric filters, derived metrics, typed dimensions, relationships."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from catalog.contract import ProductContract


def orders(**changes: Any) -> dict[str, Any]:
    return {
        "name": "shop.orders",
        "version": "1.0.0",
        "title": "Orders",
        "description": "One row per order.",
        "owner": {"team": "sales"},
        "source": {"connection": "shop", "table": "orders"},
        "columns": [
            {"name": "order_id", "type": "integer", "description": "Key"},
            {"name": "customer_id", "type": "integer", "description": "Buyer"},
            {"name": "status", "type": "string", "description": "Status"},
            {"name": "amount", "type": "decimal", "description": "Total"},
            {"name": "ordered_at", "type": "timestamp", "description": "Booked"},
        ],
        "metrics": [
            {"name": "revenue", "expr": "sum(amount)", "description": "Revenue"},
            {"name": "order_count", "expr": "count(*)", "description": "Orders"},
        ],
        **changes,
    }


def problems(**changes: Any) -> str:
    with pytest.raises(ValidationError) as info:
        ProductContract.model_validate(orders(**changes))
    return str(info.value)


def with_metrics(*metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [*orders()["metrics"], *metrics]


def test_a_contract_with_filters_derived_metrics_typed_dimensions_and_a_relationship_validates() -> None:
    contract = ProductContract.model_validate(
        orders(
            metrics=with_metrics(
                {"name": "delivered", "expr": "count(*)", "filter": "status = 'delivered'", "description": "D"},
                {"name": "aov", "expr": "revenue / order_count", "description": "AOV", "unit": "EUR"},
            ),
            dimensions=[
                {"name": "status", "column": "status", "type": "categorical"},
                {"name": "order_time", "column": "ordered_at", "time_grains": ["day", "month"]},
            ],
            relationships=[{"product": "shop.customers", "on": {"customer_id": "customer_id"}}],
        )
    )
    assert [d.kind for d in contract.dimensions] == ["categorical", "time"]
    assert contract.relationships[0].kind == "many_to_one"


def test_a_metric_filter_that_does_not_parse_or_reads_an_unknown_column_is_refused() -> None:
    assert "metrics[2].filter: not a valid SQL condition" in problems(
        metrics=with_metrics({"name": "x", "expr": "count(*)", "filter": "status = = 'a'", "description": "X"})
    )
    message = problems(
        metrics=with_metrics({"name": "x", "expr": "count(*)", "filter": "stat = 'a'", "description": "X"})
    )
    assert "metrics[2].filter: unknown column 'stat'" in message


def test_a_metric_filter_may_not_aggregate_or_hold_a_subquery_or_a_disallowed_function() -> None:
    assert "cannot aggregate" in problems(
        metrics=with_metrics({"name": "x", "expr": "count(*)", "filter": "sum(amount) > 1", "description": "X"})
    )
    assert "subqueries" in problems(
        metrics=with_metrics({"name": "x", "expr": "count(*)", "filter": "order_id IN (SELECT 1)", "description": "X"})
    )
    assert "pg_sleep() is not allowed" in problems(
        metrics=with_metrics({"name": "x", "expr": "count(*)", "filter": "pg_sleep(1) = 1", "description": "X"})
    )


def test_a_derived_metric_over_an_unknown_metric_suggests_the_close_one() -> None:
    message = problems(metrics=with_metrics({"name": "aov", "expr": "revenu / order_count", "description": "A"}))
    assert "unknown metric 'revenu' in a derived metric; did you mean 'revenue'?" in message


def test_derived_metrics_that_form_a_cycle_are_refused_with_the_cycle() -> None:
    message = problems(
        metrics=with_metrics(
            {"name": "a", "expr": "b + revenue", "description": "A"},
            {"name": "b", "expr": "a * 2", "description": "B"},
        )
    )
    assert "derived metrics form a cycle: a -> b -> a" in message


def test_a_derived_metric_cannot_carry_a_filter_and_an_aggregate_cannot_leave_a_column_outside() -> None:
    assert "takes the filters of its parts" in problems(
        metrics=with_metrics({"name": "a", "expr": "revenue * 2", "filter": "status = 'x'", "description": "A"})
    )
    assert "must sit inside an aggregate" in problems(
        metrics=with_metrics({"name": "a", "expr": "sum(amount) + order_id", "description": "A"})
    )
    assert "cannot be nested" in problems(
        metrics=with_metrics({"name": "a", "expr": "sum(count(*))", "description": "A"})
    )


def test_a_relationship_on_an_unknown_own_column_or_to_itself_is_refused() -> None:
    message = problems(relationships=[{"product": "shop.customers", "on": {"customer": "customer_id"}}])
    assert "relationships[0].on: unknown column 'customer'" in message
    assert "cannot relate to itself" in problems(
        relationships=[{"product": "shop.orders", "on": {"order_id": "order_id"}}]
    )
    unknown_kind = problems(
        relationships=[{"product": "shop.customers", "on": {"customer_id": "customer_id"}, "kind": "many_to_many"}]
    )
    assert "'many_to_one' or 'one_to_one'" in unknown_kind


def test_a_time_dimension_needs_grains_and_a_categorical_one_has_none() -> None:
    assert "needs time_grains" in problems(dimensions=[{"name": "t", "column": "ordered_at", "type": "time"}])
    assert "has no time_grains" in problems(
        dimensions=[{"name": "s", "column": "status", "type": "categorical", "time_grains": ["day"]}]
    )
