"""What the semantic layer costs: ``query_metrics`` through an in-process MCP client vs hand-written SQL.

One TPC-H ``lineitem`` product carries metrics (a filtered sum, a derived share, plain sums and a
count), categorical dimensions (return flag, line status) and a time dimension (ship date, bucketed by
year). The governed path asks ``query_metrics`` for five metrics grouped by both flags and the ship
year over a half-open time range: MCP client -> tool -> service -> registry contract -> policy -> one
governed SELECT compiled for the store -> connector -> audit row. The raw path runs the equivalent
SQL, written by hand, on the store's own driver and one open connection. Both must return the same
groups. Printed per store: the median of ``--repeat`` interleaved runs after warm-up, the ratio and
the target (at most 1.10x). A ``service ms`` column times the same call on the service layer directly
(the MCP server's own service instance), separating what governance, compiling and the audit row
cost from what the MCP layer costs.

    python bench/metrics_overhead.py                       # DuckDB, sf 0.1
    python bench/metrics_overhead.py --sf 1 --postgresql   # also PostgreSQL in a throwaway cluster
    python bench/metrics_overhead.py --smoke               # sf 0.01, 3 runs: for CI
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/, tests/

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._tpch import generate_lineitem, lineitem_contract  # noqa: E402
from bench.query_overhead import RawStore, prepared_stores  # noqa: E402
from catalog.contract import ProductContract  # noqa: E402
from catalog.metric_query import MetricsRequest  # noqa: E402
from catalog.principal import Principal  # noqa: E402
from catalog.query import Limits  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from catalog.timegrain import bucket_text  # noqa: E402
from servers.mcp import create_server  # noqa: E402
from servers.service import DataProductsService  # noqa: E402
from servers.settings import PrincipalConfig, Settings  # noqa: E402

MAX_RATIO = 1.10
START, END = "1992-01-01", "1998-09-02"
METRICS = [
    {"name": "revenue", "expr": "sum(l_extendedprice * (1 - l_discount))", "description": "net revenue"},
    {"name": "quantity", "expr": "sum(l_quantity)", "description": "units"},
    {"name": "line_count", "expr": "count(*)", "description": "lines"},
    {
        "name": "returned_revenue",
        "expr": "sum(l_extendedprice * (1 - l_discount))",
        "filter": "l_returnflag = 'R'",
        "description": "net revenue of returned lines",
    },
    {"name": "return_share", "expr": "returned_revenue / revenue", "description": "share of revenue returned"},
]
DIMENSIONS = [
    {"name": "return_flag", "column": "l_returnflag", "type": "categorical"},
    {"name": "line_status", "column": "l_linestatus", "type": "categorical"},
    {"name": "ship_date", "column": "l_shipdate", "type": "time", "time_grains": ["month", "year"]},
]
RAW_SQL = """SELECT l_returnflag, l_linestatus, date_trunc('year', l_shipdate) AS ship_year,
  sum(l_extendedprice * (1 - l_discount)), sum(l_quantity), count(*),
  sum(l_extendedprice * (1 - l_discount)) FILTER (WHERE l_returnflag = 'R'),
  CAST(sum(l_extendedprice * (1 - l_discount)) FILTER (WHERE l_returnflag = 'R') AS DOUBLE PRECISION)
    / NULLIF(CAST(sum(l_extendedprice * (1 - l_discount)) AS DOUBLE PRECISION), 0)
FROM lineitem WHERE l_shipdate >= CAST(? AS DATE) AND l_shipdate < CAST(? AS DATE)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""


def metrics_contract(name: str, connection: str) -> ProductContract:
    """``lineitem`` with the benchmark's metrics and dimensions (and the usual evaluated-but-idle policy)."""
    base = lineitem_contract(name, connection).model_dump(mode="json")
    return ProductContract.model_validate(base | {"metrics": METRICS, "dimensions": DIMENSIONS})


def arguments(product: str) -> dict[str, Any]:
    return {
        "metrics": [f"{product}.{m['name']}" for m in METRICS],
        "group_by": [
            {"dimension": "return_flag"},
            {"dimension": "line_status"},
            {"dimension": "ship_date", "grain": "year"},
        ],
        "time_range": {"start": START, "end": END},
    }


@dataclass
class Measurement:
    store: str
    groups: int
    raw_ms: float
    service_ms: float
    mcp_ms: float

    @property
    def ratio(self) -> float:
        return self.mcp_ms / self.raw_ms


@dataclass
class Paths:
    """The three ways the request runs: the bare driver, the service layer, the agent's tool call."""

    raw: RawStore
    service: DataProductsService
    principal: Principal
    client: Client


