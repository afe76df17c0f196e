"""Hostile run_sql input against a shared server: how fast it is refused, and what it costs other clients.

On the demo workspace, one server (one service, one event loop) serves two in-process MCP clients:
``ana`` sends hostile statements in a loop (deeply nested parentheses, a 2 MB ``IN`` list, a deep
``NOT`` chain, nested ``CASE``, and the largest statement still accepted), while ``sam`` runs point
lookups with ``query_product``. It prints, per hostile input, how long the refusal took (median,
max), and sam's lookup latency alone and under attack, with the ratio. Bounded: ``--lookups`` lookups
per phase, in-process only.

    python bench/sql_dos.py --lookups 200
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from catalog.loader import load_contract_file  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.demo import build_demo_workspace  # noqa: E402
from servers.mcp import create_server  # noqa: E402
from servers.service import DataProductsService  # noqa: E402
from servers.settings import load_settings  # noqa: E402

HOSTILE = {
    "60 nested parentheses": "SELECT " + "(" * 60 + "1" + ")" * 60 + " FROM shop.orders",
    "2 MB IN list": "SELECT count(*) FROM shop.orders WHERE order_id IN (" + ",".join(["1"] * 1_000_000) + ")",
    "3,000 NOTs": "SELECT " + "NOT " * 2400 + "TRUE FROM shop.orders",
    "300 nested CASEs": "SELECT " + "CASE WHEN TRUE THEN " * 300 + "1" + " END" * 300 + " FROM shop.orders",
    "largest accepted (IN list)": "SELECT count(*) AS n FROM shop.orders WHERE order_id IN ("
    + ",".join(str(i) for i in range(1, 1800))
    + ")",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lookups(client: Client, ids: list[int], count: int) -> list[float]:
    timings = []
    for i in range(count):
        started = time.perf_counter()
        result = await client.call_tool(
            "query_product",
            {"product": "shop.orders", "where": [{"column": "order_id", "op": "=", "value": ids[i % len(ids)]}]},
        )
        timings.append((time.perf_counter() - started) * 1000)
        assert not result.is_error, result.content
    return timings


async def attack(client: Client, refusals: dict[str, list[float]], stop: anyio.Event) -> None:
    while not stop.is_set():
        for name, sql in HOSTILE.items():
            started = time.perf_counter()
            await client.call_tool("run_sql", {"sql": sql})
            refusals.setdefault(name, []).append((time.perf_counter() - started) * 1000)


async def main(count: int) -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="dp-bench-dos-") as tmp:
        workspace = build_demo_workspace(Path(tmp) / "ws")
        settings = load_settings(workspace.config_path)
        registry = Registry.from_url(settings.resolved_registry_url())
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="bench")
        registry.close()
        with sqlite3.connect(workspace.path / "data" / "shop.db") as conn:
            ids = [i for (i,) in conn.execute("SELECT order_id FROM orders ORDER BY order_id LIMIT 100")]
        async with DataProductsService.open(settings) as service:
            ana_server = create_server(settings, principal=settings.principal("ana"), service=service)
            sam_server = create_server(settings, principal=settings.principal("sam"), service=service)
            async with Client(ana_server) as ana, Client(sam_server) as sam:
                await lookups(sam, ids, 20)  # warm-up
                alone = await lookups(sam, ids, count)
                refusals: dict[str, list[float]] = {}
                stop = anyio.Event()
                under: list[float] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(attack, ana, refusals, stop)

                    async def measured() -> None:
                        under.extend(await lookups(sam, ids, count))
                        stop.set()

                    tg.start_soon(measured)
    table = Table(title="hostile run_sql input: time to answer (ms)")
    for column in ("input", "answers", "median", "max"):
        table.add_column(column, justify="right" if column != "input" else "left")
    for name, times in refusals.items():
        table.add_row(name, str(len(times)), f"{statistics.median(times):.1f}", f"{max(times):.1f}")
    console.print(table)
    lookup = Table(title=f"sam's point lookups ({count} per phase, ms)")
    for column in ("phase", "p50", "p95", "max"):
        lookup.add_column(column, justify="right" if column != "phase" else "left")
    rows: list[tuple[str, list[float]]] = [("alone", alone), ("under attack", under)]
    for phase, times in rows:
        lookup.add_row(phase, f"{percentile(times, 0.5):.2f}", f"{percentile(times, 0.95):.2f}", f"{max(times):.2f}")
    console.print(lookup)
    ratio = percentile(under, 0.5) / percentile(alone, 0.5)
    console.print(f"lookup p50 under attack / alone: [bold]{ratio:.2f}x[/]", highlight=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=200, help="point lookups per phase")
    args = parser.parse_args()
    anyio.run(main, args.lookups)
