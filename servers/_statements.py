"""A bounded cache of compiled, prepared statements, one per query shape.

Compiling a governed query, binding its governed source to the store's wall and rendering it cost
more than a point lookup on an indexed table. So a query is compiled with its filter values as
placeholders and the prepared statement is kept per (connection, product version, what the principal
may see, query shape, limits); a call of a known shape only checks its values and binds them (no
sqlglot). The key holds the governed view's decisions — masks, row filters, aggregate-only columns —
not the principal's name, so principals with the same view share entries and a policy change (a new
contract version) never reuses a stale one. The entry is the connector's
:class:`~connectors.base.Prepared` form, so a cached read still runs behind the store's wall.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from threading import Lock
from typing import Generic, TypeVar

from catalog.compile import CompiledQuery, query_shape, rebind
from catalog.compiler import Compiler
from catalog.metric_query import MetricsRequest
from catalog.metrics import CompiledMetrics
from catalog.policy import GovernedView
from catalog.query import Query
from connectors.base import Connector, Prepared

__all__ = ["MetricsStatementCache", "StatementCache"]

C = TypeVar("C")


class _LRU(Generic[C]):
    """Compiled statements and their prepared forms by key, least recently used dropped first; thread-safe.

    Two threads missing the same key may both build it; the entries are equal, the last one is kept.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[object, ...], tuple[C, Prepared]] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[object, ...], build: Callable[[], tuple[C, Prepared]]) -> tuple[C, Prepared]:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        entry = build()
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry


class StatementCache:
    """LRU of ``(CompiledQuery, Prepared)``; thread-safe."""

    def __init__(self, size: int = 512) -> None:
        self._lru: _LRU[CompiledQuery] = _LRU(size)

    def compiled(
        self, view: GovernedView, query: Query, *, compiler: Compiler, connector: Connector
    ) -> tuple[CompiledQuery, Prepared]:
        """The compiled query and its prepared form on ``connector`` (which runs it under the limits it
        carries), bound to ``query``'s values.

        Entries are kept per :func:`~catalog.compile.query_shape`: filter values are placeholders, so a
        lookup by another key reuses the statement, and only its values are checked and bound here.

        Raises:
            InvalidRequestError: as :meth:`catalog.compiler.Compiler.compile`.
            QueryExecutionError: as :meth:`connectors.base.Connector.prepare`.
        """
        contract = view.contract
        key = (
            connector.name,  # a prepared statement runs on the connection it was prepared for
            compiler.dialect,
            contract.name,
            contract.version,  # the registry refuses new content under a registered version
            tuple(sorted(view.masked.items())),
            tuple(view.row_filters),
            tuple(sorted(view.aggregate_only.items())),
            query_shape(query),
            compiler.limits,
        )
        built: list[CompiledQuery] = []

        def build() -> tuple[CompiledQuery, Prepared]:
            compiled = compiler.compile(view, query, parameters=True)
            built.append(compiled)
            return compiled, connector.prepare(compiled)

        compiled, prepared = self._lru.get(key, build)
        if built:  # compiled for this very query
            return compiled, prepared
        compiled = rebind(compiled, view, query)
        return compiled, prepared.bind(compiled.parameters)


class MetricsStatementCache:
    """LRU of ``(CompiledMetrics, Prepared)`` for repeated ``query_metrics`` calls; thread-safe.

    Keyed like :class:`StatementCache`: the connection, and for every product involved its contract
    version and the governed view's decisions (masks, row filters), never the principal's name.
    """

    def __init__(self, size: int = 256) -> None:
        self._lru: _LRU[CompiledMetrics] = _LRU(size)

    def compiled(
        self, request: MetricsRequest, views: Mapping[str, GovernedView], *, compiler: Compiler, connector: Connector
    ) -> tuple[CompiledMetrics, Prepared]:
        """The compiled request and its prepared form on ``connector``, from the cache when seen before.

        Raises:
            InvalidRequestError: as :meth:`catalog.compiler.Compiler.metrics`.
            QueryExecutionError: as :meth:`connectors.base.Connector.prepare`.
        """
        key = (
            connector.name,
            compiler.dialect,
            tuple(
                (
                    name,
                    v.contract.version,
                    tuple(sorted(v.masked.items())),
                    tuple(v.row_filters),
                    tuple(sorted(v.aggregate_only.items())),
                )
                for name, v in sorted(views.items())
            ),
            request.model_dump_json(),
            compiler.limits,
        )

        def build() -> tuple[CompiledMetrics, Prepared]:
            compiled = compiler.metrics(request, views)
            return compiled, connector.prepare(compiled)

        return self._lru.get(key, build)
