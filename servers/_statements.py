"""A bounded cache of compiled, prepared statements for repeated identical reads.

Compiling a governed query, binding its governed source to the store's wall and rendering it cost
about as much as a point lookup on an indexed table. Agents repeat reads (the same question, the same
first page), so the prepared statement is kept per (connection, product version, what the principal
may see, query, limits). The key holds the governed view's decisions — masks and row filters — not the
principal's name, so principals with the same view share entries and a policy change (a new contract
version) never reuses a stale one. The entry is the connector's :class:`~connectors.base.Prepared`
form, so a cached read still runs behind the store's wall.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from catalog.compile import CompiledQuery
from catalog.compiler import Compiler
from catalog.policy import GovernedView
from catalog.query import Query
from connectors.base import Connector, Prepared

__all__ = ["StatementCache"]


class StatementCache:
    """LRU of ``(CompiledQuery, Prepared)``; thread-safe."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[object, ...], tuple[CompiledQuery, Prepared]] = OrderedDict()
        self._lock = Lock()

    def compiled(
        self, view: GovernedView, query: Query, *, compiler: Compiler, connector: Connector
    ) -> tuple[CompiledQuery, Prepared]:
        """The compiled query and its prepared form on ``connector`` (which runs it under the limits it
        carries), from the cache when seen before.

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
            query.model_dump_json(),
            compiler.limits,
        )
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        compiled = compiler.compile(view, query)
        entry = (compiled, connector.prepare(compiled))
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry
