"""Per-tool scopes at the HTTP level: a ``tools/call`` whose tool needs a scope the token lacks gets 403.

``auth.tool_scopes`` maps a tool to the scopes calling it needs. The JSON-RPC body of a POST is read
(it is already bounded by :class:`~servers._body_limit.BodyLimitMiddleware`, which runs outside this
one), and a ``tools/call`` naming such a tool without its scopes is answered 403 with
``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`` (RFC 6750 §3.1), so the client
can ask for a token with more scope and retry. The refusal is audited as the caller, with the tool
named. Any other request goes on with its body replayed unchanged.

Principals without an access token (``scopes`` is None: hashed-token mode) are not scope-limited.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog.audit import AuditLog
from catalog.errors import AuditError
from servers._audit_trail import refusal, write_audit
from servers.auth import current_principal, http_args, send_insufficient_scope

__all__ = ["ToolScopeMiddleware"]

logger = logging.getLogger(__name__)


def _called_tools(body: bytes) -> list[str]:
    """The tool names of the ``tools/call`` messages in a JSON-RPC body (one message or a batch)."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        return []  # not JSON (or nested past the parser's depth): the SDK answers it
    messages = parsed if isinstance(parsed, list) else [parsed]
    names = []
    for message in messages:
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            if isinstance(name, str):
                names.append(name)
    return names


class ToolScopeMiddleware:
    """ASGI middleware refusing ``tools/call`` of a tool whose ``tool_scopes`` the token lacks."""

    def __init__(
        self, app: ASGIApp, tool_scopes: dict[str, list[str]], audit: AuditLog, metadata_url: Callable[[Scope], str]
    ) -> None:
        self.app = app
        self.tool_scopes = tool_scopes
        self.audit = audit
        self.metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = current_principal()
        if scope["type"] != "http" or scope.get("method") != "POST" or principal is None or principal.scopes is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        for tool in _called_tools(body):
            missing = sorted(set(self.tool_scopes.get(tool, [])) - principal.scopes)
            if missing:
                record = refusal(
                    principal.name,
                    tool,
                    {**http_args(scope), "scopes": " ".join(missing)},
                    code="insufficient_scope",
                    outcome="denied",
                    started=started,
                )
                try:
                    await write_audit(self.audit, record)
                except AuditError:  # the request is refused either way; nothing was served
                    logger.error("could not audit a refused tool call", exc_info=True)
                await send_insufficient_scope(send, missing, self.metadata_url(scope), what=f"tool {tool}")
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
