"""The replica use cases of :class:`~servers.service.DataProductsService`: ``sync_replicas`` and its schedule.

A mixin, like :mod:`servers.quality_cases`. ``sync_replicas`` is an operator's use case (the CLI's
``dataproducts sync``, and ``serve`` on each replica's ``sync.every``): it reads sources ungoverned
through the service's own connectors and compilers (:mod:`connectors.replica_sync`), so it is not
audited as a principal's read. Reads routed to a replica are audited by the read use cases as usual.

Replica files live under ``<workspace>/.dataproducts/replicas/<domain>__<product>/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from catalog.contract import ProductContract, parse_duration
from catalog.errors import DataProductsError
from catalog.replica_log import ReplicaSync
from connectors.replica_sync import ProgressCallback, SyncReport, replica_of, sync_replica
from servers.replica_router import ReplicaRoute

if TYPE_CHECKING:
    from catalog.compiler import Compiler
    from catalog.registry import Registry
    from connectors.base import Connector
    from servers.replica_router import ReplicaRouter
    from servers.settings import Settings

__all__ = ["SYNC_TICK_S", "ReplicaUseCases", "stamp"]

log = logging.getLogger(__name__)
#: Seconds between two looks at which replicas are due, while serving.
SYNC_TICK_S = 10.0


def stamp(route: ReplicaRoute, result: Any) -> Any:
    """Say on ``result`` which store answered, the state it answered from, and why it fell back."""
    as_of = route.as_of or datetime.now(UTC)  # the source answers with its state of now
    result.store = {"name": route.store, "as_of": as_of.isoformat()}
    if route.choice.fallback_reason:
        result.store["fallback_reason"] = route.choice.fallback_reason
    return result


class ReplicaUseCases:
    """Refreshing the analytical replicas of the registered products."""

    if TYPE_CHECKING:  # provided by DataProductsService
        settings: Settings
        registry: Registry
        replicas: ReplicaRouter

        async def contract(self, name: str) -> ProductContract: ...
        async def connector(self, name: str) -> Connector: ...
        def compiler(self, connector: Connector) -> Compiler: ...

    @property
    def replica_root(self) -> Path:
        """Where replica files are written."""
        return (self.settings.workspace / ".dataproducts" / "replicas").resolve()

    async def sync_replicas(
        self, products: Sequence[str] = (), *, full: bool = False, progress: ProgressCallback | None = None
    ) -> list[SyncReport]:
        """Refresh the replicas of ``products`` (default: every product declaring one), one after another.

        Raises:
            NotFoundError: an unknown product. InvalidRequestError: a named product has no replica.
            ContractError: schema drift. ConnectorError: a source or the registry failed.
        """
        if products:
            chosen = [await self.contract(name) for name in products]
            for contract in chosen:
                replica_of(contract)  # InvalidRequestError: says how to declare one
        else:
            every = await anyio.to_thread.run_sync(lambda: self.registry.list_contracts(include_deprecated=False))
            chosen = [c for c in every if c.replicas is not None and c.replicas.analytical is not None]
        reports = []
        for contract in chosen:
            source = await self.connector(contract.source.connection)
            report = await sync_replica(
                contract,
                source,
                self.compiler(source),
                self.replicas.log,
                self.replica_root,
                full=full,
                progress=progress,
            )
            self.replicas.forget(contract.name)
            reports.append(report)
        return reports

    async def due_replicas(self) -> list[str]:
        """Products whose replica declares ``sync.every`` and whose last run is at least that old."""
        every = await anyio.to_thread.run_sync(lambda: self.registry.list_contracts(include_deprecated=False))
        now = datetime.now(UTC)
        due = []
        for contract in every:
            replica = contract.replicas.analytical if contract.replicas else None
            if replica is None or replica.sync is None:
                continue
            last = await anyio.to_thread.run_sync(self._last_run, contract.name)
            interval = parse_duration(replica.sync.every)
            if not last or (now - last[0].synced_at) >= interval:
                due.append(contract.name)
        return due

    def _last_run(self, product: str) -> list[ReplicaSync]:
        return self.replicas.log.history(product, limit=1)

    async def sync_due_replicas(self) -> list[SyncReport]:
        """Sync each due replica; a failing one is logged (and recorded as failed) and the others go on."""
        reports = []
        for name in await self.due_replicas():
            try:
                reports += await self.sync_replicas([name])
            except DataProductsError as exc:
                log.warning("scheduled sync of %s failed: %s", name, exc.message)
        return reports

    @asynccontextmanager
    async def replicas_on_schedule(self, *, tick_s: float = SYNC_TICK_S) -> AsyncIterator[None]:
        """While inside, sync each replica whose contract says ``sync: {every: ...}`` when it is due."""

        async def forever() -> None:
            while True:
                started = time.monotonic()
                try:
                    await self.sync_due_replicas()
                except DataProductsError as exc:  # the registry is down: try again next tick
                    log.warning("scheduled replica syncs failed: %s", exc.message)
                except Exception:  # a background schedule never takes the server down with it
                    log.exception("scheduled replica syncs failed")
                await anyio.sleep(max(tick_s - (time.monotonic() - started), 0.0))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forever)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
