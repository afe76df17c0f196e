"""OTLP export configured in settings: spans reach a real OTLP/HTTP receiver on loopback.

The server runs in a child process: configuring export installs the process's global tracer provider,
which must not leak into the other tests.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from servers.demo import DemoWorkspace

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys
import anyio
from mcp import Client
from servers.mcp import create_server
from servers.observability_settings import TelemetryConfig
from servers.settings import load_settings

settings = load_settings(sys.argv[1])
settings.telemetry = TelemetryConfig(otlp_endpoint=sys.argv[2], service_name="dp-export-test")

async def main() -> None:
    async with Client(create_server(settings, principal=settings.principal("ana"))) as ana:
        result = await ana.call_tool("query_product", {"product": "shop.orders", "limit": 1})
        assert not result.is_error, result.content

anyio.run(main)
"""


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(ExportTraceServiceRequest.FromString(body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint(
    demo: DemoWorkspace, receiver: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, received = receiver
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(demo.path)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(demo.config_path), endpoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    spans = {}
    for request in received:
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = (service, span)
    service, ours = spans["dataproducts query_product"]
    assert service == "dp-export-test"
    attrs = {a.key: a.value for a in ours.attributes}
    assert attrs["dataproducts.policy.decision"].string_value == "filtered"
    assert attrs["dataproducts.rows"].int_value == 1
    _, sdk_span = spans["tools/call query_product"]  # the MCP SDK's span joins the export: its child is ours
    assert ours.parent_span_id == sdk_span.span_id and ours.trace_id == sdk_span.trace_id
