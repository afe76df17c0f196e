"""What governance costs: ``query_product`` through an in-process MCP client vs the same query run raw.

For each store (SQLite file, DuckDB over a Parquet file, PostgreSQL in a throwaway cluster) and each query shape (a
point lookup by primary key, a TPC-H Q1-like aggregate scan over ``lineitem``) it prints the median of
``--repeat`` timed runs after warm-up, the ratio MCP/raw and the milliseconds added, beside the
targets: at most 1.05x on the scan, at most 2 ms added on the lookup.

The governed path is the whole product: MCP tool call -> service -> registry contract -> policy ->
neutral query compiled to the store's dialect -> connector (read-only, limits) -> audit row. The raw
path is the store's own Python driver on one open connection. A third column times the same call
again on the service layer directly, right after the MCP call: its statement is then cached, so the
column shows what compiling costs and what MCP costs on top.

    python bench/query_overhead.py --sf 0.1 --repeat 30 --stores sqlite,duckdb,postgresql

With ``--clients`` (N = 1, 8, 32 unless given, e.g. ``--clients 2``) it measures concurrency instead:
N MCP clients over streamable HTTP on loopback against one ``serve --http`` process, each making
``--repeat`` point lookups, vs the same lookups on N raw threads; target ≥ 0.7x the raw lookups/s at
the largest N (:mod:`bench._concurrent_lookups`).

    python bench/query_overhead.py --clients --sf 0.1 --repeat 50 --stores duckdb,postgresql
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/, tests/

import anyio  # noqa: E402
import duckdb  # noqa: E402
import psycopg  # noqa: E402
from mcp import Client  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._concurrent_lookups import ConcurrencyMeasurement, measure_concurrency, report_concurrency  # noqa: E402
from bench._http_load import served_over_http  # noqa: E402
from bench._tpch import (  # noqa: E402
    generate_lineitem,
    lineitem_contract,
    load_lineitem_postgres,
    load_lineitem_sqlite,
)
from catalog.principal import Principal  # noqa: E402
from catalog.query import Limits, Query  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from connectors.base import ConnectionConfig  # noqa: E402
from servers.mcp import create_server  # noqa: E402
from servers.service import DataProductsService  # noqa: E402
from servers.settings import PrincipalConfig, Settings, hash_token  # noqa: E402
from tests.pgcluster import PostgresCluster  # noqa: E402

STORES = ("sqlite", "duckdb", "postgresql")
BENCH_TOKEN = secrets.token_urlsafe(24)  # the bench principal's bearer token over HTTP (--clients)
READER_ROLE = "bench_reader"
LOOKUP_MAX_ADDED_MS = 2.0
SCAN_MAX_RATIO = 1.05
LOOKUP_COLUMNS = [
    "l_orderkey",
    "l_linenumber",
    "l_partkey",
    "l_suppkey",
    "l_quantity",
    "l_extendedprice",
    "l_discount",
    "l_tax",
    "l_returnflag",
    "l_linestatus",
    "l_shipdate",
    "l_shipmode",
]
Q1_AGGREGATES = [  # fn, column, alias: TPC-H Q1 without its expression aggregates
    ("sum", "l_quantity", "sum_qty"),
    ("sum", "l_extendedprice", "sum_base_price"),
    ("avg", "l_quantity", "avg_qty"),
    ("avg", "l_extendedprice", "avg_price"),
    ("avg", "l_discount", "avg_disc"),
    ("count", None, "count_order"),
]
Q1_SHIPDATE = "1998-09-02"


@dataclass
class Case:
    """One query shape: the ``query_product`` arguments and the equivalent raw SQL for run ``i``."""

    name: str
    governed: Callable[[int], dict[str, Any]]
    raw: Callable[[int], tuple[str, list[Any]]]
    target: str
    met: Callable[[float, float], bool]


@dataclass
class Measurement:
    store: str
    case: Case
    rows: int
    raw_ms: float
    service_ms: float  # the same call on the service layer, without MCP
    governed_ms: float  # through the MCP client: what an agent pays


def lookup_case(product: str, keys: list[int]) -> Case:
    sql = f"SELECT {', '.join(LOOKUP_COLUMNS)} FROM lineitem WHERE l_orderkey = ? AND l_linenumber = 1"
    return Case(
        name="PK lookup",
        governed=lambda i: {
            "product": product,
            "columns": LOOKUP_COLUMNS,
            "where": [
                {"column": "l_orderkey", "op": "=", "value": keys[i % len(keys)]},
                {"column": "l_linenumber", "op": "=", "value": 1},
            ],
        },
        raw=lambda i: (sql, [keys[i % len(keys)]]),
        target=f"≤ +{LOOKUP_MAX_ADDED_MS:g} ms",
        met=lambda raw, ours: ours - raw <= LOOKUP_MAX_ADDED_MS,
    )


def scan_case(product: str) -> Case:
    select = ", ".join(f"{fn}({col or '*'}) AS {alias}" for fn, col, alias in Q1_AGGREGATES)
    sql = (
        f"SELECT l_returnflag, l_linestatus, {select} FROM lineitem WHERE l_shipdate <= CAST(? AS DATE) "
        "GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"
    )
    arguments = {
        "product": product,
        "where": [{"column": "l_shipdate", "op": "<=", "value": Q1_SHIPDATE}],
        "group_by": ["l_returnflag", "l_linestatus"],
        "aggregates": [{"fn": fn, "column": col, "as": alias} for fn, col, alias in Q1_AGGREGATES],
        "order_by": [{"column": "l_returnflag"}, {"column": "l_linestatus"}],
    }
    return Case(
        name="Q1 scan",
        governed=lambda i: arguments,
        raw=lambda i: (sql, [Q1_SHIPDATE]),
        target=f"≤ {SCAN_MAX_RATIO:.2f}x",
        met=lambda raw, ours: ours / raw <= SCAN_MAX_RATIO,
    )


class RawStore:
    """The store's own driver on one open connection: the baseline."""

    def __init__(self, run: Callable[[str, list[Any]], list[tuple[Any, ...]]], close: Callable[[], None]) -> None:
        self.run = run
        self.close = close

    @classmethod
    def duckdb(cls, parquet: Path) -> RawStore:
        conn = duckdb.connect()
        conn.execute(f"CREATE VIEW lineitem AS SELECT * FROM read_parquet('{parquet}')")
        return cls(lambda sql, params: conn.execute(sql, params).fetchall(), conn.close)

    @classmethod
    def sqlite(cls, path: Path) -> RawStore:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

        def run(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            # dates are ISO text in SQLite: compare them as text (CAST(... AS DATE) would make a number)
            return conn.execute(sql.replace("CAST(? AS DATE)", "?"), params).fetchall()

        return cls(run, conn.close)

    @classmethod
    def postgresql(cls, dsn: str) -> RawStore:
        conn = psycopg.connect(dsn, autocommit=True)
        return cls(lambda sql, params: conn.execute(sql.replace("?", "%s"), params).fetchall(), conn.close)


RAW_OPENERS: dict[str, Callable[[], RawStore]] = {}


@dataclass
class Paths:
    """The three ways one query is run, from the bare driver to the agent's tool call."""

    raw: RawStore
    service: DataProductsService
    principal: Principal
    client: Client


async def measure(paths: Paths, store: str, case: Case, *, repeat: int, warmup: int) -> Measurement:
    """Median wall times of the raw, service and MCP runs, interleaved; all must return the same rows."""
    times: dict[str, list[float]] = {"raw": [], "service": [], "mcp": []}
    raw_rows: list[tuple[Any, ...]] = []
    for i in range(warmup + repeat):
        sql, params = case.raw(i)
        arguments = case.governed(i)
        query = Query.model_validate({k: v for k, v in arguments.items() if k != "product"})
        started = time.perf_counter()
        raw_rows = paths.raw.run(sql, params)
        times["raw"].append(time.perf_counter() - started)
        started = time.perf_counter()
        result = await paths.client.call_tool("query_product", arguments)
        times["mcp"].append(time.perf_counter() - started)
        started = time.perf_counter()  # after MCP: a lookup's key is new to MCP, the repeat hits the statement cache
        direct = await paths.service.query_product(paths.principal, arguments["product"], query)
        times["service"].append(time.perf_counter() - started)
        if result.is_error or result.structured_content is None:
            text = " ".join(getattr(c, "text", "") for c in result.content)
            raise RuntimeError(f"{store}/{case.name}: query_product failed: {text}")
        expected = [list(r[:2]) for r in raw_rows]
        for got in (result.structured_content["rows"], direct.rows):
            if [r[:2] for r in got] != expected:
                raise RuntimeError(f"{store}/{case.name}: governed rows differ from raw rows: {got} != {raw_rows}")
    median = {path: statistics.median(ts[warmup:]) * 1000 for path, ts in times.items()}
    return Measurement(
        store=store,
        case=case,
        rows=len(raw_rows),
        raw_ms=median["raw"],
        service_ms=median["service"],
        governed_ms=median["mcp"],
    )


@contextmanager
def prepared_stores(
    stores: list[str], parquet: Path
) -> Iterator[tuple[dict[str, ConnectionConfig], dict[str, RawStore]]]:
    """Connection configs for the settings and raw drivers, per store; PostgreSQL is loaded first.

    ``RAW_OPENERS`` gets, per store, how to open one more raw driver (one per thread under concurrency).
    """
    configs: dict[str, ConnectionConfig] = {}
    raws: dict[str, RawStore] = {}
    with ExitStack() as stack:
        if "sqlite" in stores:
            path = parquet.with_suffix(".sqlite")
            started = time.perf_counter()
            count = load_lineitem_sqlite(path, parquet)
            Console(stderr=True).log(f"sqlite: {count:,} rows in {path} ({time.perf_counter() - started:.1f}s)")
            configs["sqlite"] = ConnectionConfig(name="sqlite", kind="sqlite", path=str(path))
            RAW_OPENERS["sqlite"] = lambda: RawStore.sqlite(path)
            raws["sqlite"] = RawStore.sqlite(path)
            stack.callback(raws["sqlite"].close)
        if "duckdb" in stores:
            configs["duckdb"] = ConnectionConfig(name="duckdb", kind="duckdb", files={"lineitem": str(parquet)})
            RAW_OPENERS["duckdb"] = lambda: RawStore.duckdb(parquet)
            raws["duckdb"] = RawStore.duckdb(parquet)
            stack.callback(raws["duckdb"].close)
        if "postgresql" in stores:
            cluster = stack.enter_context(PostgresCluster.start())
            admin_url = cluster.create_database("tpch")
            started = time.perf_counter()
            count = load_lineitem_postgres(admin_url.replace("postgresql+psycopg://", "postgresql://"), parquet)
            url = admin_url.replace("//postgres@", f"//{READER_ROLE}@")  # served like production: a read-only role
            dsn = url.replace("postgresql+psycopg://", "postgresql://")
            Console(stderr=True).log(f"postgresql: loaded {count:,} rows in {time.perf_counter() - started:.1f}s")
            configs["postgresql"] = ConnectionConfig(name="postgresql", kind="postgresql", url=SecretStr(url))
            RAW_OPENERS["postgresql"] = lambda: RawStore.postgresql(dsn)
            raws["postgresql"] = RawStore.postgresql(dsn)
            stack.callback(raws["postgresql"].close)
        yield configs, raws


def sample_keys(parquet: Path, n: int = 64) -> list[int]:
    """Order keys spread over the table, the same for every store."""
    with duckdb.connect() as conn:
        sql = (
            f"SELECT l_orderkey FROM read_parquet('{parquet}') WHERE l_linenumber = 1 ORDER BY hash(l_orderkey) LIMIT ?"
        )
        rows = conn.execute(sql, [n]).fetchall()
    return [int(r[0]) for r in rows]


async def run_bench(args: argparse.Namespace, workdir: Path) -> list[Measurement] | list[ConcurrencyMeasurement]:
    console = Console(stderr=True)
    started = time.perf_counter()
    parquet = generate_lineitem(Path(args.data_dir) if args.data_dir else workdir, args.sf)
    console.log(f"lineitem sf={args.sf:g}: {parquet} ({time.perf_counter() - started:.1f}s)")
    keys = sample_keys(parquet)
    with prepared_stores(args.stores, parquet) as (configs, raws):
        settings = registered_settings(workdir, configs)
        if args.clients:
            return await run_concurrency(args, settings, keys)
        principal = settings.principal("bench")
        cases = [
            (s, c) for s in configs for c in (lookup_case(f"tpch.lineitem_{s}", keys), scan_case(f"tpch.lineitem_{s}"))
        ]
        async with DataProductsService.open(settings) as service:
            server = create_server(settings, principal=principal, service=service)
            async with Client(server) as client:
                return [
                    await measure(
                        Paths(raws[store], service, principal, client),
                        store,
                        case,
                        repeat=args.repeat,
                        warmup=args.warmup,
                    )
                    for store, case in cases
                ]


def registered_settings(workdir: Path, configs: dict[str, ConnectionConfig]) -> Settings:
    """Settings for the bench principal (with a bearer token for HTTP), lineitem registered per store."""
    settings = Settings(
        workspace=workdir,
        registry_url=f"sqlite:///{workdir / 'registry.db'}",
        hash_salt=SecretStr(secrets.token_hex(16)),
        connections=configs,
        principals=[PrincipalConfig(name="bench", roles=["analyst"], token_sha256=hash_token(BENCH_TOKEN))],
        limits=Limits(max_rows=1000, timeout_s=600),
    )
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        for store in configs:
            registry.register(lineitem_contract(f"tpch.lineitem_{store}", store), actor="bench")
    return settings


async def run_concurrency(
    args: argparse.Namespace, settings: Settings, keys: list[int]
) -> list[ConcurrencyMeasurement]:
    """Per store and N: N MCP clients over HTTP on one served process vs N raw threads (same lookups)."""
    results = []
    with served_over_http(settings) as served:
        for store in settings.connections:
            case = lookup_case(f"tpch.lineitem_{store}", keys)
            await measure_concurrency(  # warm-up: connectors opened, statement shapes cached
                store, served.url, BENCH_TOKEN, case.governed, RAW_OPENERS[store], case.raw, 1, args.warmup + 1
            )
            for clients in args.clients:
                m = await measure_concurrency(
                    store, served.url, BENCH_TOKEN, case.governed, RAW_OPENERS[store], case.raw, clients, args.repeat
                )
                Console(stderr=True).log(
                    f"{store} N={clients}: {m.governed.calls_per_s:.0f} governed/s, {m.raw.calls_per_s:.0f} raw/s"
                )
                results.append(m)
    return results


def report(results: list[Measurement], args: argparse.Namespace) -> bool:
    """Print the table; True when every target is met."""
    table = Table(
        title=f"query_product overhead: TPC-H lineitem sf={args.sf:g}, median of {args.repeat} runs",
        caption=(
            "ratio and added ms: MCP path vs raw driver (lookups use a new key each run); "
            "service ms: the same call again without MCP (statement cache warm)"
        ),
    )
    for column in ("store", "query", "rows", "raw ms", "service ms", "MCP ms", "ratio", "added ms", "target", ""):
        table.add_column(column, justify="left" if column in ("store", "query", "target") else "right")
    all_met = True
    for m in results:
        met = m.case.met(m.raw_ms, m.governed_ms)
        all_met &= met
        table.add_row(
            m.store,
            m.case.name,
            str(m.rows),
            f"{m.raw_ms:.2f}",
            f"{m.service_ms:.2f}",
            f"{m.governed_ms:.2f}",
            f"{m.governed_ms / m.raw_ms:.2f}x",
            f"{m.governed_ms - m.raw_ms:+.2f}",
            m.case.target,
            "[green]met[/]" if met else "[red]missed[/]",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and CI: do not wrap the figures at 80 columns
    console.print(table)
    return all_met


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sf", type=float, default=0.1, help="TPC-H scale factor (default 0.1, ~600k rows)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument(
        "--stores", default=",".join(STORES), help="comma-separated subset of: sqlite,duckdb,postgresql"
    )
    parser.add_argument("--data-dir", help="keep generated Parquet/CSV here to reuse across runs")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--clients",
        nargs="?",
        const="1,8,32",
        help="concurrency mode: N MCP clients over HTTP vs N raw threads (default N: 1,8,32; e.g. --clients 2)",
    )
    args = parser.parse_args(argv)
    try:
        args.clients = [int(n) for n in args.clients.split(",") if n.strip()] if args.clients else []
    except ValueError:
        parser.error(f"--clients: expected comma-separated whole numbers, e.g. 1,8,32; got {args.clients!r}")
    if any(n < 1 for n in args.clients):
        parser.error("--clients: every N must be at least 1")
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(args.stores) - set(STORES))
    if unknown or not args.stores:
        parser.error(f"unknown stores {unknown}; choose from {','.join(STORES)}")
    if args.repeat < 1 or args.warmup < 0 or args.sf <= 0:
        parser.error("--repeat must be >= 1, --warmup >= 0, --sf > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dp-bench-"))
    try:
        results = anyio.run(run_bench, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.clients:
        met = report_concurrency(results, args.repeat)  # type: ignore[arg-type]
        return 1 if args.check and not met else 0
    met = report(results, args)  # type: ignore[arg-type]
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
