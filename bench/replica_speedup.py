"""What an analytical replica buys: a Q1-like aggregate from the DuckDB replica vs from PostgreSQL,
and what an incremental sync costs next to a full one.

TPC-H ``lineitem`` (scale factor ``--sf``) is loaded into a throwaway PostgreSQL cluster, with an
``l_updated_at`` column (indexed) that every change advances. The product declares an incremental
replica on that cursor. Measured side by side in one run:

* **aggregate**: TPC-H Q1's shape (group by return flag and line status; sums, averages, a count over
  a ship-date filter) through the service's ``query_product`` — governed, routed, audited — once
  answered by the fresh replica and once by the source (the same service whose router is told the
  replica is an hour older than ``max_lag`` allows, so it falls back). Both must return the same
  groups. Median of ``--repeat`` interleaved runs after a warm-up; target: the replica at least 10x faster.
* **sync**: a full sync, then 1% of the rows updated (``l_orderkey % 100 = 0``, cursor advanced) and an
  incremental sync; target: the incremental sync at most 0.1x the full one.

    python bench/replica_speedup.py            # sf 1
    python bench/replica_speedup.py --smoke    # sf 0.01, 3 runs: for CI
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/, tests/

import anyio  # noqa: E402
import psycopg  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._tpch import generate_lineitem, lineitem_contract, load_lineitem_postgres  # noqa: E402
from catalog.contract import ProductContract  # noqa: E402
from catalog.principal import Principal  # noqa: E402
from catalog.query import Limits, Query  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from catalog.replica_log import ReplicaLog  # noqa: E402
from servers.replica_router import ReplicaRouter  # noqa: E402
from servers.service import DataProductsService  # noqa: E402
from servers.settings import Settings  # noqa: E402
from tests.pgcluster import PostgresCluster  # noqa: E402

MIN_SPEEDUP = 10.0
MAX_SYNC_RATIO = 0.1
ANALYST = Principal(name="bench", roles=frozenset({"analyst"}))
Q1 = Query.model_validate(
    {
        "where": [{"column": "l_shipdate", "op": "<=", "value": "1998-09-02"}],
        "group_by": ["l_returnflag", "l_linestatus"],
        "aggregates": [
            {"fn": "sum", "column": "l_quantity", "as": "sum_qty"},
            {"fn": "sum", "column": "l_extendedprice", "as": "sum_base_price"},
            {"fn": "avg", "column": "l_quantity", "as": "avg_qty"},
            {"fn": "avg", "column": "l_extendedprice", "as": "avg_price"},
            {"fn": "avg", "column": "l_discount", "as": "avg_disc"},
            {"fn": "count", "as": "count_order"},
        ],
    }
)


def replica_contract() -> ProductContract:
    """The benchmark's lineitem product with an incremental replica on ``l_updated_at``."""
    data: dict[str, Any] = lineitem_contract("tpch.lineitem", "tpch").model_dump(exclude_none=True)
    data["columns"].append({"name": "l_updated_at", "type": "timestamp", "description": "last change"})
    data["replicas"] = {
        "analytical": {
            "refresh": "incremental",
            "cursor": "l_updated_at",
            "max_lag": "1h",
            "deletes": {"full_compare_every": 100},
        }
    }
    return ProductContract.model_validate(data)


def _normal(rows: list[list[Any]]) -> list[list[Any]]:
    return sorted([[round(v, 4) if isinstance(v, float) else v for v in row] for row in rows], key=repr)


