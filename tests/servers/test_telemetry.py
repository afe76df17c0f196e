"""Spans of tool calls and resource reads, captured from the real server with the SDK's in-memory exporter."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from catalog.errors import ConfigError
from servers.mcp import create_server
from servers.observability_settings import TelemetryConfig
from servers.prometheus_metrics import REGISTRY
from servers.service import DataProductsService
from servers.settings import PrincipalConfig, Settings
from servers.telemetry import recording, tracer_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def guarded(settings: Settings) -> Settings:
    """The demo settings plus eve, a principal no product grants access to."""
    settings.principals.append(PrincipalConfig(name="eve", roles=["guest"]))
    return settings


async def _client(settings: Settings, provider: TracerProvider, principal: str) -> AsyncIterator[Client]:
    server = create_server(settings, principal=settings.principal(principal), tracer_provider=provider)
    async with Client(server) as client:
        yield client


def only_call_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


async def call(settings: Settings, provider: TracerProvider, principal: str, tool: str, args: dict[str, Any]) -> Any:
    async for client in _client(settings, provider, principal):
        return await client.call_tool(tool, args)


async def test_an_unfiltered_read_is_allowed_with_its_version_store_rows_and_freshness(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await call(guarded, provider, "sam", "query_product", {"product": "shop.orders", "limit": 7})
    assert not result.is_error, result.content
    attrs = only_call_span(exporter, "dataproducts query_product").attributes
    assert attrs is not None
    assert attrs["dataproducts.tool"] == "query_product"
    assert attrs["dataproducts.principal"] == "sam"
    assert attrs["dataproducts.product"] == "shop.orders"
    assert attrs["dataproducts.contract.version"] == "1.0.0"
    assert attrs["dataproducts.policy.decision"] == "allowed"
    assert attrs["dataproducts.policy.row_filters"] == 0
    assert attrs["dataproducts.rows"] == 7
    assert attrs["dataproducts.store"] == "sqlite"
    assert attrs["dataproducts.freshness"] == result.structured_content["freshness"][0]["state"]
    assert attrs["dataproducts.outcome"] == "ok"
    assert "dataproducts.error.code" not in attrs


async def test_a_row_filtered_read_is_filtered(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await call(guarded, provider, "ana", "query_product", {"product": "shop.orders", "limit": 3})
    assert not result.is_error, result.content
    attrs = only_call_span(exporter, "dataproducts query_product").attributes
    assert attrs is not None
    assert attrs["dataproducts.policy.decision"] == "filtered"
    assert attrs["dataproducts.policy.row_filters"] == 1
    assert attrs["dataproducts.principal"] == "ana"


async def test_a_masked_read_is_masked_and_names_its_masked_columns(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await call(guarded, provider, "ana", "run_sql", {"sql": "SELECT email FROM shop.customers LIMIT 2"})
    assert not result.is_error, result.content
    attrs = only_call_span(exporter, "dataproducts run_sql").attributes
    assert attrs is not None
    assert attrs["dataproducts.policy.decision"] == "masked"
    assert set(attrs["dataproducts.policy.masked_columns"]) == {
        "shop.customers.email",
        "shop.customers.phone",
        "shop.customers.full_name",
    }
    assert attrs["dataproducts.rows"] == 2


async def test_a_denied_read_is_denied_with_its_code_and_no_error_status(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await call(guarded, provider, "eve", "query_product", {"product": "shop.orders"})
    assert result.is_error
    span = only_call_span(exporter, "dataproducts query_product")
    attrs = span.attributes
    assert attrs is not None
    assert attrs["dataproducts.policy.decision"] == "denied"
    assert attrs["dataproducts.outcome"] == "denied"
    assert attrs["dataproducts.error.code"] == "access_denied"
    assert attrs["dataproducts.principal"] == "eve"
    assert "dataproducts.rows" not in attrs or attrs["dataproducts.rows"] == 0
    assert span.status.status_code is not StatusCode.ERROR


async def test_an_error_has_error_status_and_its_code(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await call(guarded, provider, "sam", "query_product", {"product": "shop.ordrs"})
    assert result.is_error
    span = only_call_span(exporter, "dataproducts query_product")
    assert span.attributes is not None
    assert span.attributes["dataproducts.error.code"] == "not_found"
    assert span.status.status_code is StatusCode.ERROR


async def test_an_unknown_tool_is_traced_under_its_method(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await call(guarded, provider, "sam", "drop_everything", {})
    assert result.is_error
    attrs = only_call_span(exporter, "dataproducts tools/call").attributes
    assert attrs is not None
    assert attrs["dataproducts.tool"] == "drop_everything"
    assert attrs["dataproducts.error.code"] == "unknown_tool"


async def test_a_resource_read_is_traced_with_the_masks_it_applied(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async for client in _client(guarded, provider, "ana"):
        await client.read_resource("product://shop.customers")
    attrs = only_call_span(exporter, "dataproducts read_resource").attributes
    assert attrs is not None
    assert attrs["dataproducts.product"] == "shop.customers"
    assert attrs["dataproducts.policy.decision"] == "masked"
    assert attrs["dataproducts.outcome"] == "ok"


async def test_the_callers_current_span_is_the_parent_through_mcp_meta(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The SDK's client puts the current trace context in ``_meta``; the server's span joins that trace."""
    async for client in _client(guarded, provider, "sam"):
        with provider.get_tracer("agent").start_as_current_span("agent turn") as parent:
            await client.call_tool("describe_product", {"product": "shop.orders"})
    span = only_call_span(exporter, "dataproducts describe_product")
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == parent.get_span_context().trace_id


