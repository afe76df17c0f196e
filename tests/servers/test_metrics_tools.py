"""list_metrics and query_metrics through the SDK's real client, on the registered demo workspace.

Every demo metric, per region where the product has one, equals a Python computation over the raw
rows the principal may see (ana: EU rows only; sam: every row); relationships group by the related
product's dimensions; every call leaves one audit row; ``explain`` shows the statement without the
governed sources' bodies; bad requests get errors that say what would work.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from mcp import Client

from catalog.audit import AuditLog
from catalog.metric_query import MetricsRequest
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.service import DataProductsService
from servers.settings import Settings
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio

Rows = list[dict[str, Any]]
LOST = ("cancelled", "returned")


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def total(rows: Rows, column: str) -> float:
    return sum(float(r[column]) for r in rows)


def distinct(rows: Rows, column: str) -> int:
    return len({r[column] for r in rows})


def net(rows: Rows) -> Rows:
    return [r for r in rows if r["status"] not in LOST]


#: product -> metric -> the metric in Python, over the product's visible rows.
METRICS: dict[str, dict[str, Callable[[Rows], Any]]] = {
    "shop.orders": {
        "order_count": len,
        "buyer_count": lambda rs: distinct(rs, "customer_id"),
        "delivered_orders": lambda rs: sum(r["status"] == "delivered" for r in rs),
        "lost_orders": lambda rs: sum(r["status"] in LOST for r in rs),
        "delivery_rate": lambda rs: ratio(sum(r["status"] == "delivered" for r in rs), len(rs)),
    },
    "shop.customers": {
        "customer_count": len,
        "opted_in_customers": lambda rs: sum(bool(r["marketing_opt_in"]) for r in rs),
        "opt_in_rate": lambda rs: ratio(sum(bool(r["marketing_opt_in"]) for r in rs), len(rs)),
    },
    "shop.order_lines": {
        "revenue": lambda rs: total(rs, "amount"),
        "units": lambda rs: total(rs, "quantity"),
        "line_count": len,
        "average_line_value": lambda rs: ratio(total(rs, "amount"), len(rs)),
    },
    "shop.reviews": {
        "review_count": len,
        "average_rating": lambda rs: ratio(total(rs, "rating"), len(rs)),
    },
    "analytics.order_facts": {
        "revenue": lambda rs: total(rs, "amount"),
        "order_count": lambda rs: distinct(rs, "order_id"),
        "units": lambda rs: total(rs, "quantity"),
        "average_order_value": lambda rs: ratio(total(rs, "amount"), distinct(rs, "order_id")),
        "net_revenue": lambda rs: total(net(rs), "amount"),
        "net_orders": lambda rs: distinct(net(rs), "order_id"),
        "net_order_value": lambda rs: ratio(total(net(rs), "amount"), distinct(net(rs), "order_id")),
    },
    "analytics.daily_sales": {
        "revenue": lambda rs: total(rs, "revenue"),
        "units": lambda rs: total(rs, "units"),
    },
}
GROUPED_BY_REGION = {"shop.orders", "shop.order_lines", "analytics.order_facts", "analytics.daily_sales"}


def raw_rows(demo: DemoWorkspace, product: str) -> Rows:
    """Every row of ``product``, read from its store without governance."""
    data = demo.path / "data"
    if product.startswith("analytics."):
        name = product.split(".")[1]
        source = f"read_parquet('{data}/analytics/{name}.parquet')" if name == "order_facts" else None
        source = source or f"read_csv_auto('{data}/analytics/{name}.csv')"
        with duckdb.connect() as conn:
            cursor = conn.execute(f"SELECT * FROM {source}")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    sql = {
        "shop.order_lines": "SELECT l.*, o.region FROM order_lines l JOIN orders o ON o.order_id = l.order_id",
    }.get(product, f"SELECT * FROM {product.split('.')[1]}")
    with sqlite3.connect(data / "shop.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(sql).fetchall()]
    conn.close()
    return rows


def visible(rows: Rows, principal: str) -> Rows:
    """The demo's row filter: ana (role sales-eu) sees region EU only, where a product has a region."""
    return [r for r in rows if principal != "ana" or r.get("region", "EU") == "EU"]


def close(got: Any, want: Any) -> bool:
    if got is None or want is None:
        return got is want
    return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-9)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def audit_log(settings: Settings) -> Iterator[AuditLog]:
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        yield AuditLog.from_registry(registry)
    finally:
        registry.close()


async def test_list_metrics_shows_units_filters_derived_metrics_and_related_dimensions(ana: Client) -> None:
    listing = await call(ana, "list_metrics", product="shop.orders")
    [orders] = listing["products"]
    metrics = {m["name"]: m for m in orders["metrics"]}
    assert metrics["shop.orders.delivered_orders"]["filter"] == "status = 'delivered'"
    assert metrics["shop.orders.delivery_rate"] | {"description": ""} == {
        "name": "shop.orders.delivery_rate",
        "description": "",
        "unit": "ratio",
        "filter": None,
        "derived": True,
    }
    dimensions = {d["name"]: d for d in orders["dimensions"]}
    assert dimensions["order_time"]["type"] == "time" and "week" in dimensions["order_time"]["time_grains"]
    assert dimensions["shop.customers.country"]["type"] == "categorical"


