"""Where the fixed cost of a governed point lookup goes, layer by layer, on each store.

The same lookups as ``query_overhead.py`` (TPC-H ``lineitem``, a primary-key lookup with 12 columns),
with every layer timed on its own in the same loop, interleaved, so background load hits them alike:
the raw driver; an MCP call of a trivial tool (the SDK's floor: client, in-memory transport, dispatch);
the whole ``query_product`` MCP call; the service call alone; and inside the service the contract
and trust gate, the statement cache (hit and rebind), the store statement with its one hand-over to a
worker thread, an empty hand-over, the statement run synchronously, and one audit row committed by
a leader (a sync insert). Medians in ms after ``--warmup`` runs.

    python bench/lookup_layers.py --stores sqlite,postgresql --repeat 200

It reads a few internals of the service (the statement cache, the governed view) to time them alone,
so it follows their names when they change.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/, tests/

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.query_overhead import (  # noqa: E402
    STORES,
    generate_lineitem,
    lookup_case,
    prepared_stores,
    registered_settings,
    sample_keys,
)
from catalog.audit import AuditLog, AuditRecord, digest_args  # noqa: E402
from catalog.policy import GovernedView  # noqa: E402
from catalog.query import Query, RowSet  # noqa: E402
from servers.mcp import create_server  # noqa: E402
from servers.service import DataProductsService  # noqa: E402


def _same(rowset: RowSet) -> RowSet:
    return rowset


def _nothing() -> None:
    return None


def _led(log: AuditLog, record: AuditRecord) -> None:
    log.lead(record).result()


def floor_server() -> MCPServer:
    """An MCP server with one trivial tool: what any tool call costs through the SDK."""
    server = MCPServer("floor")

    @server.tool()
    async def ping(x: int) -> dict[str, int]:
        return {"x": x}

    return server


async def layers(store: str, service: DataProductsService, client: Client, floor: Client, raw: Any, keys: list[int],
                 repeat: int, warmup: int) -> dict[str, float]:  # fmt: skip
    settings = service.settings
    principal = settings.principal("bench")
    case = lookup_case(f"tpch.lineitem_{store}", keys)
    times: dict[str, list[float]] = {}

    async def timed(name: str, i: int, step: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        out = step(*args)
        if inspect.isawaitable(out):
            out = await out
        if i >= warmup:
            times.setdefault(name, []).append(time.perf_counter() - started)
        return out

    async def gate(product: str) -> GovernedView:
        view = await service._view(product, principal)
        await service.read_trust([view.contract])
        return view

    for i in range(warmup + repeat):
        args = case.governed(i)
        query = Query.model_validate({k: v for k, v in args.items() if k != "product"})
        sql, params = case.raw(i)
        await timed("raw driver", i, raw.run, sql, params)
        await timed("MCP call of a trivial tool (SDK floor)", i, floor.call_tool, "ping", {"x": i})
        await timed("MCP query_product", i, client.call_tool, "query_product", args)
        await timed("service.query_product", i, service.query_product, principal, args["product"], query)
        view = await timed("  contract + policy + trust gate", i, gate, args["product"])
        connector = await service.connector(view.contract.source.connection)
        compiled = functools.partial(
            service._statements.compiled, view, query, compiler=service.compiler(connector), connector=connector
        )
        _, prepared = await timed("  statement cache hit + rebind", i, compiled)
        await timed("  statement + one thread hand-over", i, connector.execute_then, prepared, _same)
        await timed("  empty thread hand-over", i, anyio.to_thread.run_sync, _nothing)
        run_sync = getattr(connector, "_execute_governed_sync", None)
        if run_sync is not None:  # the SQLAlchemy stores
            await timed("  statement run in this thread", i, run_sync, prepared, prepared.limits)
        record = AuditRecord(
            principal="bench", tool="query_product", args_digest=digest_args(args), latency_ms=1.0, outcome="ok"
        )
        await timed("  audit row, led (sync insert + commit)", i, _led, service.audit, record)
    return {name: statistics.median(ts) * 1000 for name, ts in times.items()}


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="dp-bench-"))
    parquet = generate_lineitem(Path(args.data_dir) if args.data_dir else workdir, args.sf)
    keys = sample_keys(parquet)
    found: dict[str, dict[str, float]] = {}
    with prepared_stores(args.stores, parquet) as (configs, raws):
        settings = registered_settings(workdir, configs)
        async with DataProductsService.open(settings) as service:
            server = create_server(settings, principal=settings.principal("bench"), service=service)
            async with Client(server) as client, Client(floor_server()) as floor:
                for store in configs:
                    found[store] = await layers(
                        store, service, client, floor, raws[store], keys, args.repeat, args.warmup
                    )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sf", type=float, default=0.01, help="TPC-H scale factor (default 0.01)")
    parser.add_argument("--repeat", type=int, default=200, help="timed runs (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated: sqlite,duckdb,postgresql")
    parser.add_argument("--data-dir", help="keep generated files here to reuse across runs")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if unknown := sorted(set(args.stores) - set(STORES)):
        parser.error(f"unknown stores {unknown}; choose from {','.join(STORES)}")
    found = anyio.run(run, args)
    table = Table(title=f"governed point lookup by layer, median ms of {args.repeat} runs (sf={args.sf:g})")
    table.add_column("layer")
    for store in found:
        table.add_column(store, justify="right")
    for name in next(iter(found.values())):
        table.add_row(name, *(f"{found[s][name]:.2f}" if name in found[s] else "-" for s in found))
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