async def measure(store: str, paths: Paths, *, repeat: int, warmup: int) -> Measurement:
    """Median wall times of the raw, service and MCP runs, interleaved; all must give the same groups."""
    times: dict[str, list[float]] = {"raw": [], "service": [], "mcp": []}
    product = f"tpch.lineitem_{store}"
    request = MetricsRequest.model_validate(arguments(product))
    raw, client = paths.raw, paths.client
    rows: list[tuple[Any, ...]] = []
    for _ in range(warmup + repeat):
        started = time.perf_counter()
        rows = raw.run(RAW_SQL, [START, END])
        times["raw"].append(time.perf_counter() - started)
        started = time.perf_counter()
        result = await client.call_tool("query_metrics", arguments(product))
        times["mcp"].append(time.perf_counter() - started)
        started = time.perf_counter()
        direct = await paths.service.query_metrics(paths.principal, request)
        times["service"].append(time.perf_counter() - started)
        if result.is_error or result.structured_content is None:
            text = " ".join(getattr(c, "text", "") for c in result.content)
            raise RuntimeError(f"{store}: query_metrics failed: {text}")
        got = [(r[0], r[1], r[2], r[5]) for r in result.structured_content["rows"]]
        want = [(r[0], r[1], bucket_text(r[2], "year"), r[5]) for r in rows]
        if got != want or [(r[0], r[1], r[2], r[5]) for r in direct.rows] != want:
            raise RuntimeError(f"{store}: query_metrics groups differ from the raw SQL's: {got[:3]} != {want[:3]}")
    median = {path: statistics.median(ts[warmup:]) * 1000 for path, ts in times.items()}
    return Measurement(store, len(rows), median["raw"], median["service"], median["mcp"])


async def run_bench(args: argparse.Namespace, workdir: Path) -> list[Measurement]:
    console = Console(stderr=True)
    started = time.perf_counter()
    parquet = generate_lineitem(Path(args.data_dir) if args.data_dir else workdir, args.sf)
    console.log(f"lineitem sf={args.sf:g}: {parquet} ({time.perf_counter() - started:.1f}s)")
    stores = ["duckdb", "postgresql"] if args.postgresql else ["duckdb"]
    with prepared_stores(stores, parquet) as (configs, raws):
        settings = Settings(
            workspace=workdir,
            registry_url=f"sqlite:///{workdir / 'registry.db'}",
            hash_salt=SecretStr(secrets.token_hex(16)),
            connections=configs,
            principals=[PrincipalConfig(name="bench", roles=["analyst"])],
            limits=Limits(max_rows=1000, timeout_s=600),
        )
        with Registry.from_url(settings.resolved_registry_url()) as registry:
            for store in configs:
                registry.register(metrics_contract(f"tpch.lineitem_{store}", store), actor="bench")
        principal = settings.principal("bench")
        async with DataProductsService.open(settings) as service:
            server = create_server(settings, principal=principal, service=service)
            async with Client(server) as client:
                return [
                    await measure(
                        store, Paths(raws[store], service, principal, client), repeat=args.repeat, warmup=args.warmup
                    )
                    for store in configs
                ]


def report(results: list[Measurement], args: argparse.Namespace) -> bool:
    """Print the table; True when every target is met."""
    table = Table(
        title=f"query_metrics overhead: TPC-H lineitem sf={args.sf:g}, median of {args.repeat} runs",
        caption=(
            "5 metrics (one filtered, one derived) by return flag, line status and ship year over a time range; "
            "ratio: MCP vs raw SQL; service ms: the same call on the service layer, without MCP"
        ),
    )
    for column in ("store", "groups", "raw SQL ms", "service ms", "MCP ms", "ratio", "added ms", "target", ""):
        table.add_column(column, justify="left" if column in ("store", "target") else "right")
    all_met = True
    for m in results:
        met = m.ratio <= MAX_RATIO
        all_met &= met
        table.add_row(
            m.store,
            str(m.groups),
            f"{m.raw_ms:.2f}",
            f"{m.service_ms:.2f}",
            f"{m.mcp_ms:.2f}",
            f"{m.ratio:.2f}x",
            f"{m.mcp_ms - m.raw_ms:+.2f}",
            f"≤ {MAX_RATIO:.2f}x",
            "[green]met[/]" if met else "[red]missed[/]",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)
    return all_met


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sf", type=float, default=0.1, help="TPC-H scale factor (default 0.1, ~600k rows)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--postgresql", action="store_true", help="also measure PostgreSQL (a throwaway cluster)")
    parser.add_argument("--smoke", action="store_true", help="sf 0.01, 3 runs, 1 warm-up: it runs, figures mean little")
    parser.add_argument("--data-dir", help="keep generated Parquet/CSV here to reuse across runs")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sf, args.repeat, args.warmup = 0.01, 3, 1
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
    met = report(results, args)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
