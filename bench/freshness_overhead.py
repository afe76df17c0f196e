"""What the freshness block adds to a point lookup: the same lookups with and without the trust gate.

On the demo workspace (SQLite shop), ``query_product`` reads one order by key through the service
layer, alternating two variants in the same process and event loop so that both see the same load:

* **with freshness**: the real path: the trust gate measures ``as_of`` (at most once per
  ``freshness.cache_s``), reads the latest check results and puts a freshness block and warnings on
  the result;
* **without**: the gate replaced by one that returns an empty :class:`~servers.trust.ReadTrust`.

Prints the p50/p95 of both and the added p50 in milliseconds (target: at most 0.2 ms). Bounded:
``--lookups`` per variant, in-process only.

    python bench/freshness_overhead.py --lookups 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from catalog.contract import ProductContract  # noqa: E402
from catalog.loader import load_contract_file  # noqa: E402
from catalog.query import Query  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.demo import build_demo_workspace  # noqa: E402
from servers.service import DataProductsService  # noqa: E402
from servers.settings import load_settings  # noqa: E402
from servers.trust import ReadTrust  # noqa: E402

TARGET_MS = 0.2
PRODUCT = "shop.orders"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(count: int) -> int:
    with tempfile.TemporaryDirectory(prefix="dp-bench-fresh-") as tmp:
        workspace = build_demo_workspace(Path(tmp) / "ws")
        settings = load_settings(workspace.config_path)
        registry = Registry.from_url(settings.resolved_registry_url())
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="bench")
        registry.close()
        with sqlite3.connect(workspace.path / "data" / "shop.db") as conn:
            ids = [i for (i,) in conn.execute("SELECT order_id FROM orders ORDER BY order_id LIMIT 200")]
        sam = settings.principal("sam")
        async with DataProductsService.open(settings) as service:
            real_gate = service.read_trust

            async def no_gate(contracts: Iterable[ProductContract]) -> ReadTrust:
                return ReadTrust()

            timings: dict[str, list[float]] = {"with freshness": [], "without": []}
            blocks = 0
            for n in range(count + 50):  # the first 50 rounds warm caches and are not kept
                for variant, gate in (("with freshness", real_gate), ("without", no_gate)):
                    service.read_trust = gate  # type: ignore[method-assign]
                    query = Query.model_validate(
                        {"where": [{"column": "order_id", "op": "=", "value": ids[n % len(ids)]}]}
                    )
                    started = time.perf_counter()
                    result: Any = await service.query_product(sam, PRODUCT, query)
                    elapsed = (time.perf_counter() - started) * 1000
                    if n >= 50:
                        timings[variant].append(elapsed)
                        blocks += variant == "with freshness" and bool(result.freshness)
            service.read_trust = real_gate  # type: ignore[method-assign]
    table = Table(title=f"{PRODUCT} point lookup through the service layer, {count} lookups per variant")
    for column in ("variant", "p50 ms", "p95 ms", "mean ms"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for variant, values in timings.items():
        table.add_row(
            variant,
            f"{percentile(values, 0.5):.3f}",
            f"{percentile(values, 0.95):.3f}",
            f"{statistics.mean(values):.3f}",
        )
    added = percentile(timings["with freshness"], 0.5) - percentile(timings["without"], 0.5)
    console = Console()
    console.print(table)
    verdict = "met" if added <= TARGET_MS else "missed"
    console.print(
        f"freshness block adds {added:+.3f} ms at p50 (target ≤ {TARGET_MS} ms: {verdict}); blocks seen: {blocks}"
    )
    return 0 if blocks == count else 1  # every real lookup must carry its block


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=1000, help="lookups per variant (default 1000)")
    args = parser.parse_args()
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    sys.exit(anyio.run(main, args.lookups))
