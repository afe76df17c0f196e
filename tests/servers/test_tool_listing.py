"""The tool list an agent pays for in every turn: small, every parameter described, limits as configured."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import Tool

from catalog.query import Limits
from servers._tool_listing import lean_tools
from servers.mcp import create_server
from servers.settings import Settings
from servers.tools import TOOLS
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio

FIRST_FIVE = ("search_products", "describe_product", "query_product", "run_sql", "search_documents")
FIVE_TOOLS_MAX_TOKENS = 2_000
ALL_TOOLS_MAX_TOKENS = 3_650


def tokens(listing: dict[str, Any]) -> float:
    """What a listing costs an agent: characters of its JSON, compact, over 4."""
    return len(json.dumps(listing, separators=(",", ":"), ensure_ascii=False)) / 4


async def listing(client: Client) -> dict[str, Any]:
    """The tools/list response as it goes on the wire."""
    return (await client.list_tools()).model_dump(mode="json", by_alias=True, exclude_none=True)


async def test_the_tool_list_stays_within_its_token_budget(ana: Client, settings: Settings) -> None:
    everything = await listing(ana)
    assert len(everything["tools"]) == len(TOOLS)
    assert tokens(everything) <= ALL_TOOLS_MAX_TOKENS
    five = settings.model_copy(update={"server": settings.server.model_copy(update={"tools": list(FIRST_FIVE)})})
    async with client_for(five, "ana") as client:
        assert tokens(await listing(client)) <= FIVE_TOOLS_MAX_TOKENS


async def test_every_tool_parameter_is_described(ana: Client) -> None:
    for tool in (await listing(ana))["tools"]:
        for name, schema in tool["inputSchema"]["properties"].items():
            assert schema.get("description"), f"{tool['name']}.{name} has no description"


async def test_the_limits_a_listing_states_are_the_configured_ones(settings: Settings) -> None:
    limits = settings.limits.model_copy(update={"max_rows": 7, "max_sql_chars": 555})
    async with client_for(settings.model_copy(update={"limits": limits}), "ana") as client:
        text = json.dumps(await listing(client))
        tools = {tool["name"]: tool for tool in (await listing(client))["tools"]}
    assert "{max_" not in text
    assert "at most 7" in tools["query_product"]["inputSchema"]["properties"]["limit"]["description"]
    assert "at most 7" in tools["query_metrics"]["inputSchema"]["properties"]["limit"]["description"]
    assert "at most 555 chars" in tools["run_sql"]["inputSchema"]["properties"]["sql"]["description"]
    assert "at most 7 rows" in tools["run_sql"]["description"]
    assert tools["search_documents"]["inputSchema"]["properties"]["k"]["maximum"] == 50


async def test_the_lean_input_schemas_admit_and_refuse_what_the_full_ones_do(settings: Settings) -> None:
    server = create_server(settings, principal=settings.principal("ana"))
    full = {tool.name: tool.input_schema for tool in await MCPServer.list_tools(server)}
    lean = {tool.name: tool.input_schema for tool in await server.list_tools()}
    assert full.keys() == lean.keys() and full != lean
    arguments: list[tuple[str, dict[str, Any]]] = [
        ("query_product", {"product": "shop.orders", "limit": 5, "columns": ["order_id"]}),
        ("query_product", {"product": "shop.orders", "limit": 0}),
        ("query_product", {"product": "shop.orders", "limit": 2.5}),
        ("query_product", {"product": "shop.orders", "where": [{"column": "a", "op": "=", "value": 1.5}]}),
        ("query_product", {"product": "shop.orders", "where": [{"column": "a", "op": "in", "value": [1, None]}]}),
        ("query_product", {"product": "shop.orders", "where": [{"or": [{"column": "a", "op": "is_null"}]}]}),
        ("query_product", {"product": "shop.orders", "where": [{"or": []}]}),
        ("query_product", {"product": "shop.orders", "where": [{"column": "a", "op": "~"}]}),
        ("query_product", {"product": "shop.orders", "where": [{"column": "a", "op": "=", "extra": 1}]}),
        ("query_product", {"product": "shop.orders", "aggregates": [{"fn": "sum", "column": "x", "as": "1bad"}]}),
        ("query_product", {"product": "shop.orders", "order_by": [{"column": "x", "direction": "up"}]}),
        ("query_metrics", {"metrics": []}),
        ("query_metrics", {"metrics": ["m"], "group_by": [{"dimension": "d", "grain": "fortnight"}]}),
        ("query_metrics", {"metrics": ["m"], "time_range": {"start": "2025-01-01"}}),
        ("search_documents", {"query": "x", "k": 51}),
        ("get_lineage", {"product": "p", "direction": "sideways"}),
    ]
    verdicts = [Draft202012Validator(full[tool]).is_valid(args) for tool, args in arguments]
    assert [Draft202012Validator(lean[tool]).is_valid(args) for tool, args in arguments] == verdicts
    assert True in verdicts and False in verdicts


def test_leaning_keeps_a_choice_it_cannot_merge_without_changing_it() -> None:
    number_keyword = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "number"}]}
    enum_or_null = {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}]}
    schema = {
        "type": "object",
        "properties": {"n": number_keyword, "e": enum_or_null, "s": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    }
    [lean] = lean_tools([Tool(name="t", input_schema={"type": "object"}, output_schema=schema)], Limits())
    assert lean.output_schema is not None
    properties = lean.output_schema["properties"]
    assert properties["n"] == number_keyword
    assert properties["e"] == enum_or_null
    assert properties["s"] == {"type": ["string", "null"]}
