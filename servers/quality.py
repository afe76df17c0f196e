"""Running a product's quality checks: plan each check, run it as the operator, judge and record it.

:func:`run_contract_checks` is the body of :meth:`~servers.service.DataProductsService.run_checks`:
each check of :func:`catalog.checks.plan_checks` runs through ``run`` — the service's operator read,
which guards the statement like ``run_sql`` and rewrites it onto the product's *ungoverned* source
under the configured limits — and becomes one :class:`~catalog.quality_log.CheckResult`. A check
that cannot run (store down, a refused ``sql`` check, a timeout) is recorded as ``error`` with the
reason; the other checks still run. :func:`checking_forever` repeats a run on an interval, for
``dataproducts check --every`` and ``serve`` with ``checks: {every: …}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio

from catalog.checks import judge, plan_checks
from catalog.contract import ProductContract
from catalog.errors import DataProductsError
from catalog.quality_log import CheckResult
from catalog.query import RowSet

__all__ = ["checking_forever", "run_contract_checks"]

log = logging.getLogger(__name__)


async def run_contract_checks(
    contract: ProductContract, run: Callable[[str], Awaitable[RowSet]], *, clock: Callable[[], datetime]
) -> list[CheckResult]:
    """Every check of ``contract`` run once through ``run(sql)``, in contract order.

    Raises:
        InvalidRequestError: a check cannot be planned (an accepted value that is no plain value).
    """
    results = []
    for plan in plan_checks(contract):
        started = time.perf_counter()
        rows_scanned: int | None = None
        try:
            rowset = await run(plan.sql)
            row = dict(zip(rowset.columns, rowset.rows[0], strict=True)) if rowset.rows else {}
            scanned = row.get("rows_scanned")
            rows_scanned = None if scanned is None else int(scanned)
            verdict = judge(plan, row.get("observed"), now=clock())
            status, observed, message = verdict.status, verdict.observed, verdict.message
        except DataProductsError as exc:
            status, observed, message = "error", None, f"{exc.code}: {exc.message}"
        results.append(
            CheckResult(
                product=contract.name,
                version=contract.version,
                check_index=plan.index,
                check_name=plan.name,
                kind=plan.check.check,
                severity=plan.check.severity,
                status=status,
                observed=observed,
                threshold=plan.threshold,
                message=message,
                rows_scanned=rows_scanned,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                checked_at=clock(),
            )
        )
    return results


async def checking_forever(
    run_once: Callable[[], Awaitable[list[CheckResult]]],
    interval_s: float,
    *,
    on_results: Callable[[list[CheckResult]], None] | None = None,
) -> None:
    """Run ``run_once`` now and then every ``interval_s`` seconds until cancelled.

    A run that fails as a whole (the registry is unreachable) is logged and tried again next time.
    """
    while True:
        started = time.monotonic()
        try:
            results = await run_once()
        except DataProductsError as exc:
            log.warning("scheduled quality checks failed: %s", exc.message)
        else:
            failing = sum(r.status in ("fail", "error") for r in results)
            log.info("quality checks: %d run, %d failing or in error", len(results), failing)
            if on_results is not None:
                on_results(results)
        await anyio.sleep(max(interval_s - (time.monotonic() - started), 0.0))
