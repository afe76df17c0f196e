"""The catalog page under ``auth.mode: oauth``: the MCP endpoint's tokens, checked by its authenticator,
and the sign-in flow (authorization code + PKCE) against a real issuer on loopback.

The page runs in Starlette's test client (``http://testserver``, the resource ``http://testserver/mcp``);
the issuer is a real HTTP server the browser's hops go to through httpx.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from catalog.audit import AuditLog
from catalog.errors import ConfigError, InsufficientScopeError
from catalog.principal import Principal
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.service import DataProductsService
from servers.settings import Settings, load_settings
from tests.servers.oauth_issuer import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAGE_CLIENT_ID,
    PAGE_CLIENT_SECRET,
    Issuer,
    running_issuer,
)

RESOURCE = "http://testserver/mcp"
READ = "dataproducts:read"
PII = "dataproducts:pii"
EVE = {"sub": "u-eve", "email": "eve@example.org", "realm_access": {"roles": ["sales-eu"]}}
ANN = {"sub": "u-ann", "email": "ann@example.org", "realm_access": {"roles": ["analyst"]}}


def oauth_settings(demo: DemoWorkspace, issuer: Issuer, **page: Any) -> Settings:
    auth = {
        "mode": "oauth",
        "resource": RESOURCE,
        "issuers": [
            {
                "issuer": issuer.issuer,
                "jwks_uri": f"{issuer.url}/jwks",
                "introspection_endpoint": f"{issuer.url}/introspect",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            }
        ],
        "principal_claim": "email",
        "roles_claim": "realm_access.roles",
        "required_scopes": [READ],
        "product_scopes": {"shop.customers": [PII]},
        "leeway_s": 0,
        "page_client_id": PAGE_CLIENT_ID,
        "page_client_secret": PAGE_CLIENT_SECRET,
        **page,
    }
    return load_settings(demo.config_path, auth=auth)


@dataclass
class Site:
    issuer: Issuer
    settings: Settings
    client: TestClient
    audit: AuditLog

    def token(self, who: dict[str, Any] = EVE, **claims: Any) -> str:
        return self.issuer.token(**{"aud": RESOURCE, "scope": f"openid {READ}", **who, **claims})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def site(demo: DemoWorkspace, issuer: Issuer) -> Iterator[Site]:
    settings = oauth_settings(demo, issuer)
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        with TestClient(create_http_app(settings), follow_redirects=False) as client:
            yield Site(issuer, settings, client, AuditLog.from_registry(registry))
    finally:
        registry.close()


def csrf(client: TestClient) -> str:
    if token := client.cookies.get("dp_csrf"):
        return token
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/catalog/login").text)
    assert found
    return found.group(1)


def paste(client: TestClient, token: str, next_page: str = "/catalog") -> httpx.Response:
    return client.post("/catalog/login", data={"token": token, "csrf": csrf(client), "next": next_page})


def regions_in_sample(html: str) -> set[str]:
    table = html.split('id="sample"', 1)[1].split("</table>", 1)[0]
    return set(re.findall(r'<td data-column="region">([^<]*)</td>', table))


def sign_in(site: Site, next_page: str = "/catalog") -> httpx.Response:
    """Click "Sign in with ...", let the issuer approve, come back: the callback's response."""
    start = site.client.get(f"/catalog/login/oauth?next={next_page}")
    assert start.status_code == 303, start.text
    with httpx.Client() as browser_at_issuer:
        approved = browser_at_issuer.get(start.headers["location"])
    assert approved.status_code == 302, approved.text
    back = approved.headers["location"]
    assert back.startswith("http://testserver/catalog/login/callback?")
    return site.client.get(back)


# -- tokens pasted or sent: the MCP endpoint's authenticator ------------------------------------------


def test_a_pasted_access_token_opens_a_session_that_holds_no_token_and_ends_with_it(site: Site) -> None:
    token = site.token(exp=int(time.time()) + 3)
    response = paste(site.client, token)
    assert response.status_code == 303, response.text
    cookie = site.client.cookies["dp_session"]
    assert token not in cookie and token.split(".")[1] not in cookie  # neither the token nor its claims part
    max_age = re.search(r"dp_session=[^;]+;.*?Max-Age=(\d+)", response.headers["set-cookie"], re.I)
    assert max_age is not None and int(max_age[1]) <= 3
    page = site.client.get("/catalog/products/shop.orders")
    assert page.status_code == 200
    assert regions_in_sample(page.text) == {"EU"}  # eve's role claim brings its row filter
    time.sleep(3.2)
    assert site.client.get("/catalog/products/shop.orders").status_code == 303  # the token expired: log in again


