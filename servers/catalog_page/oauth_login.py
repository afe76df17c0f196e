"""Signing in to the catalog page at the identity provider: the OAuth 2.1 authorization-code flow with PKCE.

Configured by ``auth.page_client_id`` (and ``auth.page_client_secret`` for a confidential client) in
``auth.mode: oauth``. The flow:

1. ``GET {prefix}/login/oauth?next=...`` makes a random ``state`` and a PKCE ``code_verifier``, keeps
   them (with where to go afterwards) in a short-lived signed cookie (``SameSite=Lax``, so it comes
   back with the identity provider's redirect; no token is ever in it), and redirects the browser to
   the authorization endpoint with ``code_challenge`` (S256) and ``resource`` (RFC 8707: the MCP
   endpoint, ``auth.resource``, so the access token's audience is this server).
2. The identity provider sends the browser to ``{origin of auth.resource}{prefix}/login/callback``
   with ``code`` and ``state``. The state must equal the cookie's; the code is exchanged at the token
   endpoint with the verifier, the redirect URI and ``resource``.
3. The access token is checked by the MCP endpoint's authenticator (:meth:`SessionKeeper.login`):
   issuer, signature, audience, expiry, required scopes. A session opens that ends no later than the
   token's ``exp``; the token itself is dropped.

The authorization and token endpoints come from the issuer's metadata (OpenID Connect discovery
``{issuer}/.well-known/openid-configuration``, else RFC 8414 ``/.well-known/oauth-authorization-server``),
fetched once per process, or from ``auth.page_authorization_endpoint`` / ``page_token_endpoint`` where
the server cannot reach the metadata. Plain httpx2: the flow is two requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx2
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from servers.catalog_page.identity import LoginRefusedError, Session, SessionKeeper
from servers.settings import Settings

__all__ = ["FLOW_COOKIE", "PageSignIn"]

logger = logging.getLogger(__name__)

FLOW_COOKIE = "dp_oauth"
#: How long a browser may take at the identity provider before the flow must start again.
FLOW_TTL_S = 600


@dataclass(frozen=True)
class _Endpoints:
    authorization: str
    token: str


class PageSignIn:
    """The authorization-code flow of one issuer for the page (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionKeeper,
        *,
        prefix: str,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        endpoints: _Endpoints | None,
    ) -> None:
        auth = settings.auth
        if auth.resource is None:
            raise ValueError("the page's sign-in needs auth.resource")
        self.sessions = sessions
        self.prefix = prefix
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.resource = str(auth.resource).removesuffix("/")
        origin = urlsplit(self.resource)
        self.redirect_uri = f"{origin.scheme}://{origin.netloc}{prefix}/login/callback"
        self.scopes = " ".join(dict.fromkeys([*auth.page_scopes, *auth.required_scopes]))
        self.timeout_s = auth.timeout_s
        self._endpoints = endpoints
        self._flows = URLSafeTimedSerializer(sessions.signing_key, salt="dataproducts-catalog-oauth-flow")

    @classmethod
    def from_settings(cls, settings: Settings, sessions: SessionKeeper, *, prefix: str) -> PageSignIn | None:
        """The page's sign-in, or None when ``auth.page_client_id`` is not set."""
        auth = settings.auth
        if auth.mode != "oauth" or auth.page_client_id is None:
            return None
        endpoints = None
        if auth.page_authorization_endpoint is not None and auth.page_token_endpoint is not None:
            endpoints = _Endpoints(str(auth.page_authorization_endpoint), str(auth.page_token_endpoint))
        secret = auth.page_client_secret.get_secret_value() if auth.page_client_secret is not None else None
        return cls(
            settings,
            sessions,
            prefix=prefix,
            issuer=auth.page_issuer or auth.issuers[0].issuer,
            client_id=auth.page_client_id,
            client_secret=secret,
            endpoints=endpoints,
        )

    # -- the two steps ------------------------------------------------------------------------------

    async def start(self, request: Request, target: str) -> Response:
        """Redirect the browser to the authorization endpoint, keeping state and verifier in a cookie.

        Raises:
            LoginRefusedError: the issuer's metadata could not be read (503).
        """
        endpoints = await self.endpoints()
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scopes,
            "state": state,
            "code_challenge": challenge.decode("ascii"),
            "code_challenge_method": "S256",
            "resource": self.resource,
        }
        separator = "&" if "?" in endpoints.authorization else "?"
        response = RedirectResponse(f"{endpoints.authorization}{separator}{urlencode(query)}", status_code=303)
        response.set_cookie(
            FLOW_COOKIE,
            str(self._flows.dumps({"st": state, "v": verifier, "n": target})),
            max_age=FLOW_TTL_S,
            path=f"{self.prefix}/login",
            httponly=True,
            samesite="lax",  # sent on the identity provider's top-level redirect back, never on cross-site posts
            secure=request.url.scheme == "https",
        )
        return response

    async def finish(self, request: Request) -> tuple[Session, str]:
        """The session the callback opens and where to go then.

        Raises:
            LoginRefusedError: the identity provider answered with an error, the state does not match
                the browser's flow (or the flow is missing or older than ten minutes), the code
                exchange failed, or the access token opens no session.
        """
        params = request.query_params
        try:
            flow = self._flows.loads(request.cookies.get(FLOW_COOKIE, ""), max_age=FLOW_TTL_S)
        except BadSignature:  # SignatureExpired is one
            flow = None
        if not isinstance(flow, dict):
            raise LoginRefusedError(
                400,
                "invalid_request",
                "this sign-in was not started by this browser or took longer than ten minutes: sign in again",
            )
        if not hmac.compare_digest(str(flow.get("st", "")), params.get("state", "")):
            raise LoginRefusedError(
                400, "invalid_request", "the sign-in's state does not match this browser's: sign in again"
            )
        if "error" in params:
            described = params.get("error_description", "")
            raise LoginRefusedError(
                401,
                "unauthorized",
                f"the identity provider refused the sign-in ({params['error'][:60]}"
                f"{': ' + described[:200] if described else ''}): sign in again, or log in with a token",
            )
        code = params.get("code", "")
        if not code:
            raise LoginRefusedError(400, "invalid_request", "the identity provider sent no code: sign in again")
        token = await self._exchange(code, str(flow["v"]))
        session = await self.sessions.login(token)
        return session, str(flow.get("n") or self.prefix)

    def clear_flow_cookie(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            FLOW_COOKIE,
            path=f"{self.prefix}/login",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    # -- the identity provider ----------------------------------------------------------------------

    async def _exchange(self, code: str, verifier: str) -> str:
        """The access token the token endpoint gives for ``code``."""
        endpoints = await self.endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "resource": self.resource,
        }
        headers = {"Accept": "application/json"}
        if self.client_secret is not None:  # client_secret_basic (RFC 6749 §2.3.1: form-encoded, then Basic)
            pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        else:  # a public client names itself
            form["client_id"] = self.client_id
        try:
            async with httpx2.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(endpoints.token, data=form, headers=headers)
            answer: Any = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("the token endpoint %s did not answer: %s", endpoints.token, exc)
            raise LoginRefusedError(
                503, "auth_unavailable", "the identity provider's token endpoint did not answer: try again shortly"
            ) from exc
        if response.status_code != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            error = answer.get("error", f"HTTP {response.status_code}") if isinstance(answer, dict) else "no JSON"
            raise LoginRefusedError(
                401,
                "unauthorized",
                f"the identity provider did not exchange the sign-in's code for a token ({str(error)[:60]}): "
                "sign in again",
            )
        return str(answer["access_token"])

    async def endpoints(self) -> _Endpoints:
        """The authorization and token endpoints: configured, or read once from the issuer's metadata.

        Raises:
            LoginRefusedError: no metadata document of the issuer could be read (503).
        """
        if self._endpoints is not None:
            return self._endpoints
        parts = urlsplit(self.issuer)
        candidates = [
            f"{self.issuer.rstrip('/')}/.well-known/openid-configuration",
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}",
        ]
        problems = []
        async with httpx2.AsyncClient(timeout=self.timeout_s) as client:
            for url in candidates:
                try:
                    response = await client.get(url, headers={"Accept": "application/json"})
                    document = response.json() if response.status_code == 200 else None
                except (httpx2.HTTPError, ValueError) as exc:
                    problems.append(f"{url}: {exc}")
                    continue
                found = self._read_metadata(url, document, problems)
                if found is not None:
                    self._endpoints = found
                    return found
        logger.warning("no usable metadata for issuer %s: %s", self.issuer, "; ".join(problems))
        raise LoginRefusedError(
            503,
            "auth_unavailable",
            f"the identity provider's metadata could not be read at {candidates[0]}: try again shortly "
            "(an operator can set auth.page_authorization_endpoint and page_token_endpoint)",
        )

    def _read_metadata(self, url: str, document: Any, problems: list[str]) -> _Endpoints | None:
        if not isinstance(document, dict):
            problems.append(f"{url}: no metadata document")
            return None
        if document.get("issuer") != self.issuer:
            problems.append(f"{url}: issuer {document.get('issuer')!r} is not {self.issuer!r}")
            return None
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            problems.append(f"{url}: no PKCE S256 (code_challenge_methods_supported: {methods})")
            return None
        authorization, token = document.get("authorization_endpoint"), document.get("token_endpoint")
        if not isinstance(authorization, str) or not isinstance(token, str):
            problems.append(f"{url}: no authorization_endpoint or token_endpoint")
            return None
        return _Endpoints(authorization, token)
