"""A client that hangs up before its request body arrived leaves no traceback and no answer."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from servers.http import ClientGoneMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def reads_body(scope: Scope, receive: Receive, send: Send) -> None:
    await Request(scope, receive).body()  # what the MCP SDK does first with a POST
    raise AssertionError("the body cannot be read: the client is gone")


async def test_a_client_gone_before_its_body_arrived_ends_the_request_quietly() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": [], "query_string": b""}
    await ClientGoneMiddleware(reads_body)(scope, receive, send)
    assert sent == []


async def test_other_failures_still_reach_the_server_error_handling() -> None:
    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        pass

    with pytest.raises(RuntimeError, match="a bug"):
        await ClientGoneMiddleware(fails)({"type": "http"}, receive, send)
