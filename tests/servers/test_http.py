"""The streamable-HTTP transport on loopback: bearer-token principals, refusals, real SDK client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from catalog.audit import AuditLog
from catalog.errors import ConfigError
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.settings import Settings

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(demo: DemoWorkspace) -> Iterator[str]:
    from servers.settings import load_settings

    settings = load_settings(demo.config_path)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_http_app(settings), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "HTTP server did not start"
    try:
        yield f"http://127.0.0.1:{port}{settings.server.path}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def http_client(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as transport_client,
        Client(streamable_http_client(url, http_client=transport_client)) as client,
    ):
        yield client


async def query(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("query_product", args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def test_a_request_without_a_token_is_refused_with_the_shared_error_shape(server_url: str) -> None:
    response = httpx.post(server_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "Bearer" in response.headers["www-authenticate"]


def test_a_wrong_token_is_refused(server_url: str) -> None:
    response = httpx.post(
        server_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": "Bearer not-a-configured-token"},
    )
    assert response.status_code == 401
    assert "unknown or malformed bearer token" in response.json()["error"]["message"]


async def test_the_sdk_client_cannot_connect_without_a_token(server_url: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 401 as a transport error
        async with http_client(server_url, None) as client:
            await client.list_tools()


async def test_each_token_acts_as_its_own_principal(server_url: str, demo: DemoWorkspace) -> None:
    async with http_client(server_url, demo.tokens["ana"]) as ana, http_client(server_url, demo.tokens["sam"]) as sam:
        ana_rows = await query(ana, product="shop.customers", columns=["email"], limit=5)
        sam_rows = await query(sam, product="shop.customers", columns=["email"], limit=5)
        assert ana_rows["masked_columns"] == ["email"] and sam_rows["masked_columns"] == []
        assert all("@" not in row[0] for row in ana_rows["rows"])
        assert all("@" in row[0] for row in sam_rows["rows"])
        regions = await query(ana, product="shop.orders", group_by=["region"], aggregates=[{"fn": "count", "as": "n"}])
        assert [row[0] for row in regions["rows"]] == ["EU"]


def test_http_refuses_to_start_without_any_token_configured(settings: Settings) -> None:
    tokenless = settings.model_copy(
        update={"principals": [p.model_copy(update={"token_sha256": None}) for p in settings.principals]}
    )
    with pytest.raises(ConfigError, match="token_sha256"):
        create_http_app(tokenless)


@pytest.fixture
def audit_log(settings: Settings) -> Iterator[AuditLog]:
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        yield AuditLog.from_registry(registry)
    finally:
        registry.close()


def test_a_refused_token_leaves_one_anonymous_audit_row(server_url: str, audit_log: AuditLog) -> None:
    before = len(audit_log.query(principal="anonymous", limit=10_000))
    httpx.post(server_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    httpx.post(server_url, json={}, headers={"Authorization": "Bearer not-a-configured-token"})
    rows = audit_log.query(principal="anonymous", limit=10_000)
    assert len(rows) == before + 2
    assert {(r.tool, r.outcome, r.error_code) for r in rows[:2]} == {("http", "denied", "unauthorized")}


async def test_a_refused_tool_call_over_http_leaves_one_row_as_the_caller(
    server_url: str, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    async with http_client(server_url, demo.tokens["sam"]) as sam:
        before = len(audit_log.query(principal="sam", limit=10_000))
        result = await sam.call_tool("query_product", {"product": "shop.orders", "limit": 0})
        assert result.is_error
        rows = audit_log.query(principal="sam", limit=10_000)
    assert len(rows) == before + 1
    assert (rows[0].tool, rows[0].error_code, rows[0].product) == ("query_product", "invalid_arguments", "shop.orders")


async def test_a_session_cannot_be_used_or_ended_with_another_principals_token(
    server_url: str, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    opened: list[str] = []

    async def remember_session(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            opened.append(response.headers["mcp-session-id"])

    ana_headers = {"Authorization": f"Bearer {demo.tokens['ana']}"}
    async with (
        httpx2.AsyncClient(headers=ana_headers, timeout=30, event_hooks={"response": [remember_session]}) as transport,
        Client(streamable_http_client(server_url, http_client=transport), mode="legacy") as ana,
    ):
        await query(ana, product="shop.orders", limit=1)
        session = opened[0]
        before = len(audit_log.query(principal="sam", limit=10_000))
        sam = {"Authorization": f"Bearer {demo.tokens['sam']}", "Mcp-Session-Id": session}
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "run_sql", "arguments": {}}}
        accept = {"Accept": "application/json, text/event-stream"}
        attempts = [
            httpx.post(server_url, json=call, headers={**sam, **accept}),
            httpx.get(server_url, headers={**sam, "Accept": "text/event-stream"}),
            httpx.delete(server_url, headers=sam),
        ]
        # answered exactly as an unknown session is: the id's existence is not confirmed
        unknown = httpx.delete(server_url, headers={**sam, "Mcp-Session-Id": "0" * 32})
        assert [(r.status_code, r.json()) for r in attempts] == [(unknown.status_code, unknown.json())] * 3
        assert unknown.status_code == 404
        rows = audit_log.query(principal="sam", limit=10_000)
        assert len(rows) == before + 4
        assert [(r.tool, r.outcome, r.error_code) for r in rows[:4]] == [
            ("http", "error", "http_404"),
            *[("http", "denied", "foreign_session")] * 3,
        ]
        still = await query(ana, product="shop.orders", limit=1)  # the session survived the attempts
        assert still["row_count"] == 1


async def test_a_tool_call_the_sdk_refuses_as_malformed_still_leaves_one_row(
    server_url: str, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    opened: list[str] = []

    async def remember_session(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            opened.append(response.headers["mcp-session-id"])

    ana_headers = {"Authorization": f"Bearer {demo.tokens['ana']}"}
    async with (
        httpx2.AsyncClient(headers=ana_headers, timeout=30, event_hooks={"response": [remember_session]}) as transport,
        Client(streamable_http_client(server_url, http_client=transport), mode="legacy") as ana,
    ):
        await ana.list_tools()
        before = len(audit_log.query(principal="ana", limit=10_000))
        nameless = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"arguments": {"product": "x"}}}
        headers = {**ana_headers, "Mcp-Session-Id": opened[0], "Accept": "application/json, text/event-stream"}
        response = httpx.post(server_url, json=nameless, headers=headers)
        assert response.status_code == 200 and '"code":-32602' in response.text
        rows = audit_log.query(principal="ana", limit=10_000)
    assert len(rows) == before + 1
    assert (rows[0].tool, rows[0].outcome, rows[0].error_code) == ("tools/call", "error", "invalid_params")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_a_body_over_the_limit_is_refused_before_it_is_parsed_and_audited(
    server_url: str, demo: DemoWorkspace, settings: Settings, chunked: bool
) -> None:
    sql = "SELECT count(*) FROM shop.orders WHERE order_id IN (" + ",".join(["1"] * 1_000_000) + ")"
    body = httpx.Request(
        "POST",
        server_url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "run_sql", "arguments": {"sql": sql}},
        },
    ).read()
    assert len(body) > settings.server.max_request_bytes
    headers = {
        "Authorization": f"Bearer {demo.tokens['ana']}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    content: Any = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    response = httpx.post(server_url, content=content, headers=headers, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        (row,) = AuditLog.from_registry(registry).query(principal="ana", tool="http", limit=1)
    finally:
        registry.close()
    assert row.error_code == "request_too_large" and row.outcome == "error"


def test_the_401_challenge_names_the_resource_metadata_served_without_a_token(server_url: str) -> None:
    challenge = httpx.post(server_url, json={}).headers["www-authenticate"]
    url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    assert url == server_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    document = httpx.get(url).json()
    assert document == {"resource": server_url, "bearer_methods_supported": ["header"], "resource_name": "dataproducts"}
