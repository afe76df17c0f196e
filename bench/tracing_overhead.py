"""What tracing adds to a tool call: the same calls with tracing off, with the no-op tracer, and with the SDK.

On the demo workspace (SQLite shop), three in-process MCP clients (the SDK's real client and server,
in-memory transport) call ``query_product`` for one order by key as ``sam``, over one shared service,
round-robin in the same event loop so that all three see the same load:

* **off**: ``telemetry.enabled: false``: no span is made and no governance facts are collected;
* **no-op**: the default with nothing configured: spans of the API's no-op tracer;
* **sdk**: an SDK tracer provider with a batch span processor into an in-memory exporter (what OTLP
  export costs on the request path, without the network: the batch processor exports off it).

Prints p50/p95 per variant and the p50 each adds over ``off``, side by side from one run. Checks that
the SDK variant exported exactly one span per call. Bounded: ``--calls`` per variant, in-process only.

    python bench/tracing_overhead.py --calls 1000
    python bench/tracing_overhead.py --smoke
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from catalog.loader import load_contract_file  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.demo import build_demo_workspace  # noqa: E402
from servers.mcp import create_server  # noqa: E402
from servers.observability_settings import TelemetryConfig  # noqa: E402
from servers.service import DataProductsService  # noqa: E402
from servers.settings import Settings, load_settings  # noqa: E402

PRODUCT = "shop.orders"
WARMUP = 20
VARIANTS = ("off", "no-op", "sdk")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _workspace(tmp: Path) -> tuple[Settings, list[int]]:
    workspace = build_demo_workspace(tmp / "ws")
    settings = load_settings(workspace.config_path)
    registry = Registry.from_url(settings.resolved_registry_url())
    for path in workspace.contract_paths:
        for contract in load_contract_file(path):
            registry.register(contract, actor="bench")
    registry.close()
    with sqlite3.connect(workspace.path / "data" / "shop.db") as conn:
        ids = [i for (i,) in conn.execute("SELECT order_id FROM orders ORDER BY order_id LIMIT 200")]
    return settings, ids


async def main(count: int) -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    timings: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="dp-bench-trace-") as tmp:
        settings, ids = _workspace(Path(tmp))
        sam = settings.principal("sam")
        off = settings.model_copy(update={"telemetry": TelemetryConfig(enabled=False)})
        async with DataProductsService.open(settings) as service, AsyncExitStack() as stack:
            servers = {
                "off": create_server(off, principal=sam, service=service),
                "no-op": create_server(settings, principal=sam, service=service),
                "sdk": create_server(settings, principal=sam, service=service, tracer_provider=provider),
            }
            clients = {v: await stack.enter_async_context(Client(s)) for v, s in servers.items()}
            for n in range(count + WARMUP):  # the first rounds warm caches and are not kept
                args = {"product": PRODUCT, "where": [{"column": "order_id", "op": "=", "value": ids[n % len(ids)]}]}
                for variant in VARIANTS if n % 2 else reversed(VARIANTS):
                    started = time.perf_counter()
                    result = await clients[variant].call_tool("query_product", args)
                    elapsed = (time.perf_counter() - started) * 1000
                    if result.is_error:
                        raise SystemExit(f"{variant}: the call failed: {result.content}")
                    if n >= WARMUP:
                        timings[variant].append(elapsed)
    provider.force_flush()
    spans = [s for s in exporter.get_finished_spans() if s.name == "dataproducts query_product"]
    provider.shutdown()

    table = Table(title=f"query_product by key through the in-process MCP client, {count} calls per variant")
    for column in ("variant", "p50 ms", "p95 ms", "mean ms", "p50 added vs off"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    base = percentile(timings["off"], 0.5)
    for variant, values in timings.items():
        p50 = percentile(values, 0.5)
        table.add_row(
            variant,
            f"{p50:.3f}",
            f"{percentile(values, 0.95):.3f}",
            f"{statistics.mean(values):.3f}",
            "" if variant == "off" else f"{p50 - base:+.3f} ms ({(p50 / base - 1) * 100:+.1f}%)",
        )
    console = Console()
    console.print(table)
    expected = count + WARMUP
    console.print(f"spans exported by the sdk variant: {len(spans)} (expected {expected})")
    return 0 if len(spans) == expected else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per variant (default 1000)")
    parser.add_argument("--smoke", action="store_true", help="a short run (30 calls per variant) for CI")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    sys.exit(anyio.run(main, 30 if args.smoke else args.calls))
