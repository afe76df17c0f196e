"""OAuth 2.0 Protected Resource Metadata (RFC 9728): how a client learns where to get a token.

The document is served at ``/.well-known/oauth-protected-resource`` followed by the MCP path (RFC 9728
§3.1, the form MCP clients try first) and at ``/.well-known/oauth-protected-resource`` itself, without
authentication. Every 401 and 403 points to it in ``WWW-Authenticate: Bearer resource_metadata="..."``.

In ``oauth`` mode it lists the configured issuers as ``authorization_servers`` and every scope this
server may ask for; the SDK's route and model serve it. In ``tokens`` mode there is no authorization
server to name: the document says only which resource this is and that tokens go in the header, and
the resource URL is taken from the request when ``auth.resource`` is unset.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from servers.auth import WELL_KNOWN
from servers.settings import Settings

__all__ = ["metadata_routes", "metadata_url"]


def _resource(settings: Settings, scope: Scope) -> str:
    if settings.auth.resource is not None:
        return str(settings.auth.resource).removesuffix("/")
    return str(URL(scope=scope).replace(path=settings.server.path, query="", fragment=""))


def metadata_url(settings: Settings) -> Callable[[Scope], str]:
    """For a request, the URL of this server's protected resource metadata."""

    def url(scope: Scope) -> str:
        return str(build_resource_metadata_url(AnyHttpUrl(_resource(settings, scope))))

    return url


def metadata_routes(settings: Settings) -> list[Route]:
    """The public metadata routes: the path-suffixed form and the bare well-known path."""
    if settings.auth.mode == "oauth" and settings.auth.resource is not None:
        (suffixed,) = create_protected_resource_routes(
            resource_url=settings.auth.resource,
            authorization_servers=[AnyHttpUrl(i.issuer) for i in settings.auth.issuers],
            scopes_supported=settings.auth.all_scopes or None,
            resource_name="dataproducts",
        )
        return [suffixed, Route(WELL_KNOWN, endpoint=suffixed.endpoint, methods=["GET", "OPTIONS"])]

    async def tokens_metadata(request: Request) -> Response:
        document = {
            "resource": _resource(settings, request.scope),
            "bearer_methods_supported": ["header"],
            "resource_name": "dataproducts",
        }
        return JSONResponse(document, headers={"Cache-Control": "public, max-age=3600"})

    path = WELL_KNOWN + settings.server.path.rstrip("/")
    return [Route(p, endpoint=tokens_metadata, methods=["GET"]) for p in dict.fromkeys([path, WELL_KNOWN])]
