"""The catalog page over HTTP (Starlette's test client on the real app): login, governance, auditing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

import servers
from catalog.audit import AuditLog
from catalog.contract import ProductContract
from catalog.errors import ConfigError
from catalog.loader import load_contract_file
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.settings import Settings, hash_token, load_settings

SUE_TOKEN = "dp_sue_support-only-token-for-tests"


@pytest.fixture
def page_settings(demo: DemoWorkspace) -> Settings:
    """The demo's principals plus sue, who has role support only (no access to shop.orders)."""
    base = load_settings(demo.config_path)
    principals = [p.model_dump() for p in base.principals]
    principals.append({"name": "sue", "roles": ["support"], "token_sha256": hash_token(SUE_TOKEN)})
    return load_settings(demo.config_path, principals=principals)


@pytest.fixture
def client(page_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_http_app(page_settings), follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def audit_log(page_settings: Settings) -> Iterator[AuditLog]:
    registry = Registry.from_url(page_settings.resolved_registry_url())
    try:
        yield AuditLog.from_registry(registry)
    finally:
        registry.close()


def _csrf(client: TestClient) -> str:
    """The CSRF token the page's forms carry (the login form's, once the browser holds the cookie)."""
    if token := client.cookies.get("dp_csrf"):
        return token
    page = client.get("/catalog/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def login(client: TestClient, token: str, next_page: str = "/catalog") -> None:
    response = client.post("/catalog/login", data={"token": token, "csrf": _csrf(client), "next": next_page})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == next_page


def sample_cells(html: str, column: str) -> list[str]:
    """The values of ``column`` in the sample table of a product page."""
    table = html.split('id="sample"', 1)[1].split("</table>", 1)[0]
    return [unescape(v) for v in re.findall(rf'<td data-column="{re.escape(column)}">([^<]*)</td>', table)]


def test_an_unauthenticated_view_goes_to_the_login_page_and_is_audited(client: TestClient, audit_log: AuditLog) -> None:
    response = client.get("/catalog/products/shop.orders")
    assert response.status_code == 303
    assert response.headers["location"] == "/catalog/login?next=%2Fcatalog%2Fproducts%2Fshop.orders"
    row = audit_log.query(principal="anonymous", tool="page:product", limit=1)[0]
    assert (row.product, row.outcome, row.error_code) == ("shop.orders", "denied", "unauthorized")
    login_page = client.get(response.headers["location"])
    assert login_page.status_code == 200
    assert 'name="token"' in login_page.text
    assert 'value="/catalog/products/shop.orders"' in login_page.text


def test_the_page_sends_a_strict_content_security_policy_and_no_store(client: TestClient) -> None:
    response = client.get("/catalog/login")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # no script may run at all
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script" not in response.text
    assert client.get("/catalog/static/catalog.css").headers["content-type"].startswith("text/css")


def test_a_login_sets_an_httponly_strict_cookie_without_the_token(client: TestClient, demo: DemoWorkspace) -> None:
    token = demo.tokens["ana"]
    response = client.post("/catalog/login", data={"token": token, "csrf": _csrf(client), "next": "/catalog"})
    assert response.status_code == 303
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("dp_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/catalog" in cookie
    assert token not in cookie and token.split("_", 2)[2] not in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure


def test_a_wrong_token_is_refused_with_a_clear_message_and_audited(client: TestClient, audit_log: AuditLog) -> None:
    response = client.post("/catalog/login", data={"token": "not-a-token", "csrf": _csrf(client)})
    assert response.status_code == 401
    assert "unknown token" in response.text
    assert "dp_session" not in response.headers.get("set-cookie", "")
    row = audit_log.query(principal="anonymous", tool="page:login", limit=1)[0]
    assert (row.outcome, row.error_code) == ("denied", "unauthorized")


def test_a_login_without_the_csrf_token_is_refused(client: TestClient, demo: DemoWorkspace) -> None:
    _csrf(client)
    response = client.post("/catalog/login", data={"token": demo.tokens["ana"], "csrf": "forged"})
    assert response.status_code == 403
    assert "security token" in response.text
    assert "dp_session" not in response.headers.get("set-cookie", "")
    cross_site = client.post(
        "/catalog/login",
        data={"token": demo.tokens["ana"], "csrf": _csrf(client)},
        headers={"origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert "another site" in cross_site.text
    fetched_cross_site = client.post(
        "/catalog/login",
        data={"token": demo.tokens["ana"], "csrf": _csrf(client)},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert fetched_cross_site.status_code == 403


def test_a_logout_without_the_csrf_token_keeps_the_session(client: TestClient, demo: DemoWorkspace) -> None:
    login(client, demo.tokens["ana"])
    response = client.post("/catalog/logout", data={"csrf": "forged"})
    assert response.status_code == 403
    assert "still logged in" in response.text
    assert client.get("/catalog").status_code == 200


def test_login_never_redirects_to_another_site(client: TestClient, demo: DemoWorkspace) -> None:
    for target in (
        "https://evil.example/",
        "//evil.example/catalog",
        "/catalog//evil.example",
        "/mcp",
        "/catalog/../mcp",
    ):
        response = client.post(
            "/catalog/login", data={"token": demo.tokens["ana"], "csrf": _csrf(client), "next": target}
        )
        assert response.headers["location"] == "/catalog", target


def test_the_list_shows_readable_products_and_search_finds_them(client: TestClient, demo: DemoWorkspace) -> None:
    login(client, demo.tokens["sue"] if "sue" in demo.tokens else SUE_TOKEN)
    listing = client.get("/catalog")
    assert listing.status_code == 200
    assert "shop.customers" in listing.text
    assert "shop.orders" not in listing.text  # sue (support) may not read it
    found = client.get("/catalog", params={"q": "orders"})
    assert found.status_code == 200
    assert "shop.orders" not in found.text
    assert "Products matching" in found.text


def test_search_reuses_the_catalog_search_and_escapes_what_it_echoes(client: TestClient, demo: DemoWorkspace) -> None:
    login(client, demo.tokens["ana"])
    found = client.get("/catalog", params={"q": "orders"})
    assert 'href="/catalog/products/shop.orders"' in found.text
    hostile = client.get("/catalog", params={"q": "<script>alert(1)</script>"})
    assert "<script>alert(1)" not in hostile.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile.text
    too_long = client.get("/catalog", params={"q": "x" * 201})
    assert too_long.status_code == 400
    assert "use at most 200" in too_long.text


def test_a_row_filtered_viewer_never_sees_filtered_rows_in_the_sample(client: TestClient, demo: DemoWorkspace) -> None:
    login(client, demo.tokens["ana"])  # role sales-eu: region = 'EU' only
    page = client.get("/catalog/products/shop.orders")
    assert page.status_code == 200
    regions = sample_cells(page.text, "region")
    assert regions and set(regions) == {"EU"}
    assert "filtered for you" in page.text
    client.cookies.clear()
    login(client, demo.tokens["sam"])  # no row filter: the same sample size shows other regions
    everyone = sample_cells(client.get("/catalog/products/shop.orders").text, "region")
    assert set(everyone) - {"EU"}


def test_masked_columns_are_shown_masked_as_the_viewer_gets_them(client: TestClient, demo: DemoWorkspace) -> None:
    login(client, demo.tokens["ana"])
    page = client.get("/catalog/products/shop.customers").text
    column_row = page.split('data-column="email"', 1)[1].split("</tr>", 1)[0]
    assert "masked: hash" in column_row
    emails = sample_cells(page, "email")
    assert emails and not any("@" in e for e in emails)
    client.cookies.clear()
    login(client, demo.tokens["sam"])  # pii-reader: raw values
    raw = sample_cells(client.get("/catalog/products/shop.customers").text, "email")
    assert raw and all("@" in e for e in raw)


def test_the_product_page_shows_owner_columns_metrics_quality_lineage_and_history(
    client: TestClient, demo: DemoWorkspace
) -> None:
    login(client, demo.tokens["sam"])
    page = client.get("/catalog/products/shop.orders").text
    assert "sales-data &lt;sales-data@example.org&gt;" in page
    assert "order_count" in page and "order_time" in page  # a metric and a dimension
    assert 'id="freshness"' in page and "Freshness:" in page
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert 'data-node="shop.orders"' in svg and 'data-node="shop.customers"' in svg
    assert 'href="/catalog/products/analytics.order_facts"' in svg
    assert "v1.0.0" in page and "first registered version" in page


def test_a_product_the_viewer_may_not_read_is_refused_and_audited(client: TestClient, audit_log: AuditLog) -> None:
    login(client, SUE_TOKEN)
    response = client.get("/catalog/products/shop.orders")
    assert response.status_code == 403
    assert "access_denied" in response.text
    assert "<td" not in response.text
    row = audit_log.query(principal="sue", tool="page:product", limit=1)[0]
    assert (row.product, row.outcome, row.error_code) == ("shop.orders", "denied", "access_denied")


def test_an_unknown_product_suggests_only_readable_ones(
    client: TestClient, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    login(client, SUE_TOKEN)
    response = client.get("/catalog/products/shop.ordrs")
    assert response.status_code == 404
    assert "not_found" in response.text and "shop.orders" not in response.text
    row = audit_log.query(principal="sue", tool="page:product", limit=1)[0]
    assert (row.outcome, row.error_code) == ("error", "not_found")


def test_every_page_view_is_audited_with_its_principal_and_product(
    client: TestClient, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    login(client, demo.tokens["ana"])
    assert audit_log.query(principal="ana", tool="page:login", limit=1)[0].outcome == "ok"
    client.get("/catalog/products/shop.orders")
    row = audit_log.query(principal="ana", limit=1)[0]
    assert (row.tool, row.product, row.outcome) == ("page:product", "shop.orders", "ok")
    assert row.rows and row.rows > 0  # the sample's rows
    sample = audit_log.query(principal="ana", tool="query_product", product="shop.orders", limit=1)[0]
    assert sample.time <= row.time  # the sample ran through query_product, audited as such
    client.get("/catalog", params={"q": "orders"})
    assert audit_log.query(principal="ana", limit=1)[0].tool == "page:list"


def test_a_logged_out_session_cookie_no_longer_works(
    client: TestClient, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    login(client, demo.tokens["ana"])
    old = client.cookies.get("dp_session")
    assert old
    csrf = _csrf(client)
    response = client.post("/catalog/logout", data={"csrf": csrf})
    assert response.status_code == 303 and response.headers["location"] == "/catalog/login"
    assert audit_log.query(principal="ana", tool="page:logout", limit=1)[0].outcome == "ok"
    client.cookies.clear()
    client.cookies.set("dp_session", old, path="/catalog")
    assert client.get("/catalog").status_code == 303


def test_a_tampered_cookie_or_a_rotated_token_ends_the_session(
    client: TestClient, demo: DemoWorkspace, page_settings: Settings
) -> None:
    login(client, demo.tokens["ana"])
    cookie = client.cookies.get("dp_session")
    assert cookie
    client.cookies.clear()
    client.cookies.set("dp_session", cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), path="/catalog")
    assert client.get("/catalog").status_code == 303
    rotated = page_settings.model_copy(deep=True)
    for principal in rotated.principals:
        if principal.name == "ana":
            principal.token_sha256 = hash_token("a-new-token")
    with TestClient(create_http_app(rotated), follow_redirects=False) as other:
        other.cookies.set("dp_session", cookie, path="/catalog")
        assert other.get("/catalog").status_code == 303


def test_a_bearer_token_works_for_scripts(client: TestClient, demo: DemoWorkspace) -> None:
    response = client.get("/catalog/products/shop.orders", headers={"Authorization": f"Bearer {demo.tokens['ana']}"})
    assert response.status_code == 200
    assert set(sample_cells(response.text, "region")) == {"EU"}


def test_the_page_can_be_disabled_and_must_not_overlap_the_mcp_path(page_settings: Settings) -> None:
    off = page_settings.model_copy(
        update={"catalog_page": page_settings.catalog_page.model_copy(update={"enabled": False})}
    )
    with TestClient(create_http_app(off), follow_redirects=False) as client:
        assert client.get("/catalog/login").status_code == 401  # the MCP endpoint's bearer check answers
    clash = page_settings.model_copy(
        update={"catalog_page": page_settings.catalog_page.model_copy(update={"path": "/mcp"})}
    )
    with pytest.raises(ConfigError, match="overlaps server.path"):
        create_http_app(clash)


def test_a_bad_catalog_page_path_is_a_clear_configuration_error(demo: DemoWorkspace) -> None:
    with pytest.raises(ConfigError, match="catalog_page.path"):
        load_settings(demo.config_path, catalog_page={"path": "catalog"})


def test_a_huge_or_non_form_post_is_refused_before_it_is_parsed(client: TestClient) -> None:
    csrf = _csrf(client)
    huge = client.post("/catalog/login", data={"token": "x" * 10_000, "csrf": csrf})
    assert huge.status_code == 413
    as_json = client.post("/catalog/login", json={"token": "x", "csrf": csrf})
    assert as_json.status_code == 415


def test_a_stale_product_that_refuses_reads_is_refused_on_the_page_too(
    client: TestClient, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    login(client, demo.tokens["sam"])
    response = client.get("/catalog/products/shop.fx_rates")
    assert response.status_code == 409
    assert "stale_data" in response.text and "sla.on_stale: refuse" in response.text
    row = audit_log.query(principal="sam", tool="page:product", limit=1)[0]
    assert (row.product, row.outcome, row.error_code) == ("shop.fx_rates", "error", "stale_data")


def test_aggregate_only_columns_are_left_out_of_the_sample(demo: DemoWorkspace, tmp_path: Path) -> None:
    settings = load_settings(demo.config_path, registry_url=f"sqlite:///{tmp_path / 'registry.db'}")
    data = yaml.safe_load((Path(servers.__file__).parent / "demo_contracts" / "shop.orders.yaml").read_text("utf-8"))
    data["policy"]["aggregate_only"] = {"columns": ["customer_id"], "min_group_size": 5, "unless": "role:pii-reader"}
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        registry.register(ProductContract.model_validate(data), actor="tests")
        for path in demo.contract_paths:
            for contract in load_contract_file(path):
                if contract.name != "shop.orders":
                    registry.register(contract, actor="tests")
    with TestClient(create_http_app(settings), follow_redirects=False) as client:
        login(client, demo.tokens["ana"])
        page = client.get("/catalog/products/shop.orders").text
    assert "aggregates only (groups of 5+)" in page.split('data-column="customer_id"', 1)[1].split("</tr>", 1)[0]
    assert sample_cells(page, "order_id") and not sample_cells(page, "customer_id")
    assert "aggregate-only columns left out: customer_id" in page


def test_a_login_over_https_sets_a_secure_cookie(page_settings: Settings, demo: DemoWorkspace) -> None:
    with TestClient(create_http_app(page_settings), base_url="https://testserver", follow_redirects=False) as client:
        login(client, demo.tokens["ana"])
        assert client.get("/catalog").status_code == 200
    with TestClient(create_http_app(page_settings), base_url="https://testserver", follow_redirects=False) as client:
        response = client.post("/catalog/login", data={"token": demo.tokens["ana"], "csrf": _csrf(client)})
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("dp_session="))
    assert "Secure" in cookie


@pytest.mark.parametrize("who", ["ana", "sam"])
def test_every_demo_product_page_renders_for_each_principal(client: TestClient, demo: DemoWorkspace, who: str) -> None:
    login(client, demo.tokens[who])
    listing = client.get("/catalog").text
    names = re.findall(r'href="/catalog/products/([^"]+)"', listing)
    assert len(names) >= 7
    for name in names:
        response = client.get(f"/catalog/products/{name}")
        if name == "shop.fx_rates":  # stale on purpose, refuses reads
            assert response.status_code == 409
            continue
        assert response.status_code == 200, (name, response.text[:500])
        assert 'id="sample"' in response.text or "aggregate-only" in response.text, name
        assert 'id="lineage"' in response.text and "<svg" in response.text, name
