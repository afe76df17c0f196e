"""The quality and freshness use cases of :class:`~servers.service.DataProductsService`.

A mixin, so that these use cases live beside each other and apart from the read use cases that call
their hook: :meth:`QualityUseCases.read_trust` is what every read calls inside its audited call (see
:mod:`servers.trust`), :meth:`~QualityUseCases.run_checks` runs the contracts' checks as the operator
(:mod:`servers.quality`), :meth:`~QualityUseCases.get_quality` shows the results to a reader, and
:meth:`~QualityUseCases.checks_on_schedule` runs the checks while a server serves.

Checks and freshness measurements read as :data:`OPERATOR`: the product's *source*, without any
principal's row filters or masks. Their SQL is guarded like ``run_sql`` and runs under the
configured limits; only counts, the newest timestamp and verdicts are kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError, NotFoundError
from catalog.freshness import freshness_sql
from catalog.policy import GovernedView
from catalog.principal import Principal
from catalog.quality_log import CheckResult
from catalog.query import RowSet
from catalog.sqlguard import connection_of, parse_product_sql
from servers._audit_trail import CallStats, audited_call
from servers.prometheus_metrics import counted_run
from servers.quality import checking_forever, run_contract_checks
from servers.results import (
    ProductSummary,
    QualityResult,
    as_json,
    check_info,
    freshness_info,
    owner_text,
    summarize,
)
from servers.trust import ReadTrust, utc_now

if TYPE_CHECKING:
    from catalog.audit import AuditLog
    from catalog.compiler import Compiler
    from catalog.quality_log import QualityLog
    from catalog.registry import Registry
    from connectors.base import Connector
    from servers.settings import Settings
    from servers.trust import TrustKeeper

__all__ = ["OPERATOR", "QualityUseCases"]

#: The principal quality checks and freshness measurements read as: the product's ungoverned source.
OPERATOR = Principal(name="dataproducts-checker", roles=frozenset({"operator"}))


class QualityUseCases:
    """Quality checks, freshness and the trust of reads, over the service's registry and connectors."""

    if TYPE_CHECKING:  # provided by DataProductsService
        settings: Settings
        registry: Registry
        audit: AuditLog
        quality: QualityLog
        trust: TrustKeeper

        async def contract(self, name: str) -> ProductContract: ...
        async def connector(self, name: str) -> Connector: ...
        def compiler(self, connector: Connector) -> Compiler: ...
        async def _view(self, name: str, principal: Principal) -> GovernedView: ...

    async def read_trust(self, contracts: Iterable[ProductContract]) -> ReadTrust:
        """The freshness blocks and warnings of one read over ``contracts``: the hook every read use case
        (metrics tools too) calls inside its audited call, before it runs its statement, then
        ``trust.apply(result)`` on a result with ``freshness`` and ``warnings`` fields.

        Freshness is measured at most once per ``freshness.cache_s`` per product (see :mod:`servers.trust`).

        Raises:
            StaleDataError: a product is stale and its contract says ``sla.on_stale: refuse``.
        """
        return await self.trust.gate(contracts)

    async def measure_as_of(self, contract: ProductContract) -> object:
        """Measure the product's ``as_of`` now (uncached): the first value of :func:`catalog.freshness.freshness_sql`,
        run as the operator; None when the contract says nothing to measure or the product has no rows.

        Raises:
            SQLRefusedError: ``sla.loaded_at`` is refused by the SQL guard. NotFoundError, ConnectorError.
        """
        sql = freshness_sql(contract)
        if sql is None:
            return None
        rowset = await self._operator_rows(sql)
        return rowset.rows[0][0] if rowset.rows and rowset.rows[0] else None

    @counted_run("check")
    async def run_checks(self, products: Sequence[str] | None = None) -> list[CheckResult]:
        """Run the quality checks of ``products`` (default: every current product) and record each result.

        Checks read the products' ungoverned sources as the operator, each statement guarded like
        ``run_sql`` and bounded by the configured limits. An operator's use case: not audited.

        Raises:
            NotFoundError: a named product does not exist. InvalidRequestError: a check cannot be planned.
            ConnectorError: the results could not be recorded.
        """
        if products:
            contracts = [await self.contract(name) for name in products]
        else:
            contracts = await anyio.to_thread.run_sync(lambda: self.registry.list_contracts(include_deprecated=False))
        results: list[CheckResult] = []
        for contract in contracts:
            found = await run_contract_checks(contract, self._operator_rows, clock=utc_now)
            await anyio.to_thread.run_sync(lambda found=found: self.quality.record(found))  # type: ignore[misc]
            self.trust.forget(contract.name)
            results.extend(found)
        return results

    @asynccontextmanager
    async def checks_on_schedule(self) -> AsyncIterator[None]:
        """While inside, run every product's checks each ``checks.every`` (nothing when unset)."""
        interval = self.settings.checks.interval_s
        if interval is None:
            yield
            return
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(checking_forever, self.run_checks, interval)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    async def get_quality(self, principal: Principal, name: str, *, history: int = 20) -> QualityResult:
        """Latest check results, recent runs and freshness of a product the principal may read (audited).

        Raises:
            NotFoundError, AccessDeniedError.
        """

        async def run(stats: CallStats) -> QualityResult:
            stats.product = name
            contract = (await self._view(name, principal)).contract
            latest = await anyio.to_thread.run_sync(lambda: self.quality.latest(name, version=contract.version))
            recent = await anyio.to_thread.run_sync(lambda: self.quality.history(name, limit=history))
            stats.rows = len(latest)
            return QualityResult(
                product=name,
                version=contract.version,
                owner=owner_text(contract),
                freshness=as_json(freshness_info(await self.trust.freshness(contract))),
                checks=[as_json(check_info(r)) for r in latest],
                history=[as_json(check_info(r)) for r in recent],
            )

        return await audited_call(self.audit, principal, "get_quality", {"product": name, "history": history}, run)

    async def _trusted_summary(self, contract: ProductContract) -> ProductSummary:
        """A search listing of ``contract`` with its owner, freshness state and latest checks."""
        summary = summarize(contract)
        summary.owner = owner_text(contract)
        summary.freshness = (await self.trust.freshness(contract)).state
        latest = await self.trust.latest_checks(contract)
        failing = [r for r in latest if r.status in ("fail", "warn")]
        if not latest:
            summary.quality = "unchecked"
        elif failing:
            since = min(r.since or r.checked_at for r in failing)
            names = ", ".join(r.check_name for r in failing)
            summary.quality = f"failing: {names} since {since:%Y-%m-%d %H:%M} UTC"
        else:
            since = min(r.since or r.checked_at for r in latest)
            summary.quality = f"passing since {since:%Y-%m-%d %H:%M} UTC"
        return summary

    async def _operator_rows(self, sql: str) -> RowSet:
        """Run ``sql`` (generic SQL over product names) as the operator: guarded like ``run_sql``, rewritten
        onto the products' ungoverned sources, under the configured limits.

        Raises:
            SQLRefusedError, NotFoundError, InvalidRequestError, ConnectorError.
        """
        parsed = await anyio.to_thread.run_sync(lambda: parse_product_sql(sql, limits=self.settings.limits))
        views = {}
        for name in parsed.products:
            try:
                views[name] = GovernedView(contract=await self.contract(name), principal=OPERATOR)
            except NotFoundError:  # no suggestions: check results are shown to readers of the product
                raise InvalidRequestError(f"the statement reads {name!r}, which is not a registered product") from None
        connector = await self.connector(connection_of(views))
        compiler = self.compiler(connector)
        return await connector.execute(await anyio.to_thread.run_sync(lambda: compiler.rewrite(parsed, views)))
