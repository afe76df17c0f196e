"""The semantic-layer use cases of :class:`~servers.service.DataProductsService`: ``list_metrics`` and
``query_metrics``.

A mixin, like :mod:`servers.quality_cases`. Metrics compile to one governed statement per connection
(:mod:`catalog.metrics`), run through the same compiler, connectors, freshness gate and audit as every
other read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError
from catalog.metric_query import MetricsRequest
from catalog.metrics import explain_sql, fact_products, related_products
from catalog.policy import GovernedView, govern
from catalog.principal import Principal
from servers._audit_trail import CallStats, audited_call
from servers._call_facts import note_store
from servers._semantic import matches, metrics_result, product_metrics
from servers.results import MetricsListing, MetricsResult, deprecation_warning

if TYPE_CHECKING:
    from catalog.audit import AuditLog
    from catalog.compiler import Compiler
    from connectors.base import Connector
    from servers._statements import MetricsStatementCache
    from servers.trust import ReadTrust

__all__ = ["MetricsUseCases"]


class MetricsUseCases:
    """Metrics over the service's registry, connectors and compilers."""

    if TYPE_CHECKING:  # provided by DataProductsService
        audit: AuditLog
        _metric_statements: MetricsStatementCache

        async def contract(self, name: str) -> ProductContract: ...
        async def connector(self, name: str) -> Connector: ...
        def compiler(self, connector: Connector) -> Compiler: ...
        async def _view(self, name: str, principal: Principal) -> GovernedView: ...
        async def _readable_names(self, names: Iterable[str], principal: Principal) -> list[str]: ...
        async def readable_products(self, principal: Principal) -> list[ProductContract]: ...
        async def read_trust(self, contracts: Iterable[ProductContract]) -> ReadTrust: ...

    async def list_metrics(
        self, principal: Principal, *, query: str | None = None, product: str | None = None
    ) -> MetricsListing:
        """Metrics of the products the principal may read (or of ``product``), each product with the
        dimensions its metrics can be grouped by, own and via relationships to readable products.

        Raises:
            NotFoundError, AccessDeniedError (``product`` given).
        """

        async def run(stats: CallStats) -> MetricsListing:
            stats.product = product
            if product is not None:
                contracts = [(await self._view(product, principal)).contract]
            else:
                contracts = await self.readable_products(principal)
            listed = []
            for contract in (c for c in contracts if c.metrics):
                related = {}
                for rel in contract.relationships:
                    if rel.product in await self._readable_names([rel.product], principal):
                        related[rel.product] = await self.contract(rel.product)
                found = matches(product_metrics(contract, related), query)
                if found is not None:
                    listed.append(found)
            stats.rows = sum(len(p.metrics) for p in listed)
            return MetricsListing(products=listed)

        return await audited_call(self.audit, principal, "list_metrics", {"query": query, "product": product}, run)

    async def query_metrics(
        self, principal: Principal, request: MetricsRequest, *, explain: bool = False
    ) -> MetricsResult:
        """Metrics grouped by dimensions, as one governed, bounded statement on the metrics' connection.

        Governed and audited like ``query_product``: every product read (the metrics' and the related
        products' whose dimensions group them) goes through the principal's governed source.

        Raises:
            NotFoundError, AccessDeniedError, InvalidRequestError (also: metrics on different
            connections), ConnectorError.
        """

        async def run(stats: CallStats) -> MetricsResult:
            facts = fact_products(request)
            stats.product = ",".join(facts)
            views = {name: await self._view(name, principal) for name in facts}
            for name in related_products(request):  # named by a dimension: must be readable
                views[name] = await self._view(name, principal)
            connections = {v.contract.source.connection for v in views.values()}
            if len(connections) != 1:
                raise InvalidRequestError(
                    f"products {sorted(views)} live on different connections ({sorted(connections)}); one call "
                    "combines metrics and dimensions of one connection only: query them separately"
                )
            connection = connections.pop()
            for contract in [v.contract for v in views.values()]:  # for suggestions: the readable related ones
                for rel in contract.relationships:
                    if rel.product not in views and await self._readable_names([rel.product], principal):
                        related = await self.contract(rel.product)
                        if related.source.connection == connection:
                            views[rel.product] = govern(related, principal)
            connector = await self.connector(connection)
            note_store(connector.kind)
            compiled, prepared = self._metric_statements.compiled(
                request, views, compiler=self.compiler(connector), connector=connector
            )
            trust = await self.read_trust([views[name].contract for name in compiled.products])  # StaleDataError
            rowset = await connector.execute(prepared)
            result = metrics_result(compiled, rowset, request, views)
            if explain:
                result.sql = explain_sql(compiled, connector.dialect)
            for name in compiled.products:
                deprecation_warning(views[name], result)
            trust.apply(result)
            stats.product = ",".join(compiled.products)
            stats.rows, stats.bytes, stats.objects = result.row_count, rowset.bytes, rowset.objects
            return result

        args = {**request.model_dump(exclude_defaults=True), "explain": explain}
        return await audited_call(self.audit, principal, "query_metrics", args, run)