def test_a_bearer_access_token_reads_the_page_as_its_principal(site: Site) -> None:
    page = site.client.get("/catalog/products/shop.orders", headers={"Authorization": f"Bearer {site.token()}"})
    assert page.status_code == 200
    assert regions_in_sample(page.text) == {"EU"}
    row = site.audit.query(principal="eve@example.org", tool="page:product", limit=1)[0]
    assert row.outcome == "ok"


def test_a_bearer_token_of_another_resource_is_refused_and_audited(site: Site) -> None:
    other = site.token(aud="http://elsewhere.example.org/mcp")
    page = site.client.get("/catalog", headers={"Authorization": f"Bearer {other}"})
    assert page.status_code == 401
    assert "audience" in page.text
    row = site.audit.query(principal="anonymous", tool="page:list", limit=1)[0]
    assert (row.outcome, row.error_code) == ("denied", "unauthorized")


def test_a_token_lacking_the_required_scope_cannot_log_in(site: Site) -> None:
    response = paste(site.client, site.token(scope="openid"))
    assert response.status_code == 403
    assert "dataproducts:read" in response.text
    assert "dp_session" not in response.headers.get("set-cookie", "")
    row = site.audit.query(principal="eve@example.org", tool="page:login", limit=1)[0]
    assert (row.outcome, row.error_code) == ("denied", "insufficient_scope")
    bearer = site.client.get("/catalog", headers={"Authorization": f"Bearer {site.token(scope='openid')}"})
    assert bearer.status_code == 403


def test_product_scopes_hide_and_refuse_products_on_the_page(site: Site) -> None:
    without = {"Authorization": f"Bearer {site.token(ANN)}"}
    link = 'href="/catalog/products/shop.customers"'
    assert link not in site.client.get("/catalog", headers=without).text
    refused = site.client.get("/catalog/products/shop.customers", headers=without)
    assert refused.status_code == 403
    assert "insufficient_scope" in refused.text and PII in refused.text
    row = site.audit.query(principal="ann@example.org", tool="page:product", limit=1)[0]
    assert (row.outcome, row.error_code) == ("denied", "insufficient_scope")
    with_pii = {"Authorization": f"Bearer {site.token(ANN, scope=f'{READ} {PII}')}"}
    assert link in site.client.get("/catalog", headers=with_pii).text
    assert site.client.get("/catalog/products/shop.customers", headers=with_pii).status_code == 200


def test_an_opaque_token_opens_a_session_bounded_by_its_introspected_expiry(site: Site) -> None:
    token = site.issuer.opaque_token(
        aud=RESOURCE, scope=READ, exp=int(time.time()) + 3, **{k: v for k, v in EVE.items() if k != "sub"}
    )
    assert paste(site.client, token).status_code == 303
    checks = site.issuer.introspections
    assert site.client.get("/catalog").status_code == 200
    assert site.issuer.introspections == checks  # the session is not re-checked: its exp bounds it
    time.sleep(3.2)
    assert site.client.get("/catalog").status_code == 303


def test_an_opaque_token_without_expiry_opens_no_session(site: Site) -> None:
    token = site.issuer.opaque_token(aud=RESOURCE, scope=READ, email="eve@example.org", exp=None)
    site.issuer.opaque[token].pop("exp")
    response = paste(site.client, token)
    assert response.status_code == 401
    assert "no expiry" in response.text


def test_logging_out_ends_an_oauth_session(site: Site) -> None:
    assert paste(site.client, site.token()).status_code == 303
    cookie = site.client.cookies["dp_session"]
    assert site.client.post("/catalog/logout", data={"csrf": csrf(site.client)}).status_code == 303
    site.client.cookies.set("dp_session", cookie, path="/catalog")  # a copy kept from before
    assert site.client.get("/catalog").status_code == 303


