"""One compiler per connection: every governed statement of that store is built here.

A :class:`Compiler` holds what every statement for one connection needs — the store's sqlglot
dialect, the salt of hash masks and the limits of a call — so that no caller passes them around.
Its products are all :class:`~catalog.governed_source.GovernedStatement`\\ s that carry their own limits
(``max_rows`` rows for the caller, one more fetched to tell whether more exist), so every caller runs
one the same way::

    compiler = Compiler(connector.dialect, hash_salt=salt, limits=settings.limits)
    rowset = await connector.execute(compiler.compile(view, query))        # query_product
    rowset = await connector.execute(compiler.rewrite(parsed, views))      # run_sql
    rowset = await connector.execute(compiler.metrics(request, views))     # query_metrics

:func:`~catalog.compile.compile_query` and :func:`~catalog.sqlguard.rewrite_sql` stay the pure
functions underneath.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from catalog.compile import CompiledQuery, compile_query
from catalog.governed_source import GovernedStatement
from catalog.metric_query import MetricsRequest
from catalog.metrics import CompiledMetrics, compile_metrics
from catalog.policy import GovernedView
from catalog.query import Limits, Query
from catalog.sqlguard import ParsedSQL, rewrite_sql

__all__ = ["Compiler"]


@dataclass(frozen=True)
class Compiler:
    """Builds the governed statements of one connection (its dialect, the mask salt, a call's limits)."""

    dialect: str
    hash_salt: str
    limits: Limits = Limits()

    def bounded(self, **limits: Any) -> Compiler:
        """This compiler under other limits (``compiler.bounded(max_rows=5000)``)."""
        return replace(self, limits=self.limits.model_copy(update=limits))

    def compile(self, view: GovernedView, query: Query, *, parameters: bool = False) -> CompiledQuery:
        """``query`` over the governed source of ``view`` (see :func:`catalog.compile.compile_query`);
        with ``parameters``, filter values are placeholders (the statement serves its whole shape).

        Raises:
            InvalidRequestError: as :func:`~catalog.compile.compile_query`.
        """
        return compile_query(
            view, query, limits=self.limits, dialect=self.dialect, hash_salt=self.hash_salt, parameters=parameters
        )

    def rewrite(self, parsed: ParsedSQL, views: Mapping[str, GovernedView]) -> GovernedStatement:
        """``parsed`` with each product replaced by its governed source, in this store's dialect.

        Raises:
            InvalidRequestError, SQLRefusedError: as :func:`~catalog.sqlguard.rewrite_sql`.
        """
        statement = rewrite_sql(parsed, views, dialect=self.dialect, hash_salt=self.hash_salt, limits=self.limits)
        return GovernedStatement(statement, self.limits)

    def metrics(self, request: MetricsRequest, views: Mapping[str, GovernedView]) -> CompiledMetrics:
        """``request`` as one governed SELECT over the products of ``views`` (see :mod:`catalog.metrics`).

        Raises:
            InvalidRequestError: as :func:`~catalog.metrics.compile_metrics`.
        """
        return compile_metrics(request, views, limits=self.limits, dialect=self.dialect, hash_salt=self.hash_salt)
