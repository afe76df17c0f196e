"""get_lineage through the real MCP client: governed nodes, direction and depth, column links, PII, audit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from catalog.audit import AuditLog
from catalog.contract import Lineage
from catalog.lineage import build_lineage
from catalog.registry import Registry
from servers import lineage_cases
from servers.settings import Settings
from tests.servers.conftest import client_for
from tests.servers.test_existence import UNREADABLE_BY_SUPPORT, error_text, with_principal

pytestmark = pytest.mark.anyio


async def lineage(client: Client, product: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("get_lineage", {"product": product, **args})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def node_ids(found: dict[str, Any]) -> set[str]:
    return {n["id"] for n in found["nodes"]}


def edge_of(found: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    [edge] = [e for e in found["edges"] if (e["source"], e["target"]) == (source, target)]
    return edge


async def test_lineage_shows_only_products_the_caller_may_read(settings: Settings, sam: Client) -> None:
    everything = await lineage(sam, "shop.customers", direction="downstream", depth=10)
    assert {"shop.orders", "shop.order_lines", "analytics.order_facts", "analytics.daily_sales"} <= node_ids(everything)

    async with client_for(with_principal(settings, "sue", ["support"]), "sue") as sue:
        seen = await lineage(sue, "shop.customers", depth=10)
        refused = await error_text(sue, "get_lineage", product="shop.orders")
    assert node_ids(seen) == {"shop.customers", "shop:customers", "shop.reviews"}
    text = json.dumps(seen)
    assert not [name for name in UNREADABLE_BY_SUPPORT if name in text], text
    assert "shop:orders" not in text  # a table shows only as the source of a readable product
    assert "access_denied" in refused


async def test_a_table_shows_as_the_source_of_a_readable_product_but_its_product_does_not(
    settings: Settings,
) -> None:
    async with client_for(with_principal(settings, "sal", ["support"]), "sal") as sal:
        found = await lineage(sal, "shop.reviews", direction="upstream", depth=3)
    assert node_ids(found) == {"shop.reviews", "shop:reviews", "shop:orders", "shop:customers", "shop.customers"}
    assert "shop.orders" not in json.dumps(found)
    carried = edge_of(found, "shop.customers", "shop.reviews")
    assert carried["derived"] and carried["columns"] == {"reviewer_email": ["email"]}
    assert carried["pii"] == ["email"]
    assert edge_of(found, "shop:orders", "shop.reviews")["reads"] == ["customer_id", "order_id"]


async def test_direction_and_depth_bound_the_walk(sam: Client) -> None:
    up_one = await lineage(sam, "shop.order_lines", direction="upstream", depth=1)
    assert node_ids(up_one) == {"shop.order_lines", "shop.orders", "shop:orders", "shop:order_lines"}
    up_two = await lineage(sam, "shop.order_lines", direction="upstream", depth=2)
    assert "shop.customers" in node_ids(up_two)
    down_one = await lineage(sam, "shop.order_lines", direction="downstream", depth=1)
    assert node_ids(down_one) == {"shop.order_lines", "analytics.order_facts"}
    down_two = await lineage(sam, "shop.order_lines", direction="downstream", depth=2)
    assert node_ids(down_two) == {"shop.order_lines", "analytics.order_facts", "analytics.daily_sales"}
    too_deep = await sam.call_tool("get_lineage", {"product": "shop.orders", "depth": 11})
    assert too_deep.is_error


async def test_a_source_query_gives_column_links_and_declared_edges_carry_pii(sam: Client) -> None:
    found = await lineage(sam, "shop.order_lines", direction="upstream", depth=2)
    derived = edge_of(found, "shop.orders", "shop.order_lines")
    assert derived["declared"] and derived["derived"]
    assert derived["columns"] == {"region": ["region"]}
    assert derived["reads"] == ["order_id", "region"]  # the join key too
    declared = edge_of(found, "shop.customers", "shop.orders")
    assert declared["columns"] is None and declared["pii"] == ["email", "name", "phone"]
    customers = next(n for n in found["nodes"] if n["id"] == "shop.customers")
    assert customers["pii"] == {"email": ["email"], "full_name": ["name"], "phone": ["phone"]}


async def test_each_lineage_call_leaves_one_audit_row(settings: Settings) -> None:
    registry = Registry.from_url(settings.resolved_registry_url())
    log = AuditLog.from_registry(registry)
    try:
        async with client_for(with_principal(settings, "lin", ["support"]), "lin") as lin:
            found = await lineage(lin, "shop.reviews", direction="upstream")
            await error_text(lin, "get_lineage", product="analytics.order_facts")
        rows = log.query(principal="lin", limit=10)
        assert [(r.tool, r.product, r.outcome) for r in rows] == [
            ("get_lineage", "analytics.order_facts", "denied"),
            ("get_lineage", "shop.reviews", "ok"),
        ]
        assert rows[1].rows == len(found["nodes"])
    finally:
        registry.close()


async def test_the_graph_is_built_once_per_set_of_versions_and_again_after_a_registration(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []

    def counting(contracts: Any, **options: Any) -> Any:
        contracts = list(contracts)
        built.append(len(contracts))
        return build_lineage(contracts, **options)

    monkeypatch.setattr(lineage_cases, "build_lineage", counting)
    async with client_for(settings, "sam") as sam:
        first = await lineage(sam, "shop.customers", direction="downstream", depth=10)
        assert await lineage(sam, "shop.customers", direction="downstream", depth=10) == first
        assert len(built) == 1
        registry = Registry.from_url(settings.resolved_registry_url())
        try:
            old = registry.get("shop.reviews")
            registry.register(old.model_copy(update={"version": "9.0.0", "lineage": Lineage()}), actor="tests")
        finally:
            registry.close()
        again = await lineage(sam, "shop.customers", direction="downstream", depth=10)
    assert len(built) == 2  # a new version: the graph is built again, from the new contracts
    assert "shop.reviews" in node_ids(first) and again != first
