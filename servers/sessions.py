"""MCP sessions bound to their principal, and an audit row for every HTTP request the transport refuses.

A streamable-HTTP session is named by the ``Mcp-Session-Id`` the server returns when it opens; every
later request of the session (POST, GET stream, DELETE) carries it. Knowing an id must not let another
principal use or end the session: :class:`SessionGuardMiddleware` records which principal opened each
session and answers a request of any other principal exactly as the SDK answers an unknown session
(404 ``Session not found``), so the refusal does not even confirm that the session exists. The
refusal is audited (``foreign_session``, outcome ``denied``).

The SDK enforces the same binding on its own (see :mod:`servers.auth`, which hands it the principal),
so a session forgotten here (the record is bounded) is still refused, then audited as ``http_404``.
Any other response of 400 or more that no inner layer audited (a malformed request, an expired
session) gets an ``http_<status>`` row, so every refused request leaves one.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import DEFAULT_MAX_SESSIONS
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog.audit import AuditLog, AuditRecord, Outcome
from catalog.errors import AuditError
from servers._audit_trail import ANONYMOUS, audit_scope, refusal, write_audit
from servers.auth import current_principal, http_args

__all__ = ["SessionGuardMiddleware"]

logger = logging.getLogger(__name__)

_HEADER = MCP_SESSION_ID_HEADER.lower().encode("latin-1")


class SessionGuardMiddleware:
    """ASGI middleware inside :class:`~servers.auth.BearerAuthMiddleware`: sessions keep to their principal."""

    def __init__(self, app: ASGIApp, audit: AuditLog, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.app = app
        self.audit = audit
        self.max_sessions = max_sessions
        self._owners: OrderedDict[str, str] = OrderedDict()  # session id -> principal name, oldest first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        found = current_principal()
        principal = found.name if found is not None else ANONYMOUS
        session = dict(scope.get("headers") or []).get(_HEADER, b"").decode("latin-1") or None
        args = http_args(scope)

        with audit_scope() as written:
            if session is not None and self._owner(session) not in (None, principal):
                logger.warning("refused a request of principal %r on a session another principal opened", principal)
                await self._audit(
                    refusal(principal, "http", args, code="foreign_session", outcome="denied", started=started)
                )
                await _session_not_found(send)
                return

            async def watch(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    if status >= 400 and not written:  # a refusal nobody inside audited: its row goes out first
                        outcome: Outcome = "denied" if status in (401, 403) else "error"
                        code = f"http_{status}"
                        await self._audit(refusal(principal, "http", args, code=code, outcome=outcome, started=started))
                    opened = dict(message.get("headers") or []).get(_HEADER)
                    if session is None and opened and status < 400:
                        self._bind(opened.decode("latin-1"), principal)
                    elif session is not None and scope.get("method") == "DELETE" and status < 300:
                        self._owners.pop(session, None)
                await send(message)

            await self.app(scope, receive, watch)

    def _owner(self, session: str) -> str | None:
        owner = self._owners.get(session)
        if owner is not None:
            self._owners.move_to_end(session)
        return owner

    def _bind(self, session: str, principal: str) -> None:
        self._owners[session] = principal
        self._owners.move_to_end(session)
        while len(self._owners) > self.max_sessions:
            self._owners.popitem(last=False)

    async def _audit(self, record: AuditRecord) -> None:
        try:
            await write_audit(self.audit, record)
        except AuditError:  # the request is refused either way; nothing was served
            logger.error("could not audit a refused HTTP request", exc_info=True)


async def _session_not_found(send: Send) -> None:
    """The SDK's answer to an unknown session id, byte for byte in shape."""
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message="Session not found"))
    payload = body.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode("ascii"))],
        }
    )
    await send({"type": "http.response.body", "body": payload})
