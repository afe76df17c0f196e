"""OpenTelemetry traces: one span per tool call, resource read and resource listing, with what governance did.

:func:`call_span` wraps a request at the MCP boundary (:mod:`servers._audited_server`), the one place
every call passes through. The span's attributes come from the two records the call leaves: its audit
row (principal, tool, product, rows, outcome, error code; see :mod:`servers._audit_trail`) and the
governance facts the service noted while serving it (:mod:`servers._call_facts`):

==========================================  ====================================================
``dataproducts.tool``                       the tool (``read_resource``, ``list_resources`` too)
``dataproducts.principal``                  who called (``anonymous`` when nobody was identified)
``dataproducts.product``                    the product(s) asked for, comma-separated
``dataproducts.contract.version``           the contract version read (``name=version,...`` for several)
``dataproducts.policy.decision``            ``allowed`` | ``denied`` | ``filtered`` | ``masked``
``dataproducts.policy.row_filters``         how many row filters applied
``dataproducts.policy.masked_columns``      ``product.column`` masked for the caller
``dataproducts.policy.aggregate_only``      ``product.column`` readable only in aggregates
``dataproducts.rows``                       rows (or hits) returned
``dataproducts.store``                      the kind(s) of store that answered (``duckdb``, ...)
``dataproducts.freshness``                  ``fresh`` | ``stale`` | ``unknown`` (the worst read)
``dataproducts.outcome``                    ``ok`` | ``error`` | ``denied``
``dataproducts.error.code``, ``error.type``  the error code of a call that did not end ok
==========================================  ====================================================

A call that ends ``error`` has status ERROR; a denied call does not (the server did what it should).

Trace context: the span's parent is the current context, which is the MCP SDK's own server span. That
one is parented from the request's ``_meta.traceparent`` when the client sent one, else from the
HTTP ``traceparent`` header, attached for the request by :class:`TraceContextMiddleware`.

Which tracer: the one of a provider passed in (tests, embedding applications); else, when an OTLP
endpoint is configured (``telemetry.otlp_endpoint`` or the standard ``OTEL_EXPORTER_OTLP_*``
variables), an SDK provider exporting over OTLP/HTTP in batches (``pip install 'dataproducts[otel]'``),
also installed as the process's global provider if none was; else the global provider, a no-op unless
something installed another. ``telemetry.enabled: false`` makes no span at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer, TracerProvider
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.audit import AuditRecord
from catalog.errors import ConfigError
from servers._audit_trail import audit_scope
from servers._call_facts import CallFacts, collecting
from servers.observability_settings import TelemetryConfig

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["TRACER_NAME", "TraceContextMiddleware", "call_span", "exporting_provider", "recording", "tracer_for"]

TRACER_NAME = "dataproducts"
DEFAULT_SERVICE_NAME = "dataproducts"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_exporting: dict[tuple[str | None, str], TracerProvider] = {}


def tracer_for(config: TelemetryConfig, provider: TracerProvider | None = None) -> Tracer | None:
    """The tracer of the MCP boundary, or None when ``config`` turns tracing off.

    Raises:
        ConfigError: OTLP export is configured but the OpenTelemetry SDK or exporter is not installed.
    """
    if not config.enabled:
        return None
    chosen = provider or exporting_provider(config)
    return (chosen or trace.get_tracer_provider()).get_tracer(TRACER_NAME)


def exporting_provider(config: TelemetryConfig) -> TracerProvider | None:
    """An SDK provider exporting over OTLP/HTTP, or None when no endpoint is configured (or
    ``OTEL_SDK_DISABLED=true``). One per endpoint and service name per process.

    Raises:
        ConfigError: the OpenTelemetry SDK or the OTLP exporter is not installed.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from_env = next((os.environ[v] for v in _ENDPOINT_VARIABLES if os.environ.get(v)), None)
    if config.otlp_endpoint is None and from_env is None:
        return None
    service = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    key = (config.otlp_endpoint, service)
    if key not in _exporting:
        _exporting[key] = _sdk_provider(config.otlp_endpoint, service)
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # the SDK's MCP spans join ours
            trace.set_tracer_provider(_exporting[key])
    return _exporting[key]


