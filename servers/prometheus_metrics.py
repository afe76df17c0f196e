"""Prometheus metrics of the server process, and the ASGI middleware that serves them.

Every served or refused request leaves one audit row (see :mod:`servers._audit_trail`), so the
calls are counted where that row is written (:func:`observe_audit`), whichever layer ended the
request: the HTTP middleware (``tool="http"``: 401, foreign session, body too large), the MCP boundary
or a use case. The series:

- ``dataproducts_calls_total{tool, outcome}``: requests by tool and outcome (ok, error, denied);
- ``dataproducts_errors_total{tool, code}``: requests that did not end ok, by error code;
- ``dataproducts_refusals_total{reason}``: the subset the server refused (denied by the policy or the
  bearer check, stale data, an invalid request or statement, over a limit), by code; failures of the
  server or a store (``internal_error``, ``timeout``, ``unavailable``, ...) are errors but not refusals;
- ``dataproducts_call_duration_seconds{tool}``: latency as audited (a histogram);
- ``dataproducts_audit_write_duration_seconds``: from submitting an audit row to its commit;
- ``dataproducts_audit_write_failures_total{code}``: rows that could not be written (``audit_failed``,
  ``unavailable``): each failed its request, which is counted above only if the row of that failure commits;
- ``dataproducts_runs_total{kind, outcome}`` and ``dataproducts_run_duration_seconds{kind}``: index and
  quality-check runs (``kind`` = ``index`` | ``check``), scheduled or from the CLI.

A ``tool`` label a caller chose that is not one of ours reads ``other``, so a client cannot grow the
number of series. The metrics live in :data:`REGISTRY`, one per process: replicas are scraped one by one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog.audit import AuditRecord
from servers.settings import TOOL_NAMES

__all__ = ["REGISTRY", "MetricsMiddleware", "counted_run", "observe_audit", "observe_audit_failure", "timed_run"]

P = ParamSpec("P")
T = TypeVar("T")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_TOOLS = frozenset(TOOL_NAMES) | {"read_resource", "list_resources", "ask", "http"}
#: Codes of failures (the server's or a store's), not of refusals.
_FAILURE_CODES = frozenset(
    {
        "internal_error",
        "protocol_error",
        "unavailable",
        "audit_failed",
        "connector_error",
        "store_unavailable",
        "timeout",
        "execution_failed",
        "embedding_failed",
        "config_error",
    }
)
_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)

CALLS = Counter(
    "dataproducts_calls", "Requests served or refused, by tool and outcome", ["tool", "outcome"], registry=REGISTRY
)
ERRORS = Counter(
    "dataproducts_errors", "Requests that did not end ok, by tool and error code", ["tool", "code"], registry=REGISTRY
)
REFUSALS = Counter(
    "dataproducts_refusals", "Requests the server refused, by reason (error code)", ["reason"], registry=REGISTRY
)
CALL_DURATION = Histogram(
    "dataproducts_call_duration_seconds",
    "Latency of requests as audited",
    ["tool"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
AUDIT_WRITE = Histogram(
    "dataproducts_audit_write_duration_seconds",
    "Time from submitting an audit row to its commit",
    buckets=_WRITE_BUCKETS,
    registry=REGISTRY,
)
AUDIT_WRITE_FAILURES = Counter(
    "dataproducts_audit_write_failures",
    "Audit rows that could not be written (their requests failed), by code",
    ["code"],
    registry=REGISTRY,
)
RUNS = Counter(
    "dataproducts_runs", "Index and quality-check runs, by kind and outcome", ["kind", "outcome"], registry=REGISTRY
)
RUN_DURATION = Histogram(
    "dataproducts_run_duration_seconds",
    "Duration of index and check runs",
    ["kind"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)


def observe_audit(record: AuditRecord, write_s: float) -> None:
    """Count the request ``record`` audits, whose row took ``write_s`` seconds to commit."""
    tool = record.tool if record.tool in _TOOLS else "other"
    outcome = record.outcome
    CALLS.labels(tool, outcome).inc()
    CALL_DURATION.labels(tool).observe(record.latency_ms / 1000)
    AUDIT_WRITE.observe(write_s)
    if outcome != "ok":
        code = record.error_code or outcome
        ERRORS.labels(tool, code).inc()
        if code not in _FAILURE_CODES:
            REFUSALS.labels(code).inc()


def observe_audit_failure(code: str) -> None:
    """An audit row could not be written (``code``: ``audit_failed`` or ``unavailable``): its request failed.

    Not a call of its own: the boundary then tries to audit the failure, and counts it if that row commits.
    """
    AUDIT_WRITE_FAILURES.labels(code).inc()


@contextmanager
def timed_run(kind: Literal["index", "check"]) -> Iterator[None]:
    """Count one index or check run and its duration; a run that raises counts as ``error``."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        RUNS.labels(kind, outcome).inc()
        RUN_DURATION.labels(kind).observe(time.perf_counter() - started)


def counted_run(kind: Literal["index", "check"]) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate a coroutine function that runs an index or check run: each call is one :func:`timed_run`."""

    def decorate(run: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(run)
        async def counted(*args: P.args, **kwargs: P.kwargs) -> T:
            with timed_run(kind):
                return await run(*args, **kwargs)

        return counted

    return decorate


class MetricsMiddleware:
    """ASGI middleware answering ``GET path`` with the metrics in Prometheus' text format.

    Where it sits decides who may scrape: outside the bearer check, anyone who reaches the port;
    inside it, any configured principal's token (see ``metrics.require_token``). A scrape is not a
    tool call and is not audited. Other methods on ``path`` answer 405.
    """

    def __init__(self, app: ASGIApp, path: str = "/metrics") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in {"GET", "HEAD"}:
            await _respond(
                send, 405, b'{"error":{"code":"method_not_allowed","message":"use GET"}}', "application/json"
            )
            return
        body = generate_latest(REGISTRY)
        await _respond(send, 200, body if scope.get("method") == "GET" else b"", CONTENT_TYPE_LATEST, len(body))


async def _respond(send: Send, status: int, body: bytes, content_type: str, length: int | None = None) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(length or len(body)).encode()),
    ]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
