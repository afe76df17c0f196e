"""MCP resources: ``resources/list`` lists the products the caller may read, a page at a time; a product
missing or not granted answers the spec's resource-not-found error; both are audited. Through the SDK's
real client, in memory, over the registered demo workspace."""

from __future__ import annotations

import itertools
import json

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from catalog.audit import AuditLog
from catalog.policy import can_read
from catalog.registry import Registry
from servers.mcp import create_server
from servers.settings import Settings

pytestmark = pytest.mark.anyio

_fresh = itertools.count()


def as_principal(settings: Settings, roles: list[str]) -> tuple[Settings, str]:
    """``settings`` with one more principal of ``roles``, under a fresh name (its audit rows are its own)."""
    name = f"reader{next(_fresh)}-{'-'.join(roles) or 'none'}"
    extra = settings.principals[0].model_copy(update={"name": name, "roles": frozenset(roles)})
    return settings.model_copy(update={"principals": [*settings.principals, extra]}), name


def readable_names(settings: Settings, principal: str) -> list[str]:
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        who = settings.principal(principal)
        return sorted(c.name for c in registry.list_contracts() if can_read(c, who))
    finally:
        registry.close()


def audit_rows(settings: Settings, principal: str) -> list[tuple[str, str, str | None]]:
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        rows = AuditLog.from_registry(registry).query(principal=principal, limit=100)
        return sorted((r.tool, r.outcome, r.error_code) for r in rows)
    finally:
        registry.close()


@pytest.mark.parametrize("roles", [["analyst", "sales-eu"], ["support"], []])
async def test_resources_list_names_exactly_the_products_the_caller_may_read(
    settings: Settings, roles: list[str]
) -> None:
    settings, name = as_principal(settings, roles)
    async with Client(create_server(settings, principal=settings.principal(name))) as client:
        listed = await client.list_resources()
    expected = readable_names(settings, name)
    assert [r.name for r in listed.resources] == expected
    assert [str(r.uri) for r in listed.resources] == [f"product://{n}" for n in expected]
    assert listed.next_cursor is None
    assert audit_rows(settings, name) == [("list_resources", "ok", None)]


async def test_resources_list_pages_with_the_sdk_cursor_and_every_product_once(settings: Settings) -> None:
    settings, name = as_principal(settings, ["analyst", "sales", "pii-reader"])
    server = create_server(settings, principal=settings.principal(name))
    server.resource_page_size = 2
    pages: list[list[str]] = []
    async with Client(server) as client:
        cursor: str | None = None
        while True:
            page = await client.list_resources(cursor=cursor)
            pages.append([r.name for r in page.resources])
            cursor = page.next_cursor
            if cursor is None:
                break
        # every listed product can be read as the resource it names
        first = await client.read_resource(f"product://{pages[0][0]}")
    expected = readable_names(settings, name)
    assert len(expected) > 2, "the demo should hold more products than one page"
    assert all(len(p) <= 2 for p in pages) and [n for p in pages for n in p] == expected
    assert json.loads(first.contents[0].text)["name"] == pages[0][0]
    assert [row for row in audit_rows(settings, name) if row[0] == "list_resources"] == [
        ("list_resources", "ok", None)
    ] * len(pages)


async def test_a_cursor_the_server_never_gave_answers_invalid_params_and_is_audited(settings: Settings) -> None:
    settings, name = as_principal(settings, ["analyst"])
    async with Client(create_server(settings, principal=settings.principal(name))) as client:
        with pytest.raises(MCPError) as info:
            await client.list_resources(cursor="%%%not-base64")
    assert info.value.error.code == INVALID_PARAMS
    assert info.value.error.message.startswith("invalid_request: cursor is not a nextCursor this server gave")
    assert audit_rows(settings, name) == [("list_resources", "error", "invalid_request")]


async def test_a_product_the_caller_may_not_read_answers_resource_not_found_not_internal_error(
    settings: Settings,
) -> None:
    settings, name = as_principal(settings, ["support"])
    async with Client(create_server(settings, principal=settings.principal(name))) as client:
        with pytest.raises(MCPError) as denied:
            await client.read_resource("product://shop.orders")
        with pytest.raises(MCPError) as missing:
            await client.read_resource("product://shop.ordrs")
    assert denied.value.error.code == missing.value.error.code == INVALID_PARAMS  # resource not found (SEP-2164)
    assert denied.value.error.message.startswith("access_denied: ")
    assert missing.value.error.message.startswith("not_found: no product 'shop.ordrs'")
    assert audit_rows(settings, name) == [
        ("read_resource", "denied", "access_denied"),
        ("read_resource", "error", "not_found"),
    ]
