"""A bounded cache of compiled, rendered statements for repeated identical reads.

Compiling a governed query and rendering it with sqlglot costs about as much as a point lookup on an
indexed table. Agents repeat reads (the same question, the same first page), so the rendered text is
kept per (product version, what the principal may see, query, dialect, limits). The key holds the
governed view's decisions — masks and row filters — not the principal's name, so principals with the
same view share entries and a policy change (a new contract version) never reuses a stale one.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from catalog.compile import CompiledQuery, compile_query
from catalog.policy import GovernedView
from catalog.query import Limits, Query

__all__ = ["StatementCache"]


class StatementCache:
    """LRU of ``(CompiledQuery, rendered SQL)``; thread-safe."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[object, ...], tuple[CompiledQuery, str]] = OrderedDict()
        self._lock = Lock()

    def compiled(
        self, view: GovernedView, query: Query, *, limits: Limits, dialect: str, hash_salt: str
    ) -> tuple[CompiledQuery, str]:
        """The compiled query and its SQL text in ``dialect``, from the cache when seen before.

        Raises:
            InvalidRequestError: as :func:`catalog.compile.compile_query`.
        """
        contract = view.contract
        key = (
            contract.name,
            contract.version,  # the registry refuses new content under a registered version
            tuple(sorted(view.masked.items())),
            tuple(view.row_filters),
            query.model_dump_json(),
            dialect,
            limits,
        )
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        compiled = compile_query(view, query, limits=limits, dialect=dialect, hash_salt=hash_salt)
        entry = (compiled, compiled.statement.sql(dialect=dialect))
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry
