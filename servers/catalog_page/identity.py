"""Who is looking at the catalog page: signed session cookies, CSRF tokens, and the one seam of identity.

People sign in with the same identities as the MCP endpoint, checked by the same
:class:`~servers.auth.Authenticator` (no second verifier): they paste the token their MCP client uses
into the login form, or (``auth.mode: oauth`` with ``auth.page_client_id``) sign in at the identity
provider (:mod:`servers.catalog_page.oauth_login`). Scripts send ``Authorization: Bearer <token>``.
A token lacking ``auth.required_scopes`` cannot sign in, as it cannot call a tool.

The server answers with a session cookie that never holds the token: an itsdangerous-signed,
timestamped record of the principal and a random session id. A session ends when it expires
(``catalog_page.session_ttl_s``) or when its holder logs out (the id is revoked), and further:

``auth.mode: tokens``
    The cookie holds the principal's name and a *binding* (an HMAC of its configured token hash): the
    session also ends when the principal's token is rotated or removed from the configuration.
``auth.mode: oauth``
    The cookie holds the principal's name, roles and scopes as the access token gave them, its issuer
    and the token's expiry: the session ends no later than the token's ``exp``, whether the token was
    a JWT or an opaque token checked by introspection (the introspection answer's ``exp`` bounds the
    session; the token is not re-checked during it, so revoking it at the identity provider ends the
    page session at its ``exp`` at the latest). A token without ``exp`` cannot open a session. The
    session ends too when its issuer is no longer configured; ``auth.product_scopes`` are applied from
    the configuration on every request.

The signing key is derived from ``hash_salt``, so replicas sharing one configuration accept each
other's sessions; revocations on logout are kept per process until the session would have expired anyway.

Cookies are HttpOnly, ``SameSite=Strict``, scoped to the page's path, and ``Secure`` when the request
came over https. POST forms carry a CSRF token that must equal the value of a separate CSRF cookie
(double submit; a cross-site page can neither read nor set it) and, when the browser sends ``Origin``
or ``Sec-Fetch-Site``, come from this site (the page's ``Referrer-Policy: same-origin`` keeps browsers
sending a real ``Origin`` rather than ``null``).

:func:`principal_for_request` is the one place that maps a request to a principal.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from catalog.audit import Outcome
from catalog.principal import Principal
from servers._audit_trail import ANONYMOUS
from servers.auth import Authenticated, Authenticator, TokenRejectedError
from servers.settings import Settings

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "LoginRefusedError",
    "Session",
    "SessionKeeper",
    "principal_for_request",
]

SESSION_COOKIE = "dp_session"
CSRF_COOKIE = "dp_csrf"
#: The longest session cookie issued: browsers drop cookies over 4096 bytes (name and attributes included).
MAX_COOKIE_CHARS = 3800


@dataclass(frozen=True)
class Session:
    """A logged-in viewer: the principal and the session's id (what logout revokes)."""

    principal: Principal
    sid: str
    expires: float
    issuer: str | None = None  # oauth mode: the issuer of the token the session was opened with


class LoginRefusedError(Exception):
    """A token or sign-in that opens no session; ``message`` says why and what would work.

    ``code`` is the audit row's error code (``unauthorized``, ``insufficient_scope``,
    ``auth_unavailable``, ``invalid_request``), ``status`` the HTTP status, ``principal`` who was refused
    (``anonymous`` unless the token named someone).
    """

    def __init__(self, status: int, code: str, message: str, *, principal: str = ANONYMOUS) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.principal = status, code, message, principal

    @property
    def outcome(self) -> Outcome:
        """The audit row's outcome: ``error`` when the token could not be checked, else ``denied``."""
        return "error" if self.status >= 500 else "denied"