async def test_tracing_off_makes_no_span(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    guarded.telemetry = TelemetryConfig(enabled=False)
    result = await call(guarded, provider, "sam", "describe_product", {"product": "shop.orders"})
    assert not result.is_error
    assert exporter.get_finished_spans() == ()


def test_otlp_export_without_the_sdk_installed_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match=r"pip install 'dataproducts\[otel\]'") as caught:
        tracer_for(TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318/v1/traces", service_name="missing-sdk"))
    assert "telemetry.otlp_endpoint http://127.0.0.1:4318/v1/traces" in str(caught.value)


def test_an_otlp_endpoint_that_is_not_a_url_is_refused_with_what_would_be_valid() -> None:
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        TelemetryConfig(otlp_endpoint="collector:4318")


def test_only_a_tracer_that_can_record_makes_spans(provider: TracerProvider) -> None:
    assert recording(provider.get_tracer("t"))
    assert not recording(trace.NoOpTracer())
    assert not recording(trace.get_tracer("t"))  # the global proxy, no provider installed in this process


def test_the_readmes_telemetry_and_metrics_examples_are_valid_settings() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Metrics and traces", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    examples = [yaml.safe_load(b) for b in blocks if b.startswith(("telemetry:", "metrics:"))]
    assert len(examples) == 2
    for example in examples:
        settings = Settings(**example)
        assert settings.model_dump(include=set(example)) == {
            key: {**getattr(settings, key).model_dump(), **value} for key, value in example.items()
        }


async def test_a_document_search_names_the_search_store_and_the_source_that_re_read_its_rows(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    runs = REGISTRY.get_sample_value("dataproducts_runs_total", {"kind": "index", "outcome": "ok"}) or 0.0
    async with DataProductsService.open(guarded) as service:
        await service.index_products(product="shop.reviews")
    assert REGISTRY.get_sample_value("dataproducts_runs_total", {"kind": "index", "outcome": "ok"}) == runs + 1
    args = {"query": "arrived damaged box crushed", "product": "shop.reviews", "k": 5}
    result = await call(guarded, provider, "ana", "search_documents", args)
    assert not result.is_error, result.content
    attrs = only_call_span(exporter, "dataproducts search_documents").attributes
    assert attrs is not None
    assert attrs["dataproducts.store"] == "embedded,sqlite"
    assert attrs["dataproducts.policy.decision"] == "filtered"
    assert attrs["dataproducts.policy.masked_columns"] == ("shop.reviews.reviewer_email",)
    assert attrs["dataproducts.rows"] == len(result.structured_content["hits"]) > 0


async def test_a_call_whose_audit_row_cannot_be_written_is_an_audit_failed_error_in_span_and_metrics(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    copy = tmp_path / "registry.db"
    with (
        sqlite3.connect(guarded.resolved_registry_url().removeprefix("sqlite:///")) as src,
        sqlite3.connect(copy) as dst,
    ):
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("create trigger audit_full before insert on dp_audit begin select raise(abort, 'disk full'); end")
    broken = guarded.model_copy(update={"registry_url": f"sqlite:///{copy}"})
    failed = REGISTRY.get_sample_value("dataproducts_audit_write_failures_total", {"code": "audit_failed"}) or 0.0
    result = await call(broken, provider, "sam", "describe_product", {"product": "shop.orders"})
    assert result.is_error
    span = only_call_span(exporter, "dataproducts describe_product")
    assert span.attributes is not None
    assert span.attributes["dataproducts.outcome"] == "error"
    assert span.attributes["dataproducts.error.code"] == "audit_failed"
    assert span.attributes["dataproducts.principal"] == "sam"
    assert span.status.status_code is StatusCode.ERROR
    # the use case's row could not be written; the boundary tries no second row on the same database
    assert REGISTRY.get_sample_value("dataproducts_audit_write_failures_total", {"code": "audit_failed"}) == failed + 1


async def test_a_resource_listing_is_traced_with_the_products_listed(
    guarded: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async for client in _client(guarded, provider, "ana"):
        listed = await client.list_resources()
    attrs = only_call_span(exporter, "dataproducts list_resources").attributes
    assert attrs is not None
    assert attrs["dataproducts.tool"] == "list_resources"
    assert attrs["dataproducts.rows"] == len(listed.resources) > 0
    assert attrs["dataproducts.outcome"] == "ok"
