"""The streamable-HTTP deployment: one shared service, bearer-token principals, loopback by default.

Middleware, outermost first: :class:`~servers.auth.BearerAuthMiddleware` (401 without a valid token),
:class:`~servers._body_limit.BodyLimitMiddleware` (413 for a body over ``server.max_request_bytes``,
before any JSON is parsed), :class:`~servers.sessions.SessionGuardMiddleware` (sessions keep to their
principal; refused requests are audited), then the SDK's streamable-HTTP app.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.errors import ConfigError
from servers._audit_trail import ANONYMOUS, refusal, write_audit
from servers._body_limit import BodyLimitMiddleware
from servers.auth import BearerAuthMiddleware, current_principal, http_args
from servers.mcp import create_server
from servers.service import DataProductsService
from servers.sessions import SessionGuardMiddleware
from servers.settings import Settings

__all__ = ["create_http_app", "serve_http"]


def create_http_app(settings: Settings) -> Starlette:
    """A Starlette app serving MCP at ``settings.server.path``; every request needs a bearer token.

    The service (registry, connectors) is opened once here and shared by all sessions; it is closed
    when the app shuts down.

    Raises:
        ConfigError: the settings are incomplete (no principals with tokens, no hash salt).
    """
    if not any(p.token_sha256 for p in settings.principals):
        raise ConfigError(
            "no principal has a token_sha256: HTTP needs at least one; "
            "generate one with `dataproducts token NAME` and add it under principals:"
        )
    service = DataProductsService.open(settings)
    mcp_server = create_server(settings, service=service)
    app = mcp_server.streamable_http_app(streamable_http_path=settings.server.path, host=settings.server.host)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Starlette) -> AsyncIterator[None]:
        try:
            async with inner(a), service.checks_on_schedule(), service.replicas_on_schedule():
                yield
        finally:
            await service.aclose()

    app.router.lifespan_context = lifespan
    app.add_middleware(ClientGoneMiddleware)  # innermost: the SDK reads the body and may find the client gone
    app.add_middleware(SessionGuardMiddleware, audit=service.audit)  # added first: runs innermost

    async def audit_too_large(scope: Scope, size: int) -> None:
        principal = current_principal()
        record = refusal(
            principal.name if principal else ANONYMOUS,
            "http",
            {**http_args(scope), "bytes": str(size)},
            code="request_too_large",
            outcome="error",
            started=time.perf_counter(),
        )
        await write_audit(service.audit, record)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_request_bytes, on_refused=audit_too_large)
    app.add_middleware(BearerAuthMiddleware, settings=settings, audit=service.audit)
    return app


class ClientGoneMiddleware:
    """A client that disconnects before its request body arrived is gone: nothing to answer, no traceback.

    No call ran (the body was never read), so there is no audit row to write either.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            return


def serve_http(settings: Settings) -> None:
    """Run the HTTP server until interrupted."""
    app = create_http_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        timeout_keep_alive=int(settings.server.keep_alive_s),
    )
