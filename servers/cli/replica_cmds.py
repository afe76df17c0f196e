"""Replica commands: ``sync`` (refresh products' analytical replicas) and ``replicas`` (their state, and
that of each product's search index, the other replica, refreshed by ``dataproducts index``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import anyio.to_thread
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from catalog.timestamps import format_age
from connectors.replica_sync import SyncProgress, SyncReport
from servers.cli._common import console, err_console, reporting_errors, run_async, state
from servers.cli._search_index_rows import search_index_rows
from servers.service import DataProductsService
from servers.settings import Settings

__all__ = ["register_commands", "sync_progress", "sync_workspace"]


def register_commands(app: typer.Typer) -> None:
    app.command("sync")(reporting_errors(sync))
    app.command("replicas")(reporting_errors(replicas))


@contextmanager
def sync_progress(out: Console) -> Iterator[Progress]:
    """A rich progress display with one bar per product (rows copied of the rows to copy)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        yield progress


def sync_workspace(settings: Settings, products: Sequence[str] = (), *, full: bool = False) -> list[SyncReport]:
    """Sync ``products`` (default: every product with a replica), drawing progress on stderr.

    Raises:
        NotFoundError, InvalidRequestError, ContractError (schema drift), ConnectorError.
    """

    async def run() -> list[SyncReport]:
        async with DataProductsService.open(settings) as service:
            with sync_progress(err_console) as progress:
                tasks: dict[str, TaskID] = {}

                def show(event: SyncProgress) -> None:
                    if event.product not in tasks:
                        tasks[event.product] = progress.add_task(event.product, total=event.rows_total, phase="")
                    progress.update(
                        tasks[event.product], completed=event.rows_done, total=event.rows_total, phase=event.phase
                    )

                return await service.sync_replicas(products, full=full, progress=show)

    return run_async(run)


def sync(
    ctx: typer.Context,
    products: Annotated[
        list[str] | None, typer.Argument(help="products to sync; default: every product with a replica")
    ] = None,
    full: Annotated[bool, typer.Option(help="copy every row again instead of only changed ones")] = False,
) -> None:
    """Bring products' analytical replicas in step with their sources (incremental where the contract says so)."""
    reports = sync_workspace(state(ctx).settings, products or [], full=full)
    table = Table("product", "mode", "rows", "copied", "deleted", "seconds", "as_of")
    for r in reports:
        table.add_row(
            r.product,
            r.mode,
            str(r.rows),
            str(r.changed),
            str(r.deleted),
            f"{r.seconds:.2f}",
            f"{r.as_of:%Y-%m-%d %H:%M:%S} UTC",
        )
    console.print(table if reports else "no product declares replicas: nothing to sync")


def replicas(ctx: typer.Context) -> None:
    """The replicas of every product: its analytical replica and its search index, their age, rows and last run."""
    settings = state(ctx).settings

    async def run() -> Table:
        async with DataProductsService.open(settings) as service:
            every = await anyio.to_thread.run_sync(service.registry.list_contracts)
            table = Table("product", "store", "max_lag", "as_of", "age", "rows", "last run")
            now = datetime.now(UTC)
            for contract in every:
                replica = contract.replicas.analytical if contract.replicas else None
                if replica is None:
                    continue
                current = await service.replicas.current(contract.name)
                history = await anyio.to_thread.run_sync(service.replicas.log.history, contract.name)
                last = history[0] if history else None
                last_text = (
                    "never"
                    if last is None
                    else f"{last.status} {last.mode}" + (f": {last.message}" if last.message else "")
                )
                if current is None or current.as_of is None:
                    table.add_row(contract.name, "duckdb", replica.max_lag, "-", "-", "-", last_text)
                    continue
                age = format_age(max((now - current.as_of).total_seconds(), 0.0))
                table.add_row(
                    contract.name,
                    current.store,
                    replica.max_lag,
                    f"{current.as_of:%Y-%m-%d %H:%M:%S}",
                    age,
                    str(current.rows),
                    last_text,
                )
            for row in await search_index_rows(service, every, now):
                table.add_row(*row)
            return table

    console.print(run_async(run))