def _sdk_provider(endpoint: str | None, service: str) -> TracerProvider:
    where = f"telemetry.otlp_endpoint {endpoint}" if endpoint else "the OTEL_EXPORTER_OTLP_* environment"
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            f"traces are to be exported over OTLP ({where}) but the OpenTelemetry SDK is not installed "
            f"({exc.name or exc}): pip install 'dataproducts[otel]', or unset the endpoint"
        ) from exc
    provider = SDKTracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))  # None: from OTEL_*
    return provider


def recording(tracer: Tracer) -> bool:
    """False when ``tracer`` can only make no-op spans: the API's no-op tracer, or the global proxy while no
    provider is installed. Checked per call (a provider may be installed later), it spares a call the
    cost of a span nobody records (see ``bench/tracing_overhead.py``)."""
    if isinstance(tracer, trace.NoOpTracer):
        return False
    if isinstance(tracer, trace.ProxyTracer):
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return True


@contextmanager
def call_span(tracer: Tracer, tool: str) -> Iterator[None]:
    """Wrap one call in a span named ``dataproducts <tool>``, described when the call ends."""
    with (
        tracer.start_as_current_span(
            f"dataproducts {tool}",
            kind=SpanKind.INTERNAL,
            record_exception=False,
            set_status_on_exception=False,
        ) as span,
        collecting() as facts,
        audit_scope() as written,
    ):
        try:
            yield
        finally:
            if span.is_recording():
                describe(span, tool, written, facts)


def describe(span: Span, tool: str, written: Sequence[AuditRecord], facts: CallFacts) -> None:
    """Set the attributes of a call's span from its audit row(s) and governance facts (see the table above)."""
    record = written[-1] if written else None
    code = record.error_code if record else "internal_error"
    outcome = record.outcome if record else "error"
    if facts.unaudited is not None:  # its row could not be written: the call failed, whatever it did
        record, code = facts.unaudited
        outcome = "error"
    attributes: dict[str, Any] = {
        "dataproducts.tool": record.tool if record else tool,
        "dataproducts.outcome": outcome,
        "dataproducts.policy.decision": facts.decision(outcome),
        "dataproducts.policy.row_filters": facts.row_filters,
    }
    if record is not None:
        attributes["dataproducts.principal"] = record.principal
        if record.product:
            attributes["dataproducts.product"] = record.product
        if record.rows is not None:
            attributes["dataproducts.rows"] = record.rows
    if len(facts.versions) == 1:
        attributes["dataproducts.contract.version"] = next(iter(facts.versions.values()))
    elif facts.versions:
        attributes["dataproducts.contract.version"] = ",".join(f"{n}={v}" for n, v in sorted(facts.versions.items()))
    if facts.masked:
        attributes["dataproducts.policy.masked_columns"] = sorted(facts.masked)
    if facts.aggregate_only:
        attributes["dataproducts.policy.aggregate_only"] = sorted(facts.aggregate_only)
    if facts.stores:
        attributes["dataproducts.store"] = ",".join(facts.stores)
    if (freshness := facts.worst_freshness) is not None:
        attributes["dataproducts.freshness"] = freshness
    if outcome != "ok":
        code = code or "internal_error"
        attributes["dataproducts.error.code"] = code
        attributes["error.type"] = code
        if outcome == "error":
            span.set_status(StatusCode.ERROR, code)
    span.set_attributes(attributes)


class TraceContextMiddleware:
    """ASGI middleware: a request's W3C ``traceparent`` (and ``tracestate``) header becomes the current
    trace context while it is served, so the spans of its calls join the caller's trace.

    The MCP SDK handles a message in a copy of the context of the HTTP request that carried it, so
    the context attached here reaches the call. A malformed header is ignored (the span starts a trace).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers") or []
            if name in (b"traceparent", b"tracestate")
        }
        if "traceparent" not in carrier:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
