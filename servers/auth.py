"""Bearer-token authentication for the HTTP transport.

Every HTTP request must carry ``Authorization: Bearer <token>``. An :class:`Authenticator` turns the
token into a principal: :class:`HashedTokens` looks its sha256 up under ``principals:`` (``auth.mode:
tokens``), :class:`servers.oauth.OAuthVerifier` checks an OAuth access token (``auth.mode: oauth``).
A missing or refused token gets 401 with the shared JSON error shape and a ``WWW-Authenticate: Bearer``
challenge naming the protected resource metadata (RFC 9728), before any MCP message is read; a token
lacking a scope every request needs (``auth.required_scopes``) gets 403 ``insufficient_scope``. Each
refusal leaves an audit row (tool ``http``; principal ``anonymous`` for a 401, the caller for a 403).

The resolved principal is put in a context variable that the MCP SDK carries to the tool handlers,
and in the ASGI scope as the SDK's authenticated user, which binds each MCP session to the principal
that opened it. The metadata documents themselves (``/.well-known/oauth-protected-resource...``) are
public.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.audit import AuditLog, Outcome
from catalog.errors import AuditError, ConfigError
from catalog.principal import Principal
from servers._audit_trail import ANONYMOUS, refusal, write_audit
from servers.settings import Settings

__all__ = [
    "WELL_KNOWN",
    "Authenticated",
    "Authenticator",
    "BearerAuthMiddleware",
    "HashedTokens",
    "TokenRejectedError",
    "current_principal",
    "http_args",
    "send_json_error",
]

logger = logging.getLogger(__name__)

#: Path prefix of the protected resource metadata (RFC 9728 §3), served without authentication.
WELL_KNOWN = "/.well-known/oauth-protected-resource"

_principal: ContextVar[Principal | None] = ContextVar("dataproducts_principal", default=None)


def current_principal() -> Principal | None:
    """The principal authenticated for the current HTTP request, if any."""
    return _principal.get()


def http_args(scope: Scope) -> dict[str, str]:
    """What an HTTP-level audit row digests: method, path and the MCP session id, if any."""
    session = dict(scope.get("headers") or []).get(b"mcp-session-id", b"").decode("latin-1")
    return {"method": str(scope.get("method", "")), "path": str(scope.get("path", "")), "session": session}


class TokenRejectedError(Exception):
    """The token does not authenticate anyone; the message says why (it is sent to the client).

    ``unavailable``: the token could not be checked (the issuer's keys or its introspection endpoint
    did not answer); the request gets 503, not 401.
    """

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class Authenticated:
    """Who a token authenticates, and the SDK's view of the token (it binds sessions to it)."""

    principal: Principal
    access: AccessToken


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Authenticated:
        """Raises TokenRejectedError: the token authenticates nobody (the message says why)."""
        ...


class HashedTokens:
    """``auth.mode: tokens``: the token's sha256 is a principal's ``token_sha256``."""

    def __init__(self, settings: Settings) -> None:
        """Raises ConfigError: no principal has a token_sha256 (nobody could sign in)."""
        if not any(p.token_sha256 for p in settings.principals):
            raise ConfigError(
                "no principal has a token_sha256: HTTP needs at least one; "
                "generate one with `dataproducts token NAME` and add it under principals:, "
                "or set auth.mode: oauth"
            )
        self.settings = settings

    async def authenticate(self, token: str) -> Authenticated:
        principal = self.settings.principal_for_token(token)
        if principal is None:
            raise TokenRejectedError("unknown or malformed bearer token")
        # The SDK keys session ownership on the user's client_id (it compares client, issuer, subject only).
        return Authenticated(principal, AccessToken(token="", client_id=principal.name, scopes=sorted(principal.roles)))


class BearerAuthMiddleware:
    """ASGI middleware: resolve the bearer token to a principal, or refuse (audited in ``audit``).

    ``metadata_url`` gives, for a request, the URL of the protected resource metadata that challenges
    point to; requests for ``public_paths`` (that metadata) pass without a token.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        audit: AuditLog,
        metadata_url: Callable[[Scope], str],
        required_scopes: list[str] | None = None,
        public_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.audit = audit
        self.metadata_url = metadata_url
        self.required_scopes = list(required_scopes or [])
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.public_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenRejectedError("missing bearer token" if not header else "malformed Authorization header")
            found = await self.authenticator.authenticate(token.strip())
        except TokenRejectedError as exc:
            reason = _clipped(str(exc))
            challenge = f'Bearer realm="dataproducts", resource_metadata="{self.metadata_url(scope)}"'
            if header:  # RFC 6750 §3.1: a request without credentials gets no error code
                challenge += f', error="invalid_token", error_description="{_quoted(reason)}"'
            if exc.unavailable:
                await self._audit(scope, ANONYMOUS, "auth_unavailable", "error", started)
                await send_json_error(send, 503, "auth_unavailable", f"{reason}: retry shortly", challenge)
            else:
                await self._audit(scope, ANONYMOUS, "unauthorized", "denied", started)
                hint = "send 'Authorization: Bearer <token>' with a valid token"
                await send_json_error(send, 401, "unauthorized", f"{reason}: {hint}", challenge)
            return
        principal = found.principal
        missing = sorted(set(self.required_scopes) - set(principal.scopes or ()))
        if principal.scopes is not None and missing:
            await self._audit(scope, principal.name, "insufficient_scope", "denied", started)
            await send_insufficient_scope(send, missing, self.metadata_url(scope), what="this server")
            return
        reset = _principal.set(principal)
        try:
            await self.app({**scope, "user": AuthenticatedUser(found.access)}, receive, send)
        finally:
            _principal.reset(reset)

    async def _audit(self, scope: Scope, principal: str, code: str, outcome: Outcome, started: float) -> None:
        record = refusal(principal, "http", http_args(scope), code=code, outcome=outcome, started=started)
        try:
            await write_audit(self.audit, record)
        except AuditError:  # the request is refused either way; nothing was served
            logger.error("could not audit a refused HTTP request", exc_info=True)


def _quoted(text: str) -> str:
    """``text`` safe inside a quoted-string of an HTTP header."""
    return "".join(c for c in text if c.isprintable() and c not in '"\\')


def _clipped(text: str, limit: int = 300) -> str:
    """A refusal reason kept short: it may quote a value the client sent."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def send_insufficient_scope(send: Send, missing: list[str], metadata_url: str, *, what: str) -> None:
    """403 with the RFC 6750 ``insufficient_scope`` challenge naming the scopes to ask for."""
    scopes = " ".join(missing)
    challenge = (
        f'Bearer realm="dataproducts", error="insufficient_scope", scope="{_quoted(scopes)}", '
        f'resource_metadata="{metadata_url}"'
    )
    message = f"{what} needs scope(s) {scopes!r} the access token lacks: sign in again asking for scope={scopes!r}"
    await send_json_error(send, 403, "insufficient_scope", message, challenge)


async def send_json_error(send: Send, status: int, code: str, message: str, challenge: str | None = None) -> None:
    """An HTTP error in the shared JSON error shape, with a ``WWW-Authenticate`` challenge when given."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    if challenge is not None:
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
