"""What a principal is told names only products it may read: not-found suggestions and lineage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from servers.settings import Settings
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio

#: What the role ``support`` may not read in the demo workspace.
UNREADABLE_BY_SUPPORT = ("shop.orders", "shop.order_lines", "analytics.order_facts", "analytics.daily_sales")


def with_principal(settings: Settings, name: str, roles: list[str]) -> Settings:
    extra = settings.principals[0].model_copy(update={"name": name, "roles": frozenset(roles)})
    return settings.model_copy(update={"principals": [*settings.principals, extra]})


async def error_text(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_not_found_suggests_only_products_the_caller_may_read(settings: Settings) -> None:
    async with client_for(with_principal(settings, "sue", ["support"]), "sue") as sue:
        messages = [
            await error_text(sue, "describe_product", product="shop.ordrs"),
            await error_text(sue, "query_product", product="shop.order_line"),
            await error_text(sue, "run_sql", sql="select count(*) from analytics.order_fact"),
            await error_text(sue, "search_documents", query="refunds", product="analytics.daily_sale"),
        ]
        with pytest.raises(MCPError) as info:
            await sue.read_resource("product://shop.ordrs")
        messages.append(info.value.error.message)
        listing = await error_text(sue, "describe_product", product="zzz.nothing_like_it")
    for message in messages:
        assert "not_found: no product " in message, message
        assert not [name for name in UNREADABLE_BY_SUPPORT if name in message], message
    assert listing.endswith("products you may read: docs.handbook, shop.customers, shop.reviews")


async def test_a_principal_who_may_read_nothing_is_told_so_not_what_exists(settings: Settings) -> None:
    async with client_for(with_principal(settings, "nemo", []), "nemo") as nemo:
        message = await error_text(nemo, "describe_product", product="shop.ordrs")
    assert message.endswith(
        "not_found: no product 'shop.ordrs'; you may read no products; ask a product's owner for access"
    )


async def test_a_readable_product_named_exactly_is_refused_with_the_reason(settings: Settings) -> None:
    # The chosen trade-off: an exact name of a product the caller may not read answers access_denied
    # with the policy's reason, so the caller can ask the owner; it is never suggested or listed.
    async with client_for(with_principal(settings, "sid", ["support"]), "sid") as sid:
        message = await error_text(sid, "describe_product", product="shop.orders")
    assert "access_denied: access to shop.orders denied" in message


async def test_lineage_lists_only_upstream_products_the_caller_may_read(settings: Settings, sam: Client) -> None:
    async with client_for(with_principal(settings, "eli", ["sales-eu"]), "eli") as eli:
        described = await eli.call_tool("describe_product", {"product": "analytics.order_facts"})
        assert described.structured_content is not None
        assert described.structured_content["upstream"] == ["shop.orders", "shop.order_lines"]
        resource = await eli.read_resource("product://analytics.order_facts")
        document = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
        assert document["upstream"] == ["shop.orders", "shop.order_lines"]
    everything = await sam.call_tool("describe_product", {"product": "analytics.order_facts"})
    assert everything.structured_content is not None
    assert everything.structured_content["upstream"] == ["shop.orders", "shop.order_lines", "shop.customers"]
