"""Compiling metrics requests: limits carried, governed sources only, and errors that say what would work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlglot import exp

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError
from catalog.governed_source import GOVERNED
from catalog.metric_query import MetricsRequest
from catalog.metrics import compile_metrics
from catalog.policy import govern
from catalog.principal import Principal
from catalog.query import Limits

CONTRACTS = Path(__file__).parents[2] / "servers" / "demo_contracts"
ANA = Principal(name="ana", roles=frozenset({"analyst", "sales-eu"}))


def contract(name: str, **changes: Any) -> ProductContract:
    data = yaml.safe_load((CONTRACTS / f"{name}.yaml").read_text(encoding="utf-8"))
    return ProductContract.model_validate(data | changes)


def compiled(request: dict[str, Any], *contracts: ProductContract, limits: Limits | None = None) -> Any:
    views = {c.name: govern(c, ANA) for c in contracts}
    return compile_metrics(
        MetricsRequest.model_validate(request), views, limits=limits or Limits(), dialect="sqlite", hash_salt="s"
    )


def test_the_statement_fetches_one_row_more_than_the_limit_it_carries() -> None:
    result = compiled({"metrics": ["shop.orders.order_count"], "limit": 5}, contract("shop.orders"))
    assert result.limits.max_rows == 5
    assert result.statement.args["limit"].expression.this == "6"
    capped = compiled(
        {"metrics": ["shop.orders.order_count"], "limit": 5000}, contract("shop.orders"), limits=Limits(max_rows=50)
    )
    assert capped.limits.max_rows == 50


def test_every_product_is_read_through_its_governed_source_with_its_row_filter() -> None:
    result = compiled(
        {"metrics": ["shop.orders.order_count"], "group_by": [{"dimension": "shop.customers.country"}]},
        contract("shop.orders"),
        contract("shop.customers"),
    )
    tables = list(result.statement.find_all(exp.Table))
    governed = [s for s in result.statement.find_all(exp.Subquery) if s.meta.get(GOVERNED)]
    assert {s.meta[GOVERNED].product for s in governed} == {"shop.orders", "shop.customers"}
    assert all(any(t in list(s.find_all(exp.Table)) for s in governed) for t in tables)  # no raw table outside them
    assert "region = 'EU'" in result.statement.sql("sqlite")


def test_a_metric_over_a_column_masked_for_the_caller_is_refused() -> None:
    customers = contract(
        "shop.customers",
        metrics=[{"name": "longest_email", "expr": "max(email)", "description": "x"}],
    )
    with pytest.raises(InvalidRequestError, match="masked for you"):
        compiled({"metrics": ["shop.customers.longest_email"]}, customers)
    counted = contract(
        "shop.customers", metrics=[{"name": "emails", "expr": "count(distinct email)", "description": "x"}]
    )
    assert compiled({"metrics": ["shop.customers.emails"]}, counted).columns == ["shop.customers.emails"]


def test_a_relationship_on_a_column_the_related_product_lacks_is_reported_with_its_columns() -> None:
    orders = contract("shop.orders", relationships=[{"product": "shop.customers", "on": {"customer_id": "client_id"}}])
    with pytest.raises(InvalidRequestError, match="does not have; its columns are customer_id"):
        compiled(
            {"metrics": ["shop.orders.order_count"], "group_by": [{"dimension": "shop.customers.country"}]},
            orders,
            contract("shop.customers"),
        )


def test_a_dimension_of_a_product_without_a_relationship_is_refused_with_the_related_products() -> None:
    with pytest.raises(
        InvalidRequestError, match="no relationship to shop.reviews; its related products are: shop.customers"
    ):
        compiled(
            {"metrics": ["shop.orders.order_count"], "group_by": [{"dimension": "shop.reviews.sku"}]},
            contract("shop.orders"),
            contract("shop.reviews"),
        )


def test_a_time_range_without_a_time_dimension_to_bound_asks_for_one() -> None:
    orders = contract(
        "shop.orders",
        dimensions=[
            {"name": "a", "column": "ordered_at", "time_grains": ["day"]},
            {"name": "b", "column": "ordered_at", "time_grains": ["month"]},
        ],
    )
    with pytest.raises(InvalidRequestError, match="time_range.dimension"):
        compiled({"metrics": ["shop.orders.order_count"], "time_range": {"start": "2024-01-01"}}, orders)


def test_divisions_guard_against_zero_and_filters_sit_inside_the_aggregate() -> None:
    sql = compiled({"metrics": ["shop.orders.delivery_rate"]}, contract("shop.orders")).statement.sql("postgres")
    assert "NULLIF(CAST((COUNT(*)) AS DOUBLE PRECISION), 0)" in sql
    assert 'COUNT(CASE WHEN "p0"."status" = \'delivered\' THEN 1 END)' in sql


def test_a_time_dimension_on_a_column_masked_for_the_caller_cannot_be_bucketed() -> None:
    customers = contract(
        "shop.customers",
        policy={"access": ["role:analyst"], "masking": [{"columns": ["signup_date"], "method": "redact"}]},
        sla={"freshness": "7d", "on_stale": "warn"},  # a masked column cannot be the freshness column
        quality=[],
    )
    with pytest.raises(InvalidRequestError, match="masked for you"):
        compiled({"metrics": ["shop.customers.customer_count"], "group_by": [{"dimension": "signup"}]}, customers)