def test_a_tokens_mode_session_is_not_accepted_in_oauth_mode(demo: DemoWorkspace, site: Site) -> None:
    tokens_mode = load_settings(demo.config_path)
    with TestClient(create_http_app(tokens_mode), follow_redirects=False) as other:
        assert paste(other, demo.tokens["ana"]).status_code == 303
        cookie = other.cookies["dp_session"]
    site.client.cookies.set("dp_session", cookie, path="/catalog")
    assert site.client.get("/catalog").status_code == 303


# -- the sign-in flow -----------------------------------------------------------------------------------


def test_the_login_page_offers_signing_in_at_the_issuer(site: Site) -> None:
    page = site.client.get("/catalog/login?next=/catalog/products/shop.orders")
    assert f"Sign in with {site.issuer.issuer}" in page.text
    assert 'href="/catalog/login/oauth?next=/catalog/products/shop.orders"' in page.text


def test_signing_in_with_the_code_flow_opens_a_governed_session(site: Site) -> None:
    site.issuer.user_claims = {**EVE}
    callback = sign_in(site, "/catalog/products/shop.orders")
    assert callback.status_code == 200, callback.text
    assert 'http-equiv="refresh" content="0;url=/catalog/products/shop.orders"' in callback.text
    asked = site.issuer.authorizations[-1]
    assert asked["code_challenge_method"] == "S256" and asked["resource"] == RESOURCE
    assert asked["redirect_uri"] == "http://testserver/catalog/login/callback"
    assert set(asked["scope"].split()) == {"openid", READ}
    exchange = site.issuer.exchanges[-1]
    assert exchange["resource"] == RESOURCE and exchange["code_verifier"]
    assert "access_token" not in site.client.cookies.get("dp_session", "")
    page = site.client.get("/catalog/products/shop.orders")
    assert page.status_code == 200
    assert regions_in_sample(page.text) == {"EU"}
    row = site.audit.query(principal="eve@example.org", tool="page:login", limit=1)[0]
    assert row.outcome == "ok"
    assert "dp_oauth=" in callback.headers.get("set-cookie", "")  # the flow's cookie is cleared


def test_a_callback_with_another_state_is_refused_and_audited(site: Site) -> None:
    site.issuer.user_claims = {**EVE}
    start = site.client.get("/catalog/login/oauth")
    with httpx.Client() as browser_at_issuer:
        back = browser_at_issuer.get(start.headers["location"]).headers["location"]
    forged = re.sub(r"state=[^&]+", "state=forged", back)
    response = site.client.get(forged)
    assert response.status_code == 400
    assert "state does not match" in response.text
    assert "dp_session" not in site.client.cookies
    row = site.audit.query(principal="anonymous", tool="page:login", limit=1)[0]
    assert (row.outcome, row.error_code) == ("denied", "invalid_request")


def test_a_callback_without_the_flow_cookie_is_refused(site: Site) -> None:
    site.issuer.user_claims = {**EVE}
    start = site.client.get("/catalog/login/oauth")
    with httpx.Client() as browser_at_issuer:
        back = browser_at_issuer.get(start.headers["location"]).headers["location"]
    site.client.cookies.clear()  # another browser got hold of the callback URL
    response = site.client.get(back)
    assert response.status_code == 400
    assert "not started by this browser" in response.text


def test_a_code_is_exchanged_once_only(site: Site) -> None:
    site.issuer.user_claims = {**EVE}
    start = site.client.get("/catalog/login/oauth")
    flow_cookie = site.client.cookies["dp_oauth"]
    with httpx.Client() as browser_at_issuer:
        back = browser_at_issuer.get(start.headers["location"]).headers["location"]
    assert site.client.get(back).status_code == 200
    site.client.cookies.clear()
    site.client.cookies.set("dp_oauth", flow_cookie, path="/catalog/login")
    replay = site.client.get(back)
    assert replay.status_code == 401
    assert "did not exchange" in replay.text


def test_a_signed_in_user_lacking_the_required_scope_gets_no_session(site: Site) -> None:
    site.issuer.user_claims = {**EVE, "scope": "openid"}
    response = sign_in(site)
    assert response.status_code == 403
    assert "dp_session" not in site.client.cookies
    row = site.audit.query(principal="eve@example.org", tool="page:login", limit=1)[0]
    assert (row.outcome, row.error_code) == ("denied", "insufficient_scope")


