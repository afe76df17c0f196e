"""``policy.aggregate_only`` through the service: warnings, suppressed groups, describe_product.

The demo's ``shop.orders`` registered with ``customer_id`` aggregate-only (groups of 5) unless ``role:pii-reader``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError, SQLRefusedError
from catalog.loader import load_contract_file
from catalog.metric_query import MetricsRequest
from catalog.policy import govern
from catalog.query import Query
from catalog.registry import Registry
from embeddings.index import indexable_fields
from servers._visible import searchable
from servers.demo import DemoWorkspace
from servers.service import DataProductsService
from servers.settings import Settings, load_settings
from tests.catalog.governance_fixtures import ANALYST, CONTRACT_YAML

ORDERS = Path(__file__).parents[2] / "servers" / "demo_contracts" / "shop.orders.yaml"


@pytest.fixture
def settings(demo: DemoWorkspace, tmp_path: Path) -> Settings:
    settings = load_settings(demo.config_path, registry_url=f"sqlite:///{tmp_path / 'registry.db'}")
    data = yaml.safe_load(ORDERS.read_text(encoding="utf-8"))
    data["policy"]["aggregate_only"] = {"columns": ["customer_id"], "min_group_size": 5, "unless": "role:pii-reader"}
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        for path in demo.contract_paths:
            for contract in load_contract_file(path):
                if contract.name == "shop.orders":
                    contract = ProductContract.model_validate(data)
                registry.register(contract, actor="tests")
    return settings


def call(settings: Settings, who: str, method: str, *args: Any) -> Any:
    async def run() -> Any:
        async with DataProductsService.open(settings) as service:
            return await getattr(service, method)(settings.principal(who), *args)

    return anyio.run(run)


def test_describe_product_shows_aggregate_only_columns(settings: Settings) -> None:
    columns = {c.name: c for c in call(settings, "ana", "describe_product", "shop.orders").columns}
    assert columns["customer_id"].aggregate_only == 5 and columns["status"].aggregate_only is None
    columns = {c.name: c for c in call(settings, "sam", "describe_product", "shop.orders").columns}
    assert columns["customer_id"].aggregate_only is None


def test_row_reads_leave_the_column_out_and_say_so(settings: Settings) -> None:
    result = call(settings, "ana", "query_product", "shop.orders", Query(limit=5))
    assert "customer_id" not in result.columns and result.rows
    assert any("customer_id left out: aggregate-only for you" in w for w in result.warnings)
    with pytest.raises(InvalidRequestError, match="customer_id is aggregate-only for you"):
        call(settings, "ana", "query_product", "shop.orders", Query(columns=["order_id", "customer_id"]))
    assert "customer_id" in call(settings, "sam", "query_product", "shop.orders", Query(limit=5)).columns


def test_aggregates_suppress_small_groups_and_count_them(settings: Settings) -> None:
    query = Query.model_validate(
        {
            "group_by": ["channel", "status", "ordered_at"],
            "aggregates": [{"fn": "count", "as": "n"}, {"fn": "count_distinct", "column": "customer_id"}],
        }
    )
    result = call(settings, "ana", "query_product", "shop.orders", query)
    assert all(row[3] >= 5 for row in result.rows)
    (warning,) = [w for w in result.warnings if "suppressed" in w]
    assert re.fullmatch(
        r"\d+ groups? with fewer than 5 rows (was|were) suppressed \(customer_id is aggregate-only\)", warning
    )
    everything = call(
        settings, "sam", "query_product", "shop.orders", query.model_copy(update={"aggregates": query.aggregates[:1]})
    )
    assert not [w for w in everything.warnings if "suppressed" in w]


def test_run_sql_enforces_and_warns(settings: Settings) -> None:
    sql = "SELECT status, COUNT(DISTINCT customer_id) AS buyers, COUNT(*) AS n FROM shop.orders GROUP BY status"
    result = call(settings, "ana", "run_sql", sql)
    assert all(row[2] >= 5 for row in result.rows)
    assert "shop.orders.customer_id is aggregate-only for you: groups under 5 rows are suppressed" in " ".join(
        result.warnings
    )
    with pytest.raises(SQLRefusedError, match="aggregate-only"):
        call(settings, "ana", "run_sql", "SELECT customer_id FROM shop.orders")
    assert call(settings, "sam", "run_sql", "SELECT customer_id FROM shop.orders LIMIT 3").row_count == 3


def test_aggregate_only_text_fields_are_never_indexed_nor_shown_as_hits() -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data["retrieval"] = {"text_fields": ["note", "code"]}
    data["policy"]["aggregate_only"] = {"columns": ["note"], "unless": "role:hr"}
    contract = ProductContract.model_validate(data)
    fields, skipped = indexable_fields(contract)
    assert fields == ["code"] and "aggregate-only" in skipped["note"]
    view = govern(contract, ANALYST)
    assert not searchable(view, "note") and searchable(view, "code")
    data["policy"]["aggregate_only"] = {"columns": ["person_id"]}  # the key cites the row: no hit is shown
    assert not searchable(govern(ProductContract.model_validate(data), ANALYST), "code")


def test_query_metrics_suppresses_small_groups_of_metrics_over_the_column(settings: Settings) -> None:
    request = MetricsRequest.model_validate(
        {"metrics": ["shop.orders.buyer_count", "shop.orders.order_count"], "group_by": [{"dimension": "status"}]}
    )
    result = call(settings, "ana", "query_metrics", request)
    assert all(row[2] >= 5 for row in result.rows)
    assert "groups under 5 rows are suppressed (customer_id is aggregate-only for you)" in result.warnings
    everything = call(settings, "sam", "query_metrics", request)
    assert not [w for w in everything.warnings if "suppressed" in w]
    by_hour = MetricsRequest.model_validate(
        {"metrics": ["shop.orders.buyer_count", "shop.orders.order_count"],
         "group_by": [{"dimension": "order_time", "grain": "hour"}]}
    )  # fmt: skip
    assert all(row[2] >= 5 for row in call(settings, "ana", "query_metrics", by_hour).rows)