async def test_list_metrics_finds_metrics_by_words_among_readable_products(ana: Client) -> None:
    listing = await call(ana, "list_metrics", query="net revenue")
    names = [m["name"] for p in listing["products"] for m in p["metrics"]]
    assert "analytics.order_facts.net_revenue" in names and "analytics.order_facts.revenue" not in names
    assert all("revenue" in n or "value" in n for n in names)
    everything = await call(ana, "list_metrics")
    assert {p["product"] for p in everything["products"]} == set(METRICS)


@pytest.mark.parametrize("principal", ["ana", "sam"])
@pytest.mark.parametrize("product", sorted(METRICS))
async def test_every_demo_metric_equals_python_over_the_rows_the_principal_may_see(
    settings: Settings, demo: DemoWorkspace, principal: str, product: str
) -> None:
    names = list(METRICS[product])
    by = [{"dimension": "region"}] if product in GROUPED_BY_REGION else []
    async with client_for(settings, principal) as client:
        result = await call(client, "query_metrics", metrics=names, product=product, group_by=by)
    rows = visible(raw_rows(demo, product), principal)
    groups: dict[tuple[Any, ...], Rows] = defaultdict(list)
    for row in rows:
        groups[(row["region"],) if by else ()].append(row)
    assert result["columns"] == [d["dimension"] for d in by] + names
    assert [m["name"] for m in result["metrics"]] == names
    got = {tuple(r[: len(by)]): r[len(by) :] for r in result["rows"]}
    assert set(got) == set(groups)
    for key, members in groups.items():
        want = [METRICS[product][name](members) for name in names]
        assert all(close(a, b) for a, b in zip(got[key], want, strict=True)), (key, got[key], want)
    if principal == "ana" and by:
        assert set(got) == {("EU",)}


async def test_a_metric_groups_by_a_related_products_dimension_over_both_governed_sources(
    ana: Client, demo: DemoWorkspace
) -> None:
    result = await call(
        ana,
        "query_metrics",
        metrics=["shop.orders.order_count", "shop.orders.delivery_rate"],
        group_by=[{"dimension": "shop.customers.country"}],
        order_by=[{"name": "shop.orders.order_count", "direction": "desc"}],
    )
    countries = {c["customer_id"]: c["country"] for c in raw_rows(demo, "shop.customers")}
    groups: dict[str, Rows] = defaultdict(list)
    for order in visible(raw_rows(demo, "shop.orders"), "ana"):
        groups[countries[order["customer_id"]]].append(order)
    want = {k: [len(v), METRICS["shop.orders"]["delivery_rate"](v)] for k, v in groups.items()}
    got = {r[0]: r[1:] for r in result["rows"]}
    assert got.keys() == want.keys()
    assert all(got[k][0] == want[k][0] and close(got[k][1], want[k][1]) for k in want)
    counts = [r[1] for r in result["rows"]]
    assert counts == sorted(counts, reverse=True)


async def test_time_buckets_come_back_as_iso_text_within_the_half_open_range(ana: Client, demo: DemoWorkspace) -> None:
    result = await call(
        ana,
        "query_metrics",
        metrics=["order_count"],
        product="shop.orders",
        group_by=[{"dimension": "order_time", "grain": "month"}],
        time_range={"start": "2025-03-01", "end": "2025-06-01"},
    )
    assert result["dimensions"] == [{"name": "order_time", "grain": "month"}]
    assert result["time_range"] == {"dimension": "order_time", "start": "2025-03-01", "end": "2025-06-01"}
    months: dict[str, int] = defaultdict(int)
    for order in visible(raw_rows(demo, "shop.orders"), "ana"):
        if "2025-03-01" <= order["ordered_at"] < "2025-06-01":
            months[order["ordered_at"][:7] + "-01"] += 1
    assert {r[0]: r[1] for r in result["rows"]} == dict(months)


async def test_metrics_of_two_products_on_one_connection_come_back_side_by_side(
    ana: Client, demo: DemoWorkspace
) -> None:
    result = await call(
        ana,
        "query_metrics",
        metrics=["shop.orders.order_count", "shop.order_lines.revenue"],
        group_by=[{"dimension": "region"}],
    )
    orders = visible(raw_rows(demo, "shop.orders"), "ana")
    lines = visible(raw_rows(demo, "shop.order_lines"), "ana")
    [row] = result["rows"]
    assert row[0] == "EU" and row[1] == len(orders) and close(row[2], total(lines, "amount"))


