"""The router's I/O: the current run of each product's replica, and an open connector per replica file.

:func:`catalog.replica_route.choose_store` decides; this module feeds it the replica's current run
(read from the registry, cached for ``cache_s`` seconds so a read costs no registry round trip) and
opens the replica's file read-only through the DuckDB connector — with its driver-level guardrails
(read-only, no external access, locked configuration). Each generation gets its own connector, named
after the file, so statements prepared for one generation never run on another; a connector is
closed once a newer generation has replaced it and the one before (readers of the previous one finish).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
from sqlglot import exp

from catalog.errors import InvalidRequestError
from catalog.policy import GovernedView
from catalog.replica_log import ReplicaLog, ReplicaSync
from catalog.replica_route import REPLICA_TABLE, StoreChoice, choose_store, replica_view
from catalog.sqlguard import ParsedSQL
from connectors.base import Connector
from connectors.duckdb_replicas import DuckDBReplicaSet, replica_catalog

__all__ = ["ReplicaRoute", "ReplicaRouter"]

#: Generations of connectors kept open per product (the current one and the one before).
KEEP_OPEN = 2
#: Engines over several replicas kept open (one per set of replica files read together).
KEEP_SETS = 8


@dataclass(frozen=True)
class ReplicaRoute:
    """A routed read: the store's ``choice``, and for the replica its connector and view."""

    choice: StoreChoice
    connector: Connector | None = None
    view: GovernedView | None = None
    #: Several products read together from their replicas (``run_sql`` across stores): their views.
    views: dict[str, GovernedView] | None = None

    @property
    def store(self) -> str:
        return self.choice.store

    @property
    def as_of(self) -> datetime | None:
        return self.choice.run.as_of if self.choice.store == "replica" and self.choice.run else None


class ReplicaRouter:
    """Routes reads between sources and replicas; close with :meth:`aclose`."""

    def __init__(
        self,
        log: ReplicaLog,
        *,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log
        self._cache_s = cache_s
        self._clock = clock
        self._now = now
        self._runs: dict[str, tuple[float, ReplicaSync | None]] = {}
        self._open: dict[str, OrderedDict[str, Connector]] = {}
        self._sets: OrderedDict[tuple[str, ...], Connector] = OrderedDict()
        self._lock = anyio.Lock()

    def forget(self, product: str) -> None:
        """Drop the cached run of ``product`` (after a sync in this process)."""
        self._runs.pop(product, None)

    async def current(self, product: str) -> ReplicaSync | None:
        """The product's current replica run (cached for ``cache_s`` seconds)."""
        at = self._clock()
        cached = self._runs.get(product)
        if cached is not None and at - cached[0] < self._cache_s:
            return cached[1]
        run = await anyio.to_thread.run_sync(self.log.current, product)
        self._runs[product] = (at, run)
        return run

    async def route(self, view: GovernedView, *, aggregate: bool) -> ReplicaRoute:
        """Where ``view``'s read goes, with the replica's connector and view when it is the replica."""
        contract = view.contract
        if contract.replicas is None or contract.replicas.analytical is None or not aggregate:
            return ReplicaRoute(choose_store(view, None, aggregate=aggregate, now=self._now()))
        run = await self.current(contract.name)
        exists = run is not None and run.path is not None and Path(run.path).is_file()
        choice = choose_store(view, run, aggregate=True, now=self._now(), file_exists=exists)
        if choice.store != "replica" or run is None or run.path is None:
            return ReplicaRoute(choice)
        connector = await self._connector(contract.name, run.path)
        table = f"{replica_catalog(contract.name)}.{REPLICA_TABLE}"
        return ReplicaRoute(choice, connector, replica_view(view, connection=connector.name, table=table))

    async def route_many(self, views: Mapping[str, GovernedView]) -> ReplicaRoute:
        """Several products read by one statement: all of them from their replicas, attached to one DuckDB
        engine, when every one is fresh (as for an aggregate); else the source, with the first reason."""
        runs: dict[str, ReplicaSync] = {}
        for name, view in views.items():
            route = await self.route(view, aggregate=True)
            if route.choice.store != "replica" or route.choice.run is None:
                reason = route.choice.fallback_reason or f"answered by the source: {name} declares no replica"
                return ReplicaRoute(StoreChoice("source", None, reason))
            runs[name] = route.choice.run
        files = {replica_catalog(name): run.path or "" for name, run in runs.items()}
        key = tuple(sorted(files.values()))
        async with self._lock:
            connector = self._sets.get(key)
            if connector is None:
                name = "replicas_" + hashlib.sha256("\n".join(key).encode("utf-8")).hexdigest()[:16]
                connector = DuckDBReplicaSet(name, files)
                self._sets[key] = connector
                while len(self._sets) > KEEP_SETS:
                    _, old = self._sets.popitem(last=False)
                    await old.aclose()
        on_replicas = {
            name: replica_view(view, connection=connector.name, table=f"{replica_catalog(name)}.{REPLICA_TABLE}")
            for name, view in views.items()
        }
        oldest = min(runs.values(), key=lambda run: run.as_of or datetime.max.replace(tzinfo=UTC))
        return ReplicaRoute(StoreChoice("replica", oldest), connector, None, on_replicas)

    async def route_sql(self, parsed: ParsedSQL, views: dict[str, GovernedView]) -> ReplicaRoute:
        """Where a ``run_sql`` statement runs: an aggregate (an aggregate function or GROUP BY) over one
        product goes to its replica when fresh; anything else to the source."""
        aggregate = parsed.statement.find(exp.AggFunc, exp.Group) is not None
        if len(views) == 1:
            (view,) = views.values()
            return await self.route(view, aggregate=aggregate)
        connections = sorted({v.contract.source.connection for v in views.values()})
        replicated = any(v.contract.replicas and v.contract.replicas.analytical for v in views.values())
        if len(connections) == 1 and not (aggregate and replicated):
            return ReplicaRoute(StoreChoice("source"))
        route = await self.route_many(views)
        if route.views is None and len(connections) > 1:
            raise InvalidRequestError(
                f"products {sorted(views)} live on different connections ({connections}) and are joined only "
                f"through fresh replicas of all of them; {route.choice.fallback_reason}"
            )
        return route

    async def _connector(self, product: str, path: str) -> Connector:
        async with self._lock:
            generations = self._open.setdefault(product, OrderedDict())
            connector = generations.get(path)
            if connector is None:
                name = "replica_" + hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]
                connector = DuckDBReplicaSet(name, {replica_catalog(product): path})
                generations[path] = connector
                while len(generations) > KEEP_OPEN:
                    _, old = generations.popitem(last=False)
                    await old.aclose()
            return connector

    async def aclose(self) -> None:
        async with self._lock:
            for generations in self._open.values():
                for connector in generations.values():
                    await connector.aclose()
            self._open.clear()
            for connector in self._sets.values():
                await connector.aclose()
            self._sets.clear()
