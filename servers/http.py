"""The streamable-HTTP deployment: one shared service, bearer-token principals, loopback by default.

Middleware, outermost first: :class:`~servers.telemetry.TraceContextMiddleware` (the request's ``traceparent``),
:class:`~servers.prometheus_metrics.MetricsMiddleware` (``metrics.path``; here unless ``metrics.require_token``),
Middleware, outermost first: :class:`~servers.auth.BearerAuthMiddleware` (401 without a valid token:
a hashed token or, with ``auth.mode: oauth``, an access token, see :mod:`servers.oauth`),
:class:`~servers._body_limit.BodyLimitMiddleware` (413 for a body over ``server.max_request_bytes``,
before any JSON is parsed), :class:`~servers._tool_scopes.ToolScopeMiddleware` (403 for a tool whose
``auth.tool_scopes`` the token lacks), :class:`~servers.sessions.SessionGuardMiddleware` (sessions keep to their
principal; refused requests are audited), then the SDK's streamable-HTTP app. Outside them all, requests
under ``catalog_page.path`` go to the read-only catalog page (:mod:`servers.catalog_page`), which
resolves its viewers itself (login session or bearer token).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.errors import ConfigError
from servers._audit_trail import ANONYMOUS, refusal, write_audit
from servers._body_limit import BodyLimitMiddleware
from servers._tool_scopes import ToolScopeMiddleware
from servers.auth import BearerAuthMiddleware, current_principal, http_args
from servers.catalog_page import CatalogPageMount, create_catalog_page
from servers.mcp import create_server
from servers.oauth import OAuthVerifier, authenticator_for
from servers.prometheus_metrics import MetricsMiddleware
from servers.resource_metadata import metadata_routes, metadata_url
from servers.service import DataProductsService
from servers.sessions import SessionGuardMiddleware
from servers.settings import Settings
from servers.telemetry import TraceContextMiddleware

__all__ = ["create_http_app", "serve_http"]


def create_http_app(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> Starlette:
    """A Starlette app serving MCP at ``settings.server.path``; every request needs a bearer token.

    The service (registry, connectors) is opened once here and shared by all sessions; it is closed
    when the app shuts down.

    ``metrics.path`` serves Prometheus metrics, behind the bearer check only when
    ``metrics.require_token``; a request's ``traceparent`` header parents its calls' spans (see
    :mod:`servers.telemetry`; ``tracer_provider`` as in :func:`~servers.mcp.create_server`).

    Raises:
        ConfigError: the settings are incomplete (tokens mode and no principal with a token, an OAuth key
            file that cannot be read, no hash salt), or the
            metrics path is the MCP path.
    """
    authenticator = authenticator_for(settings)
    if settings.metrics.enabled and settings.metrics.path == settings.server.path:
        raise ConfigError(f"metrics.path {settings.metrics.path!r} is the MCP path (server.path): pick another")
    service = DataProductsService.open(settings)
    mcp_server = create_server(settings, service=service, tracer_provider=tracer_provider)
    app = mcp_server.streamable_http_app(streamable_http_path=settings.server.path, host=settings.server.host)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Starlette) -> AsyncIterator[None]:
        try:
            async with inner(a), service.checks_on_schedule():
                yield
        finally:
            await service.aclose()
            if isinstance(authenticator, OAuthVerifier):
                await authenticator.aclose()

    app.router.lifespan_context = lifespan
    public = metadata_routes(settings)  # RFC 9728 documents, served without a token
    app.router.routes.extend(public)
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

    resource_metadata = metadata_url(settings)
    if settings.auth.tool_scopes:  # inside the body limit: it reads the body
        app.add_middleware(
            ToolScopeMiddleware,
            tool_scopes=settings.auth.tool_scopes,
            audit=service.audit,
            metadata_url=resource_metadata,
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_request_bytes, on_refused=audit_too_large)
    metrics = settings.metrics
    if metrics.enabled and metrics.require_token:
        app.add_middleware(MetricsMiddleware, path=metrics.path)  # behind the bearer check
    app.add_middleware(
        BearerAuthMiddleware,
        authenticator=authenticator,
        audit=service.audit,
        metadata_url=resource_metadata,
        required_scopes=settings.auth.required_scopes,
        public_paths=[route.path for route in public],
    )
    if metrics.enabled and not metrics.require_token:
        app.add_middleware(MetricsMiddleware, path=metrics.path)  # before the bearer check: no token needed
    if settings.catalog_page.enabled:  # the page resolves its own viewers (servers.catalog_page)
        page = create_catalog_page(settings, service)
        app.add_middleware(CatalogPageMount, page=page, prefix=settings.catalog_page.path)
    app.add_middleware(TraceContextMiddleware)  # outermost: the trace context holds for the whole request
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
