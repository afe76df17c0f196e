"""Signing in to the catalog page at the identity provider, in a real headless Chromium.

The whole HTTP app on loopback in ``auth.mode: oauth`` and the test issuer on another loopback port;
the browser clicks "Sign in with ...", the issuer approves the test user (role claim ``sales-eu``), the
browser comes back through the callback and sees the product's sample row-filtered for that role.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.audit import AuditLog
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.settings import load_settings
from tests.servers.oauth_issuer import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAGE_CLIENT_ID,
    PAGE_CLIENT_SECRET,
    Issuer,
    free_port,
    running_issuer,
    serve,
)
from tests.servers.test_catalog_page_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)

if CHROMIUM.exists():
    from playwright.sync_api import sync_playwright


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


def test_signing_in_at_the_issuer_in_the_browser_shows_the_row_filtered_sample(
    demo: DemoWorkspace, issuer: Issuer, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {
        "mode": "oauth",
        "resource": f"{base}/mcp",
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
        "required_scopes": ["dataproducts:read"],
        "page_client_id": PAGE_CLIENT_ID,
        "page_client_secret": PAGE_CLIENT_SECRET,
    }
    settings = load_settings(demo.config_path, auth=auth)
    issuer.user_claims = {"sub": "u-eve", "email": "eve@example.org", "realm_access": {"roles": ["sales-eu"]}}
    with serve(create_http_app(settings), port), sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = context.new_page()
            page.goto(f"{base}/catalog/products/shop.orders")
            assert page.url.startswith(f"{base}/catalog/login")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "login-oauth.png"), full_page=True)
            page.click("#sign-in")
            page.wait_for_url(f"{base}/catalog/products/shop.orders")  # back where eve was going, signed in
            assert page.locator("#principal").inner_text() == "eve@example.org"
            regions = page.locator('#sample td[data-column="region"]').all_inner_texts()
            assert regions and set(regions) == {"EU"}
            raw = page.request.get(f"{base}/catalog/products/shop.orders").text()
            sample = raw.split('id="sample"', 1)[1].split("</table>", 1)[0]
            assert set(re.findall(r'<td data-column="region">([^<]*)</td>', sample)) == {"EU"}
            page.screenshot(path=str(ARTIFACTS / "product-eve-oauth.png"), full_page=True)
            assert not any(c["name"] == "dp_oauth" for c in context.cookies())  # the flow's cookie is gone
        finally:
            context.close()
    assert issuer.authorizations[-1]["code_challenge_method"] == "S256"
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        row = AuditLog.from_registry(registry).query(principal="eve@example.org", tool="page:login", limit=1)[0]
    finally:
        registry.close()
    assert row.outcome == "ok"
