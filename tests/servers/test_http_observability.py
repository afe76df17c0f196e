"""Traces and metrics of the HTTP server on loopback: traceparent honoured, /metrics scraped and parsed."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from catalog.errors import ConfigError
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.observability_settings import MetricsConfig
from servers.settings import PrincipalConfig, Settings, hash_token, load_settings

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
EVE_TOKEN = "eve-has-no-grant-" + "x" * 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(settings: Settings, provider: TracerProvider | None = None) -> Iterator[str]:
    """The HTTP app on a loopback port; yields its base URL."""
    port = _free_port()
    app = create_http_app(settings, tracer_provider=provider)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
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


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def base_url(demo: DemoWorkspace, exporter: InMemorySpanExporter) -> Iterator[str]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = load_settings(demo.config_path)
    settings.principals.append(PrincipalConfig(name="eve", roles=["guest"], token_sha256=hash_token(EVE_TOKEN)))
    with serving(settings, provider) as url:
        yield url
    provider.shutdown()


@asynccontextmanager
async def http_client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as transport_client,
        Client(streamable_http_client(url, http_client=transport_client)) as client,
    ):
        yield client


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url``'s metrics, keyed by name and sorted labels."""
    response = httpx.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(after: dict, before: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_a_traceparent_header_parents_the_calls_span(
    base_url: str, demo: DemoWorkspace, exporter: InMemorySpanExporter
) -> None:
    headers = {"Authorization": f"Bearer {demo.tokens['ana']}", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    async with http_client(f"{base_url}/mcp", headers) as ana:
        result = await ana.call_tool("query_product", {"product": "shop.orders", "limit": 2})
    assert not result.is_error, result.content
    joined = [s for s in exporter.get_finished_spans() if s.context and f"{s.context.trace_id:032x}" == TRACE_ID]
    assert [s.name for s in joined] == ["dataproducts query_product"]
    span = joined[0]
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.attributes is not None
    assert span.attributes["dataproducts.principal"] == "ana"
    assert span.attributes["dataproducts.policy.decision"] == "filtered"


@pytest.mark.parametrize(
    ("who", "tool", "args", "decision"),
    [
        ("sam", "query_product", {"product": "shop.orders", "limit": 2}, "allowed"),
        ("ana", "query_product", {"product": "shop.orders", "limit": 2}, "filtered"),
        ("ana", "run_sql", {"sql": "SELECT email FROM shop.customers LIMIT 2"}, "masked"),
        ("eve", "query_product", {"product": "shop.orders"}, "denied"),
    ],
)
async def test_each_policy_decision_reaches_the_span_over_http(
    base_url: str,
    demo: DemoWorkspace,
    exporter: InMemorySpanExporter,
    who: str,
    tool: str,
    args: dict[str, object],
    decision: str,
) -> None:
    trace_id = uuid.uuid4().hex
    token = EVE_TOKEN if who == "eve" else demo.tokens[who]
    headers = {"Authorization": f"Bearer {token}", "traceparent": f"00-{trace_id}-{PARENT_ID}-01"}
    async with http_client(f"{base_url}/mcp", headers) as client:
        result = await client.call_tool(tool, args)
    assert result.is_error == (decision == "denied"), result.content
    [span] = [s for s in exporter.get_finished_spans() if s.context and f"{s.context.trace_id:032x}" == trace_id]
    assert span.attributes is not None
    assert span.attributes["dataproducts.principal"] == who
    assert span.attributes["dataproducts.policy.decision"] == decision
    assert span.attributes["dataproducts.outcome"] == ("denied" if decision == "denied" else "ok")


async def test_metrics_count_calls_errors_refusals_and_audit_writes(base_url: str, demo: DemoWorkspace) -> None:
    before = scrape(f"{base_url}/metrics")  # no token needed by default
    async with http_client(f"{base_url}/mcp", {"Authorization": f"Bearer {demo.tokens['sam']}"}) as sam:
        for _ in range(3):
            assert not (await sam.call_tool("describe_product", {"product": "shop.orders"})).is_error
        assert (await sam.call_tool("query_product", {"product": "shop.ordrs"})).is_error
        assert (await sam.call_tool("run_sql", {"sql": "DELETE FROM shop.orders"})).is_error
    assert httpx.post(f"{base_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code == 401
    after = scrape(f"{base_url}/metrics")

    assert delta(after, before, "dataproducts_calls_total", tool="describe_product", outcome="ok") == 3
    assert delta(after, before, "dataproducts_errors_total", tool="query_product", code="not_found") == 1
    assert delta(after, before, "dataproducts_refusals_total", reason="not_found") == 1
    assert delta(after, before, "dataproducts_refusals_total", reason="sql_refused") == 1
    assert delta(after, before, "dataproducts_refusals_total", reason="unauthorized") == 1
    assert delta(after, before, "dataproducts_calls_total", tool="http", outcome="denied") == 1
    assert delta(after, before, "dataproducts_call_duration_seconds_count", tool="describe_product") == 3
    assert delta(after, before, "dataproducts_audit_write_duration_seconds_count") >= 6  # 5 calls + the 401


def test_metrics_answer_405_to_anything_but_get(base_url: str) -> None:
    response = httpx.post(f"{base_url}/metrics", content=b"")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_metrics_behind_the_token_need_a_principals_token(demo: DemoWorkspace) -> None:
    settings = load_settings(demo.config_path)
    settings.metrics = MetricsConfig(require_token=True, path="/internal/metrics")
    with serving(settings) as url:
        assert httpx.get(f"{url}/internal/metrics").status_code == 401
        samples = scrape(f"{url}/internal/metrics", Authorization=f"Bearer {demo.tokens['sam']}")
        assert ("dataproducts_calls_total", (("outcome", "denied"), ("tool", "http"))) in samples


def test_metrics_can_be_turned_off(demo: DemoWorkspace) -> None:
    settings = load_settings(demo.config_path)
    settings.metrics = MetricsConfig(enabled=False)
    with serving(settings) as url:
        response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {demo.tokens['sam']}"})
        assert response.status_code == 404


def test_a_metrics_path_on_the_mcp_path_is_refused(demo: DemoWorkspace) -> None:
    settings = load_settings(demo.config_path)
    settings.metrics = MetricsConfig(path=settings.server.path)
    with pytest.raises(ConfigError, match="metrics.path '/mcp' is the MCP path"):
        create_http_app(settings)


def test_a_metrics_path_that_is_not_a_url_path_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "dataproducts.yaml"
    config.write_text("metrics: {path: metrics}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"metrics\.path: .*must be a URL path such as /metrics.*not 'metrics'"):
        load_settings(config)
