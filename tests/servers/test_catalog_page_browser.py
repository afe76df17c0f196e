"""The catalog page end to end in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

A real server on loopback (uvicorn, the whole HTTP app); the browser logs in with the login form, searches,
opens product pages. Screenshots are saved as test artifacts in ``test-artifacts/catalog-page/`` at the
repository root (ignored by git). ``DATAPRODUCTS_DOCS_SCREENSHOT=<path>`` also saves the README's
screenshot there.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from catalog.audit import AuditLog
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.settings import Settings, load_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "catalog-page"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)

if CHROMIUM.exists():
    from playwright.sync_api import BrowserContext, Page, sync_playwright


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def page_settings(demo: DemoWorkspace) -> Settings:
    return load_settings(demo.config_path)


@pytest.fixture(scope="module")
def base_url(page_settings: Settings) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(create_http_app(page_settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "HTTP server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh Chromium profile per test."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def audit_log(page_settings: Settings) -> Iterator[AuditLog]:
    registry = Registry.from_url(page_settings.resolved_registry_url())
    try:
        yield AuditLog.from_registry(registry)
    finally:
        registry.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Page, base_url: str, token: str) -> None:
    page.goto(f"{base_url}/catalog")
    page.fill("#token", token)
    page.click("form[action='/catalog/login'] button[type=submit]")
    page.wait_for_url(f"{base_url}/catalog")


def test_unauthenticated_visitors_get_the_login_page(browser: BrowserContext, base_url: str) -> None:
    page = browser.new_page()
    page.goto(f"{base_url}/catalog/products/shop.orders")
    assert page.url == f"{base_url}/catalog/login?next=%2Fcatalog%2Fproducts%2Fshop.orders"
    assert page.locator("#token").is_visible()
    assert page.locator("#sample").count() == 0
    shot(page, "login")


def test_login_search_and_a_row_filtered_sample_in_the_browser(
    browser: BrowserContext, base_url: str, demo: DemoWorkspace, audit_log: AuditLog
) -> None:
    page = browser.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Refused" in message.text else None)
    page.goto(f"{base_url}/catalog/products/shop.orders")
    page.fill("#token", demo.tokens["ana"])  # role sales-eu: EU orders only
    page.click("form[action='/catalog/login'] button[type=submit]")
    page.wait_for_url(f"{base_url}/catalog/products/shop.orders")  # back where the visitor was going

    page.goto(f"{base_url}/catalog")
    page.fill("input[name=q]", "orders")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r".*/catalog\?q=orders$"))
    assert page.locator("#products a", has_text="shop.orders").count() == 1
    shot(page, "search")

    page.locator("#products a", has_text="shop.orders").first.click()
    page.wait_for_url(f"{base_url}/catalog/products/shop.orders")
    regions = page.locator('#sample td[data-column="region"]').all_inner_texts()
    assert regions and set(regions) == {"EU"}  # the DOM
    raw = page.request.get(f"{base_url}/catalog/products/shop.orders").text()  # the raw HTML, same session
    sample = raw.split('id="sample"', 1)[1].split("</table>", 1)[0]
    assert set(re.findall(r'<td data-column="region">([^<]*)</td>', sample)) == {"EU"}
    assert page.locator("#lineage svg g.node.focus").count() == 1
    assert page.locator("text=filtered for you").count() == 1
    stylesheet_applied = page.evaluate("getComputedStyle(document.querySelector('header.top')).backgroundColor")
    assert stylesheet_applied == "rgb(23, 35, 59)"  # the one stylesheet loaded under the CSP
    assert not refused, refused  # nothing blocked by the Content-Security-Policy
    shot(page, "product-ana")
    if target := os.environ.get("DATAPRODUCTS_DOCS_SCREENSHOT"):
        page.screenshot(path=target)

    rows = audit_log.query(principal="ana", tool="page:product", product="shop.orders", limit=5)
    assert rows and rows[0].outcome == "ok"
    assert audit_log.query(principal="ana", tool="page:list", limit=1)[0].outcome == "ok"


def test_masked_columns_show_masked_values_in_the_browser(
    browser: BrowserContext, base_url: str, demo: DemoWorkspace
) -> None:
    page = browser.new_page()
    log_in(page, base_url, demo.tokens["ana"])
    page.goto(f"{base_url}/catalog/products/shop.customers")
    assert "masked: hash" in page.locator('#columns tr[data-column="email"]').inner_text()
    emails = page.locator('#sample td[data-column="email"]').all_inner_texts()
    assert emails and not any("@" in e for e in emails)
    names = page.locator('#sample td[data-column="full_name"]').all_inner_texts()
    assert names and len(set(names)) == 1  # redacted: one placeholder for everyone
    shot(page, "customers-masked")


def test_logging_out_in_the_browser_ends_the_session(
    browser: BrowserContext, base_url: str, demo: DemoWorkspace
) -> None:
    page = browser.new_page()
    log_in(page, base_url, demo.tokens["sam"])
    assert page.locator("#principal").inner_text() == "sam"
    page.click("form[action='/catalog/logout'] button[type=submit]")
    page.wait_for_url(f"{base_url}/catalog/login")
    page.goto(f"{base_url}/catalog")
    assert page.url.startswith(f"{base_url}/catalog/login")
