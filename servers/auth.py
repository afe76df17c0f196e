"""Bearer-token authentication for the HTTP transport.

Tokens are configured as sha256 hashes mapped to a principal and its roles (``principals:`` in
dataproducts.yaml). Every HTTP request must carry ``Authorization: Bearer <token>``; a missing or
unknown token gets 401 with the shared JSON error shape, before any MCP message is read, and leaves an
audit row (principal ``anonymous``, tool ``http``, error ``unauthorized``). The resolved principal is
put in a context variable that the MCP SDK carries to the tool handlers, and in the ASGI scope as the
SDK's authenticated user, which binds each MCP session to the principal that opened it.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.audit import AuditLog
from catalog.errors import AuditError
from catalog.principal import Principal
from servers._audit_trail import ANONYMOUS, refusal, write_audit
from servers.settings import Settings

__all__ = ["BearerAuthMiddleware", "current_principal", "http_args"]

logger = logging.getLogger(__name__)

_principal: ContextVar[Principal | None] = ContextVar("dataproducts_principal", default=None)


def current_principal() -> Principal | None:
    """The principal authenticated for the current HTTP request, if any."""
    return _principal.get()


def http_args(scope: Scope) -> dict[str, str]:
    """What an HTTP-level audit row digests: method, path and the MCP session id, if any."""
    session = dict(scope.get("headers") or []).get(b"mcp-session-id", b"").decode("latin-1")
    return {"method": str(scope.get("method", "")), "path": str(scope.get("path", "")), "session": session}


class BearerAuthMiddleware:
    """ASGI middleware: resolve the bearer token to a principal, or answer 401 (audited in ``audit``)."""

    def __init__(self, app: ASGIApp, settings: Settings, audit: AuditLog) -> None:
        self.app = app
        self.settings = settings
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        principal = self.settings.principal_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            reason = "missing bearer token" if not header else "unknown or malformed bearer token"
            await self._audit_unauthorized(scope, started)
            await _unauthorized(send, reason)
            return
        # The SDK keys session ownership on the user's client_id (it compares client, issuer, subject only).
        user = AuthenticatedUser(AccessToken(token="", client_id=principal.name, scopes=sorted(principal.roles)))
        reset = _principal.set(principal)
        try:
            await self.app({**scope, "user": user}, receive, send)
        finally:
            _principal.reset(reset)

    async def _audit_unauthorized(self, scope: Scope, started: float) -> None:
        record = refusal(ANONYMOUS, "http", http_args(scope), code="unauthorized", outcome="denied", started=started)
        try:
            await write_audit(self.audit, record)
        except AuditError:  # the request is refused either way; nothing was served
            logger.error("could not audit a refused HTTP request", exc_info=True)


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
