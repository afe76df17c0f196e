"""The catalog page's HTTP surface: login, the searchable product list, a page per product.

Routes (under ``catalog_page.path``, ``/catalog`` by default)::

    GET  /catalog                    products the viewer may read; ?q= searches them (search_products)
    GET  /catalog/products/{name}    one product as the viewer may see it (servers.catalog_page.views)
    GET  /catalog/login              the login form (paste a bearer token); POST it to log in
    GET  /catalog/login/oauth        sign in at the identity provider (auth.page_client_id; oauth_login)
    GET  /catalog/login/callback     where the identity provider sends the browser back
    POST /catalog/logout             end the session
    GET  /catalog/static/catalog.css the one stylesheet

Every page view is audited as ``page:list`` / ``page:product`` (with the product), whether it is
served, refused (unknown product, access denied: the use case's error code) or asked to log in first
(``unauthorized``, principal ``anonymous``) or refused a bearer token (its code: ``unauthorized``,
``insufficient_scope``, ``auth_unavailable``); logins, by token or by the sign-in flow, are audited as
``page:login`` (refusals with their code) and logouts as ``page:logout``. The use cases a page runs
leave their own rows too, as over MCP.

Responses are server-rendered Jinja2 (autoescaped) with a strict Content-Security-Policy (no script at
all, styles from this server only), ``no-store`` caching, no framing and no referrer to other sites.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog.errors import AuditError, ConfigError, DataProductsError
from catalog.principal import Principal
from servers._audit_trail import ANONYMOUS, CallStats, audited_call, refusal, write_audit
from servers.auth import Authenticator
from servers.catalog_page.identity import (
    SESSION_COOKIE,
    LoginRefusedError,
    Session,
    SessionKeeper,
    principal_for_request,
)
from servers.catalog_page.oauth_login import PageSignIn
from servers.catalog_page.views import list_products, product_page
from servers.service import DataProductsService
from servers.settings import Settings

__all__ = ["CatalogPageMount", "create_catalog_page"]

_HERE = Path(__file__).parent
#: The longest search text accepted.
MAX_QUERY = 200
#: The largest form body accepted (a login form with an identity provider's access token is a few KiB).
MAX_FORM_BYTES = 32768
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_STATUS = {
    "not_found": 404,
    "access_denied": 403,
    "insufficient_scope": 403,
    "invalid_request": 400,
    "stale_data": 409,
    "unavailable": 503,
    "store_unavailable": 503,
    "timeout": 504,
    "audit_failed": 503,
}
_HEADINGS = {
    404: "Not found",
    403: "Access denied",
    400: "Bad request",
    409: "Stale data",
    401: "Log in first",
    503: "Try again shortly",
}


class _FormError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class CatalogPage:
    """The page's handlers over one shared service."""

    def __init__(self, settings: Settings, service: DataProductsService, authenticator: Authenticator) -> None:
        config = settings.catalog_page
        self.prefix = config.path.rstrip("/")
        self.service = service
        self.sample_rows = config.sample_rows
        self.sessions = SessionKeeper(settings, authenticator, path=self.prefix, ttl_s=config.session_ttl_s)
        self.sign_in = PageSignIn.from_settings(settings, self.sessions, prefix=self.prefix)
        self.templates = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True)
        self.templates.filters["when"] = _when
        self.stylesheet = (_HERE / "static" / "catalog.css").read_bytes()

    # -- rendering ----------------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, *, principal: Principal | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        csrf = self.sessions.csrf_token(request)
        html = self.templates.get_template(template).render(
            prefix=self.prefix,
            principal=principal,
            csrf=csrf,
            max_query=MAX_QUERY,
            oauth=self.sessions.oauth,
            sign_in=self.sign_in,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        self.sessions.set_csrf_cookie(response, request, csrf)
        return response

    def error(self, request: Request, principal: Principal | None, exc: DataProductsError) -> HTMLResponse:
        status = _STATUS.get(exc.code, 500)
        heading = _HEADINGS.get(status, "Something went wrong")
        message = f"{exc.code}: {exc.message}"
        return self.render(request, "error.html", principal=principal, status=status, heading=heading, message=message)

    def to_login(self, request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{self.prefix}/login?next={quote(target, safe='')}", status_code=303)

    # -- audited page views -------------------------------------------------------------------------

    async def viewed(
        self,
        request: Request,
        tool: str,
        args: dict[str, Any],
        body: Callable[[Principal, CallStats], Awaitable[Response]],
    ) -> Response:
        """Serve one page view as the request's principal, audited as ``tool``; ask to log in without one."""
        started = time.perf_counter()
        try:
            principal = await principal_for_request(request, self.sessions)
        except LoginRefusedError as exc:  # a bearer token the MCP endpoint would refuse too
            await write_audit(
                self.service.audit,
                refusal(exc.principal, tool, args, code=exc.code, outcome=exc.outcome, started=started),
            )
            heading = _HEADINGS.get(exc.status, "Refused")
            return self.render(
                request, "error.html", principal=None, status=exc.status, heading=heading, message=exc.message
            )
        if principal is None:
            await write_audit(
                self.service.audit,
                refusal(ANONYMOUS, tool, args, code="unauthorized", outcome="denied", started=started),
            )
            return self.to_login(request)

        async def run(stats: CallStats) -> Response:
            stats.product = args.get("product")
            return await body(principal, stats)

        try:
            return await audited_call(self.service.audit, principal, tool, args, run)
        except DataProductsError as exc:
            return self.error(request, principal, exc)

    async def product_list(self, request: Request) -> Response:
        text = " ".join(request.query_params.get("q", "").split())

        async def body(principal: Principal, stats: CallStats) -> Response:
            if len(text) > MAX_QUERY:
                problem = f"the search text is {len(text)} characters long; use at most {MAX_QUERY}"
                return self.render(
                    request,
                    "list.html",
                    principal=principal,
                    status=400,
                    q=text[:MAX_QUERY],
                    products=[],
                    problem=problem,
                )
            products = await list_products(self.service, principal, text)
            stats.rows = len(products)
            return self.render(request, "list.html", principal=principal, q=text, products=products, problem=None)

        return await self.viewed(request, "page:list", {"text": text}, body)

    async def product(self, request: Request) -> Response:
        name = request.path_params["name"]

        async def body(principal: Principal, stats: CallStats) -> Response:
            page = await product_page(self.service, principal, name, sample_rows=self.sample_rows)
            stats.rows = page.sample.row_count if page.sample else 0
            return self.render(request, "product.html", principal=principal, page=page, q="")

        return await self.viewed(request, "page:product", {"product": name}, body)

    # -- login and logout ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if await self._viewer(request) is not None:
            return RedirectResponse(self._next(request.query_params.get("next")), status_code=303)
        return self.render(
            request, "login.html", principal=None, next=self._next(request.query_params.get("next")), problem=None
        )

    async def login(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            form = await self._form(request)
        except _FormError as exc:
            await self._audit_refusal("page:login", exc.status, started)
            return self.render(
                request, "login.html", principal=None, status=exc.status, next=self.prefix, problem=exc.message
            )
        target = self._next(form.get("next"))
        try:
            session = await self.sessions.login(form.get("token", "").strip())
        except LoginRefusedError as exc:
            await write_audit(
                self.service.audit,
                refusal(exc.principal, "page:login", {}, code=exc.code, outcome=exc.outcome, started=started),
            )
            return self.render(
                request, "login.html", principal=None, status=exc.status, next=target, problem=exc.message
            )
        return await self.open_session(request, session, {}, RedirectResponse(target, status_code=303))

    async def open_session(
        self, request: Request, session: Session, args: dict[str, Any], response: Response
    ) -> Response:
        """``response`` with ``session``'s cookie, audited as ``page:login`` of its principal."""

        async def run(stats: CallStats) -> Response:
            self.sessions.set_cookie(response, request, session)
            return response

        return await audited_call(self.service.audit, session.principal, "page:login", args, run)

    async def logout(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            await self._form(request)
        except _FormError as exc:
            await self._audit_refusal("page:logout", exc.status, started)
            principal = await self._viewer(request)
            message = f"{exc.message}; you are still logged in: reload the page and log out again"
            return self.render(
                request, "error.html", principal=principal, status=exc.status, heading="Not logged out", message=message
            )
        response = RedirectResponse(f"{self.prefix}/login", status_code=303)
        self.sessions.clear_cookie(response, request)
        session = self.sessions.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return response
        self.sessions.revoke(session)

        async def run(stats: CallStats) -> Response:
            return response

        return await audited_call(self.service.audit, session.principal, "page:logout", {}, run)

    # -- sign-in at the identity provider (servers.catalog_page.oauth_login) ---------------------------

    async def oauth_start(self, request: Request) -> Response:
        started = time.perf_counter()
        target = self._next(request.query_params.get("next"))
        try:
            if self.sign_in is None:
                raise LoginRefusedError(
                    404, "not_found", "signing in at an identity provider is not configured: log in with a token"
                )
            return await self.sign_in.start(request, target)
        except LoginRefusedError as exc:
            return await self._sign_in_refused(request, exc, target, started)

    async def oauth_callback(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            if self.sign_in is None:
                raise LoginRefusedError(
                    404, "not_found", "signing in at an identity provider is not configured: log in with a token"
                )
            session, target = await self.sign_in.finish(request)
        except LoginRefusedError as exc:
            response = await self._sign_in_refused(request, exc, self.prefix, started)
            if self.sign_in is not None:
                self.sign_in.clear_flow_cookie(response, request)
            return response
        # The browser came back from another site: a SameSite=Strict cookie set now is not sent on a
        # redirect that continues that navigation, so a page of this site moves on (no script needed).
        page = self.render(request, "signed_in.html", principal=session.principal, next=target)
        self.sign_in.clear_flow_cookie(page, request)
        return await self.open_session(request, session, {"via": "oauth"}, page)

    async def _sign_in_refused(self, request: Request, exc: LoginRefusedError, target: str, started: float) -> Response:
        await write_audit(
            self.service.audit,
            refusal(exc.principal, "page:login", {"via": "oauth"}, code=exc.code, outcome=exc.outcome, started=started),
        )
        return self.render(request, "login.html", principal=None, status=exc.status, next=target, problem=exc.message)

    async def stylesheet_file(self, request: Request) -> Response:
        return Response(self.stylesheet, media_type="text/css")

    # -- helpers ------------------------------------------------------------------------------------

    async def _viewer(self, request: Request) -> Principal | None:
        """The request's principal, None when it has none or its bearer token is refused."""
        try:
            return await principal_for_request(request, self.sessions)
        except LoginRefusedError:
            return None

    def _next(self, target: str | None) -> str:
        """Where to go after logging in: a page of this catalog, never another site."""
        if not target or not (target == self.prefix or target.startswith(self.prefix + "/")):
            return self.prefix
        path = unquote(target.split("?", 1)[0])  # a browser reads %2e%2e as ..: judge the decoded path
        if "//" in target or "\\" in target or "//" in path or "\\" in path or ".." in path.split("/"):
            return self.prefix
        if path.startswith(f"{self.prefix}/login"):
            return self.prefix
        return target

    async def _form(self, request: Request) -> dict[str, str]:
        """The posted form, once its size, type and CSRF token pass.

        Raises:
            _FormError: with the status and a message saying what would be accepted.
        """
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise _FormError(415, "send the form as application/x-www-form-urlencoded (post it from the page)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise _FormError(413, f"the form is larger than {MAX_FORM_BYTES} bytes; a login form is far smaller")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise _FormError(400, "the form is not valid UTF-8 form data; post it from the page") from None
        form = {key: values[0] for key, values in parsed.items()}
        problem = self.sessions.csrf_problem(request, form.get("csrf"))
        if problem is not None:
            raise _FormError(403, f"{problem}: reload the page and submit the form again")
        return form

    async def _audit_refusal(self, tool: str, status: int, started: float) -> None:
        code = {401: "unauthorized", 403: "csrf_failed", 413: "request_too_large", 415: "invalid_request"}.get(
            status, "invalid_request"
        )
        await write_audit(
            self.service.audit, refusal(ANONYMOUS, tool, {}, code=code, outcome="denied", started=started)
        )


def _when(value: object) -> str:
    """An ISO timestamp as ``2026-11-30 15:24 UTC`` (other values as they are)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def create_catalog_page(settings: Settings, service: DataProductsService, authenticator: Authenticator) -> ASGIApp:
    """The catalog page as an ASGI app serving ``settings.catalog_page.path`` (routes below it only).

    ``authenticator`` is the MCP endpoint's (:func:`servers.oauth.authenticator_for`): the page accepts
    the same tokens, checked the same way.

    Raises:
        ConfigError: the page's path overlaps the MCP endpoint's, or no hash salt is set (sessions are
            signed with a key derived from it).
    """
    page = CatalogPage(settings, service, authenticator)
    mcp_path = settings.server.path.rstrip("/") or "/"
    if mcp_path == page.prefix or mcp_path.startswith(page.prefix + "/") or page.prefix.startswith(mcp_path + "/"):
        raise ConfigError(
            f"catalog_page.path {settings.catalog_page.path!r} overlaps server.path {settings.server.path!r}; "
            "give the catalog page its own path, e.g. /catalog"
        )
    p = page.prefix
    routes = [
        Route(p, page.product_list, methods=["GET"]),
        Route(p + "/", page.product_list, methods=["GET"]),
        Route(p + "/products/{name:str}", page.product, methods=["GET"]),
        Route(p + "/login", page.login_form, methods=["GET"]),
        Route(p + "/login", page.login, methods=["POST"]),
        Route(p + "/logout", page.logout, methods=["POST"]),
        Route(p + "/login/oauth", page.oauth_start, methods=["GET"]),
        Route(p + "/login/callback", page.oauth_callback, methods=["GET"]),
        Route(p + "/static/catalog.css", page.stylesheet_file, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    return _SecurityHeaders(app)


class _SecurityHeaders:
    """Put the CSP and the other protective headers on every response of the page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*headers, *_SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CatalogPageMount:
    """Route requests under ``prefix`` to the catalog page, everything else to ``app`` (the MCP server).

    Added outermost, so the page handles its own identities (session cookie or bearer token) while the
    MCP endpoint keeps its bearer-token middleware.
    """

    def __init__(self, app: ASGIApp, page: ASGIApp, prefix: str) -> None:
        self.app = app
        self.page = page
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            try:
                await self.page(scope, receive, send)
            except AuditError:  # fail closed: nothing unaudited is served
                await HTMLResponse("could not write the audit row; nothing was served", status_code=503)(
                    scope, receive, send
                )
            return
        await self.app(scope, receive, send)