async def test_explain_shows_the_statement_without_the_governed_sources_bodies(ana: Client, settings: Settings) -> None:
    result = await call(
        ana,
        "query_metrics",
        metrics=["shop.orders.delivered_orders"],
        group_by=[{"dimension": "shop.customers.country"}],
        explain=True,
    )
    sql = result["sql"]
    assert "governed shop.orders" in sql and "governed shop.customers" in sql
    assert "CASE WHEN" in sql and "LEFT JOIN" in sql
    assert settings.require_salt() not in sql and "'EU'" not in sql


async def test_each_call_leaves_one_audit_row_naming_the_products_read(settings: Settings, audit_log: AuditLog) -> None:
    before = len(audit_log.query(principal="sam", tool="query_metrics", limit=10_000))
    async with client_for(settings, "sam") as sam:
        await call(
            sam,
            "query_metrics",
            metrics=["shop.orders.order_count"],
            group_by=[{"dimension": "shop.customers.country"}],
        )
        await call_error(sam, "query_metrics", metrics=["shop.orders.nope"])
    records = audit_log.query(principal="sam", tool="query_metrics", limit=10_000)
    assert len(records) == before + 2
    latest = sorted(records, key=lambda r: r.id or 0)[-2:]
    assert [r.outcome for r in latest] == ["ok", "error"]
    assert latest[0].product == "shop.orders,shop.customers" and latest[0].rows > 0


async def test_bad_requests_say_what_would_work(ana: Client) -> None:
    assert "did you mean 'delivered_orders'?" in await call_error(
        ana, "query_metrics", metrics=["shop.orders.deliverd_orders"]
    )
    message = await call_error(
        ana, "query_metrics", metrics=["shop.orders.order_count"], group_by=[{"dimension": "contry"}]
    )
    assert "did you mean 'shop.customers.country'?" in message
    message = await call_error(
        ana,
        "query_metrics",
        metrics=["shop.orders.order_count"],
        group_by=[{"dimension": "order_time", "grain": "minute"}],
    )
    assert message.startswith("invalid_arguments") and "'hour'" in message
    message = await call_error(
        ana, "query_metrics", metrics=["shop.orders.order_count"], group_by=[{"dimension": "region", "grain": "day"}]
    )
    assert "categorical" in message
    assert "write <product>.order_count or pass product" in await call_error(
        ana, "query_metrics", metrics=["order_count"]
    )
    message = await call_error(
        ana, "query_metrics", metrics=["shop.orders.order_count", "analytics.order_facts.revenue"]
    )
    assert "different connections" in message
    assert message.startswith("invalid_request")
    message = await call_error(ana, "query_metrics", metrics=["shop.ordes.order_count"])
    assert message.startswith("not_found") and "shop.orders" in message
    message = await call_error(
        ana, "query_metrics", metrics=["shop.orders.order_count"], time_range={"start": "last week"}
    )
    assert "ISO 8601" in message


async def test_a_related_product_the_principal_may_not_read_is_denied_with_the_reason(settings: Settings) -> None:
    extra = settings.principals[0].model_copy(update={"name": "eu_only", "roles": frozenset({"sales-eu"})})
    limited = settings.model_copy(update={"principals": [*settings.principals, extra]})
    async with client_for(limited, "eu_only") as client:
        await call(client, "query_metrics", metrics=["shop.orders.order_count"])
        message = await call_error(
            client,
            "query_metrics",
            metrics=["shop.orders.order_count"],
            group_by=[{"dimension": "shop.customers.country"}],
        )
        assert message.startswith("access_denied") and "shop.customers" in message
        listing = await call(client, "list_metrics", product="shop.orders")
        assert all(not d["name"].startswith("shop.customers.") for d in listing["products"][0]["dimensions"])


async def test_a_repeated_request_is_served_from_cache_but_never_across_different_governance(
    settings: Settings,
) -> None:
    request = MetricsRequest.model_validate(
        {"metrics": ["shop.orders.order_count"], "group_by": [{"dimension": "region"}]}
    )
    async with DataProductsService.open(settings) as service:
        first = await service.query_metrics(settings.principal("ana"), request)
        again = await service.query_metrics(settings.principal("ana"), request)
        everyone = await service.query_metrics(settings.principal("sam"), request)
    assert first.rows == again.rows and [r[0] for r in first.rows] == ["EU"]
    assert {r[0] for r in everyone.rows} == {"EU", "US", "APAC"}


async def test_the_readme_example_request_runs_as_written(ana: Client) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Semantic layer", 1)[1]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    result = await call(ana, "query_metrics", **example)
    assert result["columns"] == ["order_time", "shop.customers.country", *example["metrics"]]
    assert result["dimensions"][0] == {"name": "order_time", "grain": "month"}


async def test_describe_product_shows_a_metrics_filter_beside_its_expression(ana: Client) -> None:
    described = await call(ana, "describe_product", product="shop.orders")
    metrics = {m["name"]: m for m in described["metrics"]}
    assert metrics["delivered_orders"]["expr"] == "count(*)"
    assert metrics["delivered_orders"]["filter"] == "status = 'delivered'"
