"""Bearer-token authentication for the HTTP transport.

Tokens are configured as sha256 hashes mapped to a principal and its roles (``principals:`` in
dataproducts.yaml). Every HTTP request must carry ``Authorization: Bearer <token>``; a missing or
unknown token gets 401 with the shared JSON error shape, before any MCP message is read. The
resolved principal is put in a context variable that the MCP SDK carries to the tool handlers.
"""

from __future__ import annotations

import json
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.principal import Principal
from servers.settings import Settings

__all__ = ["BearerAuthMiddleware", "current_principal"]

_principal: ContextVar[Principal | None] = ContextVar("dataproducts_principal", default=None)


def current_principal() -> Principal | None:
    """The principal authenticated for the current HTTP request, if any."""
    return _principal.get()


class BearerAuthMiddleware:
    """ASGI middleware: resolve the bearer token to a principal, or answer 401."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        principal = self.settings.principal_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            reason = "missing bearer token" if not header else "unknown or malformed bearer token"
            await _unauthorized(send, reason)
            return
        reset = _principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            _principal.reset(reset)


async def _unauthorized(send: Send, reason: str) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "unauthorized",
                "message": f"{reason}: send 'Authorization: Bearer <token>' with a token configured for a principal",
            }
        }
    ).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="dataproducts"'),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
