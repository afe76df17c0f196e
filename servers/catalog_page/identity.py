"""Who is looking at the catalog page: signed session cookies, CSRF tokens, and the one seam of identity.

A person logs in by pasting the bearer token configured for their principal (the same identities as the
MCP endpoint). The server answers with a session cookie that holds no token: an itsdangerous-signed,
timestamped record of the principal's name, a random session id and a *binding* (an HMAC of the
principal's configured token hash). A session therefore ends when it expires (``catalog_page.session_ttl_s``),
when its holder logs out (the id is revoked), or when the principal's token is rotated or removed from
the configuration (the binding no longer matches). The signing key is derived from ``hash_salt``, so
replicas sharing one configuration accept each other's sessions; revocations on logout are kept per
process until the session would have expired anyway.

Cookies are HttpOnly, ``SameSite=Strict``, scoped to the page's path, and ``Secure`` when the request
came over https. POST forms carry a CSRF token that must equal the value of a separate CSRF cookie
(double submit; a cross-site page can neither read nor set it) and, when the browser sends ``Origin``
or ``Sec-Fetch-Site``, come from this site (the page's ``Referrer-Policy: same-origin`` keeps browsers
sending a real ``Origin`` rather than ``null``).

:func:`principal_for_request` is the one place that maps a request to a principal: an identity
provider's login (OAuth) plugs in there.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from catalog.principal import Principal
from servers.settings import Settings

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "Session", "SessionKeeper", "principal_for_request"]

SESSION_COOKIE = "dp_session"
CSRF_COOKIE = "dp_csrf"


@dataclass(frozen=True)
class Session:
    """A logged-in viewer: the principal and the session's id (what logout revokes)."""

    principal: Principal
    sid: str
    expires: float


class SessionKeeper:
    """Issues, reads and revokes the page's session cookies for the principals of ``settings``."""

    def __init__(self, settings: Settings, *, path: str, ttl_s: float) -> None:
        self.settings = settings
        self.path = path
        self.ttl_s = ttl_s
        key = hmac.new(settings.require_salt().encode("utf-8"), b"dataproducts catalog page", hashlib.sha256)
        self._key = key.digest()
        self._signer = URLSafeTimedSerializer(key.hexdigest(), salt="dataproducts-catalog-session")
        self._revoked: dict[str, float] = {}  # session id -> when it would have expired

    def _binding(self, token_sha256: str) -> str:
        return hmac.new(self._key, token_sha256.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    def login(self, token: str) -> Session | None:
        """A new session for the principal whose bearer token is ``token``; None for an unknown token."""
        principal = self.settings.principal_for_token(token)
        if principal is None:
            return None
        return Session(principal=principal, sid=secrets.token_urlsafe(18), expires=time.time() + self.ttl_s)

    def cookie_value(self, session: Session) -> str:
        """The signed cookie of ``session`` (no token in it: a name, an id and a binding)."""
        config = next(p for p in self.settings.principals if p.name == session.principal.name)
        return str(
            self._signer.dumps({"p": config.name, "s": session.sid, "b": self._binding(config.token_sha256 or "")})
        )

    def session(self, cookie: str | None) -> Session | None:
        """The live session ``cookie`` holds; None when it is absent, forged, expired, revoked or stale."""
        if not cookie:
            return None
        try:
            data, signed_at = self._signer.loads(cookie, max_age=int(self.ttl_s), return_timestamp=True)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(data, dict) or data.get("s") in self._revoked:
            return None
        config = next((p for p in self.settings.principals if p.name == data.get("p")), None)
        if config is None or config.token_sha256 is None:
            return None
        if not hmac.compare_digest(str(data.get("b", "")), self._binding(config.token_sha256)):
            return None  # the token was rotated since the login
        return Session(principal=config.to_principal(), sid=str(data["s"]), expires=signed_at.timestamp() + self.ttl_s)

    def revoke(self, session: Session) -> None:
        """End ``session`` now (in this process; the cookie is cleared in the browser too)."""
        now = time.time()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revoked[session.sid] = session.expires

    def set_cookie(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.cookie_value(session),
            max_age=int(self.ttl_s),
            path=self.path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear_cookie(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path=self.path, httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )

    # -- CSRF ---------------------------------------------------------------------------------------

    def csrf_token(self, request: Request) -> str:
        """The CSRF token the request's forms carry: the browser's CSRF cookie, or a new one."""
        return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)

    def set_csrf_cookie(self, response: Response, request: Request, token: str) -> None:
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=self.path,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )

    def csrf_problem(self, request: Request, submitted: str | None) -> str | None:
        """Why a POST fails the CSRF check (None: it passes)."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return f"the form was posted from another site (Sec-Fetch-Site: {request.headers['sec-fetch-site']})"
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return f"the form was posted from another site ({origin})"
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not submitted or not hmac.compare_digest(cookie, submitted):
            return "the form's security token is missing or does not match"
        return None


def principal_for_request(request: Request, sessions: SessionKeeper) -> Principal | None:
    """The principal a catalog page request acts as, or None (the page then asks to log in).

    A session cookie from the login form, else ``Authorization: Bearer <token>`` (scripts, the same
    tokens as the MCP endpoint). This is the seam for other identity providers (an OAuth login).
    """
    session = sessions.session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        return session.principal
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return sessions.settings.principal_for_token(token.strip())
    return None
