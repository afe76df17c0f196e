"""Freshness and quality through the real MCP client, on a demo workspace of its own.

The demo's ``shop.fx_rates`` is stale on purpose and refuses reads (``sla.on_stale: refuse``);
``shop.customers`` is stale and warns; ``analytics.order_facts`` has a check that fails on purpose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from catalog.audit import AuditLog
from catalog.errors import ConfigError, StaleDataError
from catalog.loader import load_contract_file
from catalog.quality_log import CheckResult, QualityLog
from catalog.registry import Registry
from servers.cli import app
from servers.demo import DemoWorkspace, build_demo_workspace
from servers.http import create_http_app
from servers.quality import checking_forever
from servers.service import DataProductsService
from servers.settings import ChecksConfig, Settings, load_settings
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def checked_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoWorkspace:
    """A registered demo workspace whose quality checks ran once."""
    workspace = build_demo_workspace(tmp_path_factory.mktemp("quality") / "ws")
    settings = load_settings(workspace.config_path)
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="tests")
    return workspace


@pytest.fixture
def quality_settings(checked_demo: DemoWorkspace) -> Settings:
    return load_settings(checked_demo.config_path)


async def structured(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error_text(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_stale_product_that_refuses_is_refused_on_every_read_path_and_each_refusal_is_audited(
    quality_settings: Settings,
) -> None:
    async with client_for(quality_settings, "ana") as ana:
        refusals = [
            await error_text(ana, "query_product", product="shop.fx_rates"),
            await error_text(
                ana, "run_sql", sql="SELECT currency, avg(eur_rate) AS rate FROM shop.fx_rates GROUP BY 1"
            ),
            await error_text(ana, "describe_product", product="shop.fx_rates"),
            await error_text(ana, "search_documents", query="dollar rate", product="shop.fx_rates"),
        ]
        with pytest.raises(MCPError) as resource:
            await ana.read_resource("product://shop.fx_rates")
    refusals.append(resource.value.error.message)
    for message in refusals:
        assert message.startswith("stale_data: shop.fx_rates is stale: last updated "), message
        assert "its SLA is 1d" in message and "treasury <treasury@example.org>" in message
    with Registry.from_url(quality_settings.resolved_registry_url()) as registry:
        rows = AuditLog.from_registry(registry).query(principal="ana", outcome="error", limit=50)
    refused = {r.tool for r in rows if r.error_code == "stale_data"}
    assert refused == {"query_product", "run_sql", "describe_product", "search_documents", "read_resource"}


async def test_ask_context_refuses_a_named_stale_product(quality_settings: Settings) -> None:
    async with DataProductsService.open(quality_settings) as service:
        with pytest.raises(StaleDataError):
            await service.ask_context(quality_settings.principal("sam"), "euro rate", product="shop.fx_rates")
        [row] = service.audit.query(principal="sam", tool="ask", limit=1)
    assert row.error_code == "stale_data"


async def test_a_stale_product_that_warns_is_served_with_its_freshness_and_a_warning(
    quality_settings: Settings,
) -> None:
    async with client_for(quality_settings, "sam") as sam:
        rows = await structured(sam, "query_product", product="shop.customers", columns=["customer_id"], limit=2)
        described = await structured(sam, "describe_product", product="shop.customers")
        fresh = await structured(sam, "query_product", product="shop.orders", columns=["order_id"], limit=1)
    [block] = rows["freshness"]
    assert block["product"] == "shop.customers" and block["state"] == "stale" and block["sla"] == "7d"
    assert block["as_of"].startswith(("20",)) and block["age_s"] > 7 * 86_400
    assert any(w.startswith("shop.customers is stale: last updated ") for w in rows["warnings"])
    assert [f["product"] for f in described["freshness"]] == ["shop.customers"]
    assert described["freshness"][0]["state"] == "stale"
    assert described["warnings"] == rows["warnings"]
    assert fresh["freshness"][0]["state"] == "fresh" and fresh["warnings"] == []


async def test_search_products_shows_owner_freshness_and_latest_checks_and_get_quality_the_results(
    quality_settings: Settings,
) -> None:
    async with DataProductsService.open(quality_settings) as service:
        await service.run_checks()
    async with client_for(quality_settings, "ana") as ana:
        found = await structured(ana, "search_products", query="order facts revenue")
        quality = await structured(ana, "get_quality", product="analytics.order_facts", history=5)
        rows = await structured(ana, "query_product", product="analytics.order_facts", columns=["order_id"], limit=1)
    facts = next(p for p in found["products"] if p["name"] == "analytics.order_facts")
    assert facts["owner"] == "analytics-engineering <analytics@example.org>"
    assert facts["freshness"] == "fresh"
    assert facts["quality"].startswith("failing: known_channels since ")
    checks = {c["name"]: c for c in quality["checks"]}
    assert checks["known_channels"]["status"] == "fail" and int(checks["known_channels"]["observed"]) > 0
    assert checks["unique_order_id_line_no"]["status"] == "pass"
    assert quality["freshness"]["state"] == "fresh" and len(quality["history"]) == 5
    assert any(
        w.startswith("analytics.order_facts: quality check known_channels failing since") for w in rows["warnings"]
    )


async def test_get_quality_answers_only_for_products_the_caller_may_read(quality_settings: Settings) -> None:
    extra = quality_settings.principals[0].model_copy(update={"name": "gus", "roles": ["guest"]})
    settings = quality_settings.model_copy(update={"principals": [*quality_settings.principals, extra]})
    async with client_for(settings, "gus") as gus:
        denied = await error_text(gus, "get_quality", product="shop.orders")
    assert denied.startswith("access_denied: access to shop.orders denied")
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        [row] = AuditLog.from_registry(registry).query(principal="gus", limit=5)
    assert (row.tool, row.outcome, row.error_code) == ("get_quality", "denied", "access_denied")


def test_the_demo_contracts_hold_every_check_kind(checked_demo: DemoWorkspace) -> None:
    kinds: set[str] = set()
    for path in checked_demo.contract_paths:
        for contract in load_contract_file(Path(path)):
            kinds.update(q.check for q in contract.quality)
    assert kinds == {"not_null", "unique", "accepted_values", "range", "row_count", "freshness", "sql"}


def cli(workspace: DemoWorkspace, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(workspace.config_path), *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def test_check_prints_the_results_and_exits_1_when_an_error_check_fails(checked_demo: DemoWorkspace) -> None:
    code, output = cli(checked_demo, "check", "shop.orders")
    assert code == 0, output
    assert "no_order_before_signup" in output and "│ fail " not in output
    code, output = cli(checked_demo, "check", "shop.fx_rates")
    assert code == 1
    assert "freshness_published_at" in output and "│ fail " in output
    code, output = cli(checked_demo, "check", "shop.nope")
    assert code == 1 and "not_found" in output


def test_quality_prints_latest_results_freshness_and_recent_runs(checked_demo: DemoWorkspace) -> None:
    cli(checked_demo, "check", "shop.fx_rates")
    code, output = cli(checked_demo, "quality", "shop.fx_rates", "--history", "3")
    assert code == 0, output
    assert "stale" in output and "freshness_published_at" in output and "recent runs of shop.fx_rates" in output
    code, output = cli(checked_demo, "quality")
    assert code == 0 and "shop.orders" in output and "analytics.daily_sales" in output


async def test_checks_repeat_on_their_interval_until_cancelled() -> None:
    runs: list[int] = []

    async def run_once() -> list[CheckResult]:
        runs.append(len(runs))
        if len(runs) == 3:
            scope.cancel()
        return []

    with anyio.CancelScope() as scope:
        await checking_forever(run_once, 0.0)
    assert runs == [0, 1, 2]


async def test_a_service_with_checks_every_runs_them_while_serving(quality_settings: Settings) -> None:
    settings = quality_settings.model_copy(update={"checks": ChecksConfig(every="1h")})
    ran = anyio.Event()
    async with DataProductsService.open(settings) as service:

        async def run_checks(products: list[str] | None = None) -> list[CheckResult]:
            ran.set()
            return []

        service.run_checks = run_checks  # type: ignore[method-assign]
        async with service.checks_on_schedule():
            with anyio.fail_after(60):
                await ran.wait()


async def test_the_http_server_runs_the_checks_on_the_configured_schedule(quality_settings: Settings) -> None:
    settings = quality_settings.model_copy(update={"checks": ChecksConfig(every="1h")})
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        before = len(QualityLog(registry).history("shop.reviews", limit=1000))
    app = create_http_app(settings)
    async with app.router.lifespan_context(app):
        with anyio.fail_after(120):  # a bound on a hang, not a speed assertion
            while True:
                with Registry.from_url(settings.resolved_registry_url()) as registry:
                    if len(QualityLog(registry).history("shop.reviews", limit=1000)) > before:
                        break
                await anyio.sleep(0.2)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("checks: {every: soon}", "checks.every: Value error, invalid duration 'soon'"),
        ("checks: {every: 0s}", "checks.every: Value error, checks.every must be at least 1s"),
        ("freshness: {cache_s: -1}", "freshness.cache_s: Input should be greater than or equal to 0"),
    ],
)
def test_schedule_and_cache_settings_say_what_is_valid(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "dataproducts.yaml"
    path.write_text(section + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert message in info.value.message
