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

from catalog.errors import ConfigError
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