def test_the_issuer_refusing_the_sign_in_is_shown_and_audited(site: Site) -> None:
    start = site.client.get("/catalog/login/oauth")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    response = site.client.get(f"/catalog/login/callback?state={state}&error=access_denied")
    assert response.status_code == 401
    assert "refused the sign-in (access_denied" in response.text
    row = site.audit.query(principal="anonymous", tool="page:login", limit=1)[0]
    assert row.error_code == "unauthorized"


def test_explicit_endpoints_serve_air_gapped_sites(demo: DemoWorkspace, issuer: Issuer) -> None:
    settings = oauth_settings(
        demo,
        issuer,
        page_authorization_endpoint=f"{issuer.url}/authorize?kc_idp_hint=x",
        page_token_endpoint=f"{issuer.url}/token",
    )
    with TestClient(create_http_app(settings), follow_redirects=False) as client:
        start = client.get("/catalog/login/oauth")
    assert start.headers["location"].startswith(f"{issuer.url}/authorize?kc_idp_hint=x&response_type=code")


def test_an_unreachable_issuer_metadata_is_a_clear_503(demo: DemoWorkspace, issuer: Issuer) -> None:
    settings = oauth_settings(demo, issuer)
    settings.auth.issuers[0] = settings.auth.issuers[0].model_copy(update={"issuer": "http://127.0.0.1:9/realms/x"})
    with TestClient(create_http_app(settings), follow_redirects=False) as client:
        response = client.get("/catalog/login/oauth")
    assert response.status_code == 503
    assert "page_authorization_endpoint" in response.text


def test_sign_in_settings_are_checked(demo: DemoWorkspace, issuer: Issuer) -> None:
    with pytest.raises(ConfigError, match="page_token_endpoint"):
        oauth_settings(demo, issuer, page_authorization_endpoint=f"{issuer.url}/authorize")
    with pytest.raises(ConfigError, match="page_issuer"):
        oauth_settings(demo, issuer, page_issuer="https://other.example.org")
    with pytest.raises(ConfigError, match="without auth.page_client_id"):
        oauth_settings(demo, issuer, page_client_id=None)
    with pytest.raises(ConfigError, match="needs auth.mode: oauth"):
        load_settings(demo.config_path, auth={"page_client_id": "x"})


