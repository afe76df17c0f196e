"""The server under load: N concurrent MCP clients over streamable HTTP on loopback, mixed calls.

One ``serve --http`` process serves the demo workspace (SQLite registry and shop, Parquet analytics);
for each N the clients connect, start together and each make ``--calls`` calls: point lookups,
aggregates, ``run_sql``, catalog search, and refusals (a principal without a role, an unknown column,
a DELETE). It prints calls/s, p50/p99 latency, unintended errors (a refusal that was not asked for,
or an asked-for refusal that was served), audit rows against calls, and the server's RSS.

    python bench/load.py --clients 1,50,200 --calls 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/

import anyio  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._http_load import LoadRun, drive, rss_bytes, served_over_http  # noqa: E402
from bench._load_mix import mixed_call, with_load_principals  # noqa: E402
from catalog.audit import AuditLog  # noqa: E402
from catalog.loader import load_contract_file  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.demo import build_demo_workspace  # noqa: E402
from servers.settings import Settings, load_settings  # noqa: E402

MB = 1024 * 1024


def demo_settings(folder: Path) -> Settings:
    """A registered demo workspace in ``folder``."""
    workspace = build_demo_workspace(folder / "ws")
    settings = load_settings(workspace.config_path)
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="bench")
    return settings


def audit_rows(settings: Settings, principals: list[str], since: datetime, until: datetime) -> int:
    """Audit rows of ``principals`` written in [since, until)."""
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        log = AuditLog.from_registry(registry)
        return sum(
            1
            for name in principals
            for row in log.query(principal=name, since=since, limit=1_000_000)
            if row.time < until
        )


def run(args: argparse.Namespace, folder: Path) -> bool:
    console = Console(stderr=True)
    load = with_load_principals(demo_settings(folder))
    results: list[tuple[LoadRun, datetime, datetime, int]] = []
    with served_over_http(load.settings) as served:
        rss_start = rss_bytes(served.pid)
        warm = anyio.run(drive, served.url, load.tokens, 3, 6, mixed_call)
        rss_warm = rss_bytes(served.pid)
        console.log(f"server up (pid {served.pid}); warm-up {len(warm.outcomes)} calls; RSS {rss_warm / MB:.0f} MB")
        for clients in args.clients:
            since = datetime.now(UTC)
            result = anyio.run(drive, served.url, load.tokens, clients, args.calls, mixed_call)
            results.append((result, since, datetime.now(UTC), rss_bytes(served.pid)))
            console.log(f"N={clients}: {len(result.outcomes)} calls in {result.wall_s:.1f}s")
    # the server has stopped: its audit writer has drained, every row it acknowledged is in the registry
    table = Table(title=f"mixed MCP load over streamable HTTP, {args.calls} calls per client")
    for column in ("clients", "calls", "calls/s", "p50 ms", "p99 ms", "unintended", "audit rows", "RSS MB"):
        table.add_column(column, justify="right")
    ok = True
    for result, since, until, rss in results:
        rows = audit_rows(load.settings, load.names, since, until)
        ok &= rows == len(result.outcomes) and not result.unintended
        table.add_row(
            str(result.clients),
            str(len(result.outcomes)),
            f"{result.calls_per_s:.0f}",
            f"{result.percentile_ms(0.5):.1f}",
            f"{result.percentile_ms(0.99):.1f}",
            str(len(result.unintended)),
            f"{rows}" + ("" if rows == len(result.outcomes) else " [red]≠ calls[/]"),
            f"{rss / MB:.0f}",
        )
        for outcome in result.unintended[:3]:
            console.log(f"unintended {outcome.kind}: {outcome.message[:200]}")
    output = Console() if Console().is_terminal else Console(width=120)
    output.print(table)
    output.print(f"server RSS: {rss_start / MB:.0f} MB at start, {rss_warm / MB:.0f} MB after warm-up")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", default="1,50,200", help="comma-separated client counts (default 1,50,200)")
    parser.add_argument("--calls", type=int, default=10, help="calls per client (default 10)")
    parser.add_argument("--check", action="store_true", help="exit 1 on an unintended error or a missing audit row")
    args = parser.parse_args(argv)
    try:
        args.clients = [int(n) for n in args.clients.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--clients: expected comma-separated whole numbers, e.g. 1,50,200; got {args.clients!r}")
    if not args.clients or min(args.clients) < 1 or args.calls < 1:
        parser.error("--clients needs numbers >= 1 and --calls >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dp-load-") as folder:
        ok = run(args, Path(folder))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