class SessionKeeper:
    """Issues, reads and revokes the page's session cookies for the principals of ``settings``."""

    def __init__(self, settings: Settings, authenticator: Authenticator, *, path: str, ttl_s: float) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.oauth = settings.auth.mode == "oauth"
        self.path = path
        self.ttl_s = ttl_s
        key = hmac.new(settings.require_salt().encode("utf-8"), b"dataproducts catalog page", hashlib.sha256)
        self._key = key.digest()
        self.signing_key = key.hexdigest()  # also signs the sign-in flow's cookie (another salt)
        self._signer = URLSafeTimedSerializer(key.hexdigest(), salt="dataproducts-catalog-session")
        self._revoked: dict[str, float] = {}  # session id -> when it would have expired

    def _binding(self, token_sha256: str) -> str:
        return hmac.new(self._key, token_sha256.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    async def check(self, token: str) -> Authenticated:
        """Who ``token`` authenticates, with the scopes every request needs.

        Raises:
            LoginRefusedError: the authenticator refuses the token, or it lacks ``auth.required_scopes``.
        """
        try:
            found = await self.authenticator.authenticate(token)
        except TokenRejectedError as exc:
            if exc.unavailable:
                raise LoginRefusedError(503, "auth_unavailable", f"{exc}: try again shortly") from exc
            hint = (
                "paste a current access token for this server from your identity provider"
                if self.oauth
                else "paste the bearer token configured for your principal "
                "(an operator creates one with `dataproducts token NAME`)"
            )
            raise LoginRefusedError(401, "unauthorized", f"{_clipped(str(exc))}: {hint}") from exc
        principal = found.principal
        if principal.scopes is not None:
            missing = sorted(set(self.settings.auth.required_scopes) - principal.scopes)
            if missing:
                scopes = " ".join(missing)
                raise LoginRefusedError(
                    403,
                    "insufficient_scope",
                    f"the access token lacks scope(s) {scopes!r} this server requires: "
                    f"sign in again asking for scope={scopes!r}",
                    principal=principal.name,
                )
        return found

    async def login(self, token: str) -> Session:
        """A new session for whoever ``token`` authenticates (see the module docstring for how long it lasts).

        Raises:
            LoginRefusedError: the token opens no session (the message says why).
        """
        found = await self.check(token)
        now = time.time()
        expires = now + self.ttl_s
        issuer = None
        if self.oauth:
            exp = found.access.expires_at
            if exp is None:
                raise LoginRefusedError(
                    401,
                    "unauthorized",
                    "the access token carries no expiry (exp), and a page session ends when its token does: "
                    "have the identity provider include exp in its tokens (and introspection answers)",
                    principal=found.principal.name,
                )
            if exp <= now:
                raise LoginRefusedError(
                    401, "unauthorized", "the access token has expired: get a new one", principal=found.principal.name
                )
            expires = min(expires, float(exp))
            iss = (found.access.claims or {}).get("iss")
            issuer = iss if isinstance(iss, str) else None
        session = Session(found.principal, secrets.token_urlsafe(18), expires, issuer)
        if len(self.cookie_value(session)) > MAX_COOKIE_CHARS:
            raise LoginRefusedError(
                400,
                "invalid_request",
                f"the token gives {len(found.principal.roles)} roles, too many to keep in a browser's session "
                f"cookie: map only the roles your policies name into the {self.settings.auth.roles_claim!r} claim",
                principal=found.principal.name,
            )
        return session

    def cookie_value(self, session: Session) -> str:
        """The signed cookie of ``session``: never the token (see the module docstring for what it holds)."""
        if self.oauth:
            principal = session.principal
            scopes = sorted(principal.scopes) if principal.scopes is not None else None
            record = {"m": "oauth", "p": principal.name, "r": sorted(principal.roles), "sc": scopes}
            return str(self._signer.dumps({**record, "s": session.sid, "x": session.expires, "i": session.issuer}))
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
        if (data.get("m") == "oauth") != self.oauth:
            return None  # opened under the other auth.mode
        if self.oauth:
            return self._oauth_session(data)
        config = next((p for p in self.settings.principals if p.name == data.get("p")), None)
        if config is None or config.token_sha256 is None:
            return None
        if not hmac.compare_digest(str(data.get("b", "")), self._binding(config.token_sha256)):
            return None  # the token was rotated since the login
        return Session(principal=config.to_principal(), sid=str(data["s"]), expires=signed_at.timestamp() + self.ttl_s)

    def _oauth_session(self, data: dict[str, Any]) -> Session | None:
        expires, issuer, scopes = data.get("x"), data.get("i"), data.get("sc")
        if not isinstance(expires, int | float) or expires <= time.time():
            return None  # the token it was opened with has expired
        if issuer is not None and issuer not in {i.issuer for i in self.settings.auth.issuers}:
            return None  # its issuer is no longer trusted
        principal = Principal(
            name=str(data["p"]),
            roles=frozenset(data.get("r") or ()),
            scopes=frozenset(scopes) if isinstance(scopes, list) else None,
            product_scopes=tuple((p, tuple(s)) for p, s in self.settings.auth.product_scopes.items()),
            tool_scopes=tuple((t, tuple(s)) for t, s in self.settings.auth.tool_scopes.items()),
        )
        return Session(principal=principal, sid=str(data["s"]), expires=float(expires), issuer=issuer)

    def revoke(self, session: Session) -> None:
        """End ``session`` now (in this process; the cookie is cleared in the browser too)."""
        now = time.time()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revoked[session.sid] = session.expires

    def set_cookie(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.cookie_value(session),
            max_age=max(1, int(min(self.ttl_s, session.expires - time.time()))),
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


async def principal_for_request(request: Request, sessions: SessionKeeper) -> Principal | None:
    """The principal a catalog page request acts as, or None (the page then asks to log in).

    A session cookie (from the login form or the sign-in flow), else ``Authorization: Bearer <token>``
    (scripts), checked by the MCP endpoint's authenticator.

    Raises:
        LoginRefusedError: the request's bearer token is refused (the message says why).
    """
    session = sessions.session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        return session.principal
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return (await sessions.check(token.strip())).principal
    return None


def _clipped(text: str, limit: int = 300) -> str:
    """A refusal reason kept short: it may quote a value the client sent."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