async def measure(settings: Settings, dsn: str, repeat: int) -> dict[str, float]:
    async with DataProductsService.open(settings) as service:
        full = (await service.sync_replicas(["tpch.lineitem"], full=True))[0]
        fresh_router = service.replicas
        stale_router = stale_router_for(service)

        async def timed(router: ReplicaRouter, expected_store: str) -> tuple[float, list[list[Any]]]:
            service.replicas = router
            started = time.perf_counter()
            result = await service.query_product(ANALYST, "tpch.lineitem", Q1)
            elapsed = time.perf_counter() - started
            assert result.store["name"] == expected_store, result.store
            return elapsed, result.rows

        _, replica_rows = await timed(fresh_router, "replica")  # warm-up, both ways
        _, source_rows = await timed(stale_router, "source")
        assert _normal(replica_rows) == _normal(source_rows), "replica and source answered differently"
        replica_s, source_s = [], []
        for _ in range(repeat):
            replica_s.append((await timed(fresh_router, "replica"))[0])
            source_s.append((await timed(stale_router, "source"))[0])
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(
                "UPDATE lineitem SET l_quantity = l_quantity + 1, l_updated_at = '2026-01-02' "
                "WHERE l_orderkey % 100 = 0"
            )
            changed = cur.rowcount
        incremental = (await service.sync_replicas(["tpch.lineitem"]))[0]
        assert incremental.mode == "incremental" and incremental.changed == changed, (incremental, changed)
        fresh_router.forget("tpch.lineitem")
        stale_router.forget("tpch.lineitem")
        _, after = await timed(fresh_router, "replica")
        _, source_after = await timed(stale_router, "source")
        assert _normal(after) == _normal(source_after), "the incremental sync left the replica out of step"
        service.replicas = fresh_router
        await stale_router.aclose()
    return {
        "rows": float(full.rows),
        "changed": float(changed),
        "replica_ms": statistics.median(replica_s) * 1000,
        "source_ms": statistics.median(source_s) * 1000,
        "full_s": full.seconds,
        "incremental_s": incremental.seconds,
    }


def stale_router_for(service: DataProductsService) -> ReplicaRouter:
    later = datetime.now(UTC) + timedelta(hours=2)
    return ReplicaRouter(ReplicaLog(service.registry), now=lambda: later)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (1: 6M line items)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per store")
    parser.add_argument("--smoke", action="store_true", help="sf 0.01, 3 runs, no targets enforced")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dataproducts-bench")
    args = parser.parse_args()
    sf, repeat = (0.01, 3) if args.smoke else (args.sf, args.repeat)
    err = Console(stderr=True)
    parquet = generate_lineitem(args.data, sf)
    workspace = Path(tempfile.mkdtemp(prefix="dataproducts-replica-bench-"))
    try:
        with PostgresCluster.start() as cluster:
            admin = cluster.create_database("tpch")
            dsn = admin.replace("postgresql+psycopg://", "postgresql://")
            started = time.perf_counter()
            load_lineitem_postgres(dsn, parquet)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ALTER TABLE lineitem ADD COLUMN l_updated_at timestamp NOT NULL DEFAULT '2026-01-01'")
                conn.execute("CREATE INDEX lineitem_updated_at ON lineitem (l_updated_at)")
                conn.execute("ANALYZE lineitem")
            err.log(f"postgresql: lineitem sf {sf:g} loaded in {time.perf_counter() - started:.1f}s")
            settings = Settings(
                workspace=workspace,
                hash_salt=SecretStr(secrets.token_hex(16)),
                connections={"tpch": {"kind": "postgresql", "url": SecretStr(admin)}},
                limits=Limits(timeout_s=600, max_rows=1000),
            )
            with Registry.from_url(settings.resolved_registry_url(), owned_dir=workspace) as registry:
                registry.register(replica_contract(), actor="bench")
            figures = anyio.run(measure, settings, dsn, repeat)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    speedup = figures["source_ms"] / figures["replica_ms"]
    sync_ratio = figures["incremental_s"] / figures["full_s"]
    table = Table(title=f"replica vs source, TPC-H lineitem sf {sf:g} ({figures['rows']:,.0f} rows) in PostgreSQL")
    for column in ("measure", "replica / incremental", "source / full", "ratio", "target"):
        table.add_column(column)
    table.add_row(
        f"Q1-like aggregate, median of {repeat} (ms)",
        f"{figures['replica_ms']:.1f}",
        f"{figures['source_ms']:.1f}",
        f"{speedup:.1f}x faster",
        f">= {MIN_SPEEDUP:g}x",
    )
    table.add_row(
        f"sync, {figures['changed']:,.0f} rows changed (s)",
        f"{figures['incremental_s']:.2f}",
        f"{figures['full_s']:.2f}",
        f"{sync_ratio:.3f}x",
        f"<= {MAX_SYNC_RATIO:g}x",
    )
    Console().print(table)
    if args.smoke:
        return 0
    return 0 if speedup >= MIN_SPEEDUP and sync_ratio <= MAX_SYNC_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
