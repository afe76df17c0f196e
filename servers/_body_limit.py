"""A cap on HTTP request bodies, enforced before any byte of JSON is parsed.

An MCP request is parsed and validated on the server's event loop; a body of many megabytes (a huge
``IN`` list in ``run_sql``) would hold every other client up while it is decoded, only to be refused
by the SQL guard afterwards. Bodies over ``max_bytes`` — by their ``Content-Length`` or, when
streamed, as they arrive — get ``413`` with the shared JSON error shape instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware"]


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """ASGI middleware: answer 413 to request bodies larger than ``max_bytes``.

    ``on_refused(scope, size)`` runs before the answer is sent (the server audits the refusal there).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        on_refused: Callable[[Scope, int], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, int(declared))
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if started:
                raise
            await self._refuse(scope, send, received)

    async def _refuse(self, scope: Scope, send: Send, size: int) -> None:
        if self.on_refused is not None:
            await self.on_refused(scope, size)
        message = (
            f"request body of {size:,}+ bytes is over the limit of {self.max_bytes:,} bytes; "
            "send smaller requests (aggregate in SQL instead of listing values)"
        )
        body = json.dumps({"error": {"code": "request_too_large", "message": message}}).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
