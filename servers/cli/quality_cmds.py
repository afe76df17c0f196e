"""Quality commands: check (run the contracts' quality checks) and quality (show results and freshness)."""

from __future__ import annotations

from typing import Annotated

import anyio
import typer
from rich.table import Table

from catalog.contract import parse_duration
from catalog.quality_log import CheckResult
from servers.cli._common import console, err_console, reporting_errors, run_async, state
from servers.quality import checking_forever
from servers.results import FreshnessInfo, freshness_info
from servers.service import DataProductsService
from servers.settings import Settings

__all__ = ["check_workspace", "print_results", "register_commands"]

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "error": "red"}


def register_commands(app: typer.Typer) -> None:
    for command in (check, quality):
        app.command(command.__name__)(reporting_errors(command))


def check(
    ctx: typer.Context,
    products: Annotated[list[str] | None, typer.Argument(help="products to check; default: every product")] = None,
    every: Annotated[
        str | None, typer.Option(help="run again every 15m / 1h / 1d, in the foreground, until Ctrl-C")
    ] = None,
) -> None:
    """Run the contracts' quality checks on the stores (read-only) and record the results in the registry.

    Exits 1 when an error-severity check fails or a check cannot run (without --every).
    """
    settings = state(ctx).settings
    if every is not None:
        interval = parse_duration(every).total_seconds()
        err_console.print(f"checking every {every}; Ctrl-C stops")
        try:
            run_async(_check_forever, settings, products or [], interval)
        except KeyboardInterrupt:
            err_console.print("stopped")
        return
    results = check_workspace(settings, products)
    print_results(results)
    if any(r.status in ("fail", "error") for r in results):
        raise typer.Exit(1)


def check_workspace(settings: Settings, products: list[str] | None = None) -> list[CheckResult]:
    """Run the quality checks of ``products`` (default: every product) once and record the results.

    Raises:
        NotFoundError: a named product does not exist. ConnectorError: the results could not be recorded.
    """
    return run_async(_check_once, settings, products or [])


async def _check_once(settings: Settings, products: list[str]) -> list[CheckResult]:
    async with DataProductsService.open(settings) as service:
        return await service.run_checks(products or None)


async def _check_forever(settings: Settings, products: list[str], interval: float) -> None:
    async with DataProductsService.open(settings) as service:
        await checking_forever(lambda: service.run_checks(products or None), interval, on_results=print_results)


def quality(
    ctx: typer.Context,
    product: Annotated[str | None, typer.Argument(help="one product (with its recent runs); default: all")] = None,
    history: Annotated[int, typer.Option(help="recent runs to list for one product")] = 20,
) -> None:
    """Show the latest quality check results (passing or failing, since when) and each product's freshness."""
    settings = state(ctx).settings

    async def read() -> tuple[list[tuple[FreshnessInfo, list[CheckResult]]], list[CheckResult]]:
        async with DataProductsService.open(settings) as service:
            if product is not None:
                contracts = [await service.contract(product)]
            else:
                contracts = await anyio.to_thread.run_sync(
                    lambda: service.registry.list_contracts(include_deprecated=False)
                )
            rows = [
                (
                    freshness_info(await service.trust.freshness(c)),
                    service.quality.latest(c.name, version=c.version),
                )
                for c in contracts
            ]
            recent = service.quality.history(product, limit=history) if product is not None else []
            return rows, recent

    rows, recent = run_async(read)
    table = Table("product", "freshness", "as of (UTC)", "SLA", "check", "status", "observed", "threshold", "since")
    for fresh, latest in rows:
        as_of = f"{fresh.as_of:%Y-%m-%d %H:%M}" if fresh.as_of else (fresh.reason or "")
        state_text = fresh.state + (f" ({fresh.age})" if fresh.age else "")
        for i, r in enumerate(latest or [None]):
            lead = [fresh.product, state_text, as_of, fresh.sla or ""] if i == 0 else ["", "", "", ""]
            if r is None:
                table.add_row(*lead, "[dim]not checked yet: run `dataproducts check`[/]", "", "", "", "")
                continue
            table.add_row(
                *lead,
                r.check_name,
                f"[{_STYLE[r.status]}]{r.status}[/]",
                r.observed or "",
                r.threshold,
                f"{(r.since or r.checked_at):%Y-%m-%d %H:%M}",
            )
    console.print(table)
    if recent:
        console.print(f"\nrecent runs of {product}:")
        print_results(recent)


def print_results(results: list[CheckResult]) -> None:
    """Check results as a table: product, check, status, observed, threshold, rows scanned, ms, message."""
    table = Table(
        "product", "check", "kind", "status", "observed", "threshold", "rows", "ms", "checked at (UTC)", "message"
    )
    for r in results:
        table.add_row(
            r.product,
            r.check_name,
            r.kind,
            f"[{_STYLE[r.status]}]{r.status}[/]",
            r.observed or "",
            r.threshold,
            "" if r.rows_scanned is None else str(r.rows_scanned),
            f"{r.duration_ms:.0f}",
            f"{r.checked_at:%Y-%m-%d %H:%M:%S}",
            r.message,
        )
    console.print(table)