def test_the_readme_page_client_configuration_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPRODUCTS_PAGE_CLIENT_SECRET", "from-the-environment")
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Signing in to the catalog page", 1)[1]
    config = tmp_path / "dataproducts.yaml"
    config.write_text(section.split("```yaml\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    auth = load_settings(config).auth
    assert auth.page_client_id == "dataproducts-catalog"
    assert auth.page_client_secret is not None
    assert auth.page_client_secret.get_secret_value() == "from-the-environment"
    assert auth.page_scopes == ["openid", "dataproducts"]


def test_a_token_with_more_roles_than_a_cookie_holds_is_refused_with_the_fix(site: Site) -> None:
    crowded = {
        **EVE,
        "realm_access": {"roles": ["sales-eu", *(f"group-{secrets.token_hex(8)}" for _ in range(300))]},
    }
    response = paste(site.client, site.token(crowded))
    assert response.status_code == 400
    assert "too many to keep" in response.text and "realm_access.roles" in response.text
    assert "dp_session" not in site.client.cookies


def test_an_introspection_endpoint_that_does_not_answer_is_a_503_audited_as_an_error(
    demo: DemoWorkspace, issuer: Issuer
) -> None:
    settings = oauth_settings(demo, issuer)
    unreachable = {"introspection_endpoint": "http://127.0.0.1:9/introspect"}
    settings.auth.issuers[0] = settings.auth.issuers[0].model_copy(update=unreachable)
    token = issuer.opaque_token(aud=RESOURCE, scope=READ, email="eve@example.org")
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        with TestClient(create_http_app(settings), follow_redirects=False) as client:
            response = client.get("/catalog", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 503
            assert "try again shortly" in response.text
            assert paste(client, token).status_code == 503
        row = AuditLog.from_registry(registry).query(principal="anonymous", tool="page:login", limit=1)[0]
    finally:
        registry.close()
    assert (row.outcome, row.error_code) == ("error", "auth_unavailable")


def test_a_public_page_client_signs_in_with_pkce_alone(demo: DemoWorkspace, issuer: Issuer) -> None:
    settings = oauth_settings(demo, issuer, page_client_secret=None)
    issuer.user_claims, issuer.public_page_client = {**EVE}, True
    try:
        with TestClient(create_http_app(settings), follow_redirects=False) as client:
            start = client.get("/catalog/login/oauth")
            with httpx.Client() as browser_at_issuer:
                back = browser_at_issuer.get(start.headers["location"]).headers["location"]
            assert client.get(back).status_code == 200
            assert client.get("/catalog").status_code == 200
    finally:
        issuer.public_page_client = False
    exchange = issuer.exchanges[-1]
    assert exchange["client_id"] == PAGE_CLIENT_ID and "client_secret" not in exchange


# -- tool scopes hold on every entry point, not only on MCP tools/call -------------------------------

ROWS = "dataproducts:rows"


def test_tool_scopes_hold_on_the_catalog_page(demo: DemoWorkspace, issuer: Issuer) -> None:
    settings = oauth_settings(demo, issuer, tool_scopes={"query_product": [ROWS], "describe_product": [ROWS]})
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        with TestClient(create_http_app(settings), follow_redirects=False) as client:
            site = Site(issuer, settings, client, AuditLog.from_registry(registry))
            lacking = {"Authorization": f"Bearer {site.token()}"}
            page = client.get("/catalog/products/shop.orders", headers=lacking)
            assert page.status_code == 403 and "insufficient_scope" in page.text and ROWS in page.text
            assert 'id="sample"' not in page.text and "<td" not in page.text
            rows = site.audit.query(principal="eve@example.org", tool="describe_product", limit=1)
            assert [(r.outcome, r.error_code) for r in rows] == [("denied", "insufficient_scope")]

            granted = {"Authorization": f"Bearer {site.token(scope=f'{READ} {ROWS}')}"}
            served = client.get("/catalog/products/shop.orders", headers=granted)
            assert served.status_code == 200 and 'id="sample"' in served.text
    finally:
        registry.close()


def test_a_body_nested_past_the_parser_depth_is_answered_not_crashed(demo: DemoWorkspace, issuer: Issuer) -> None:
    settings = oauth_settings(demo, issuer, tool_scopes={"run_sql": [ROWS]})
    with TestClient(create_http_app(settings), follow_redirects=False) as client:
        token = issuer.token(aud=RESOURCE, scope=f"openid {READ}", **EVE)
        answer = client.post(
            "/mcp",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            content=b"[" * 20000,
        )
    assert answer.status_code < 500


@pytest.mark.parametrize("target", ["/catalog/%2e%2e/mcp", "/catalog/.%2e/metrics", "/catalog/%2E%2E/x"])
def test_after_login_a_percent_encoded_dot_segment_goes_to_the_catalog(site: Site, target: str) -> None:
    answer = paste(site.client, site.token(), next_page=target)
    assert answer.status_code in (200, 303)
    assert target not in answer.headers.get("location", "") and target not in answer.text


@pytest.mark.anyio
async def test_a_resource_read_is_scoped_as_describe_product(demo: DemoWorkspace, issuer: Issuer) -> None:
    """The HTTP check sees tools/call only: the use case itself refuses a resource read (and a listing)."""
    settings = oauth_settings(demo, issuer, tool_scopes={"describe_product": [ROWS], "search_products": [ROWS]})
    eve = Principal(
        name="eve@example.org",
        roles=frozenset({"sales-eu"}),
        scopes=frozenset({READ}),
        tool_scopes=tuple((t, tuple(s)) for t, s in settings.auth.tool_scopes.items()),
    )
    async with DataProductsService.open(settings) as service:
        with pytest.raises(InsufficientScopeError, match=ROWS):
            await service.product_document(eve, "shop.orders")
        with pytest.raises(InsufficientScopeError, match=ROWS):
            await service.list_product_resources(eve)
        rows = service.audit.query(principal="eve@example.org", limit=2)
        assert {(r.tool, r.outcome, r.error_code) for r in rows} == {
            ("read_resource", "denied", "insufficient_scope"),
            ("list_resources", "denied", "insufficient_scope"),
        }
        granted = eve.model_copy(update={"scopes": frozenset({READ, ROWS})})
        assert "order_id" in await service.product_document(granted, "shop.orders")
