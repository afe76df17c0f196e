"""The lineage use cases of :class:`~servers.service.DataProductsService`: ``get_lineage`` for a reader,
the ungoverned graph for operators (the CLI, breaking-change reports).

A mixin, like :mod:`servers.quality_cases`: the graph is built by :mod:`catalog.lineage` over the
latest registered contracts; a reader sees only the products it may read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread

from catalog.contract import ProductContract
from catalog.errors import ConfigError, InvalidRequestError
from catalog.lineage import Direction, LineageGraph, build_lineage
from catalog.policy import can_read
from catalog.principal import Principal
from servers._audit_trail import CallStats, audited_call
from servers.results import LineageResult, lineage_result

if TYPE_CHECKING:
    from catalog.audit import AuditLog
    from catalog.policy import GovernedView
    from catalog.registry import Registry
    from connectors.base import Connector

__all__ = ["MAX_LINEAGE_DEPTH", "LineageUseCases"]

MAX_LINEAGE_DEPTH = 10


class LineageUseCases:
    """Lineage over the service's registry and connectors.

    The graph of the latest built set of contract versions is kept: parsing every source query again
    on each call cost a page view of the catalog ~0.1 s.
    """

    _lineage_built: tuple[object, LineageGraph] | None = None

    if TYPE_CHECKING:  # provided by DataProductsService
        registry: Registry
        audit: AuditLog

        async def connector(self, name: str) -> Connector: ...
        async def _view(self, name: str, principal: Principal) -> GovernedView: ...

    async def get_lineage(
        self, principal: Principal, name: str, *, direction: Direction = "both", depth: int = 3
    ) -> LineageResult:
        """The products upstream and/or downstream of ``name`` within ``depth`` hops, with their edges.

        Only products the principal may read are nodes (the others are left out entirely, so the walk
        does not pass through them), and a physical table only as the source of such a product.

        Raises:
            NotFoundError, AccessDeniedError: as for describe_product. InvalidRequestError: bad direction or depth.
        """

        async def run(stats: CallStats) -> LineageResult:
            stats.product = name
            if direction not in ("upstream", "downstream", "both"):
                raise InvalidRequestError(f"direction {direction!r} is not one of upstream, downstream, both")
            if not 1 <= depth <= MAX_LINEAGE_DEPTH:
                raise InvalidRequestError(f"depth {depth} is out of range; use 1 to {MAX_LINEAGE_DEPTH}")
            await self._view(name, principal)
            contracts = await anyio.to_thread.run_sync(self.registry.list_contracts)
            readable = {c.name for c in contracts if can_read(c, principal)}
            graph = await self.lineage_graph(contracts)
            around = graph.restricted(readable.__contains__).around(name, direction, depth)
            stats.rows = len(around.nodes)
            return lineage_result(around)

        args = {"product": name, "direction": direction, "depth": depth}
        return await audited_call(self.audit, principal, "get_lineage", args, run)

    async def lineage_graph(self, contracts: list[ProductContract] | None = None) -> LineageGraph:
        """The lineage graph of ``contracts`` (default: every registered product), ungoverned.

        Source queries are read in their connection's dialect; a connection that is not configured is
        read in sqlglot's default dialect.
        """
        if contracts is None:
            contracts = await anyio.to_thread.run_sync(self.registry.list_contracts)
        dialects = {}
        for connection in {c.source.connection for c in contracts if c.source.query is not None}:
            try:
                dialects[connection] = (await self.connector(connection)).dialect
            except ConfigError:
                continue
        # A registered version never changes, so the versions (and dialects) read decide the graph.
        key = (tuple(sorted((c.name, c.version) for c in contracts)), tuple(sorted(dialects.items())))
        cached = self._lineage_built
        if cached is not None and cached[0] == key:
            return cached[1]
        chosen = contracts
        graph = await anyio.to_thread.run_sync(lambda: build_lineage(chosen, dialects=dialects))
        self._lineage_built = (key, graph)
        return graph
