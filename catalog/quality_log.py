"""The quality log: every run of every quality check, kept in the registry's database.

One row per check run (table ``dp_check_results``): the product and the contract version the check
belongs to, the check (index in ``quality:``, name, kind, severity), how it ended (``pass``, ``warn``,
``fail`` or ``error``), what it observed against which threshold, how many rows it read and how long
it took. Rows are only ever added, so the log is also the history :meth:`QualityLog.history` shows;
:meth:`QualityLog.latest` reads the newest result of each check with the time its status began
(``since``), which is what the catalog shows next to a product.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from catalog._registry_tables import check_results, write_transaction
from catalog.checks import CheckStatus
from catalog.errors import ConnectorError
from catalog.registry import Registry

__all__ = ["CheckResult", "QualityLog"]


class CheckResult(BaseModel):
    """One run of one check."""

    product: str
    version: str
    check_index: int
    check_name: str
    kind: str
    severity: str = "error"
    status: CheckStatus
    observed: str | None = None
    threshold: str
    message: str
    rows_scanned: int | None = None
    duration_ms: float
    checked_at: AwareDatetime
    since: AwareDatetime | None = Field(default=None, description="when this status began (latest results only)")

    @property
    def failing(self) -> bool:
        """True unless the check passed."""
        return self.status != "pass"


class QualityLog:
    """Check results in the registry database; shares the registry's engine."""

    def __init__(self, store: Engine | Registry) -> None:
        self.engine = store.engine if isinstance(store, Registry) else store

    def record(self, results: Iterable[CheckResult]) -> None:
        """Write ``results`` in one transaction.

        Raises:
            ConnectorError: the registry database refused the write.
        """
        rows = [r.model_dump(exclude={"since"}) for r in results]
        if not rows:
            return
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(check_results.insert(), rows)
        except SQLAlchemyError as exc:
            raise ConnectorError(
                f"could not record check results in the registry: {type(exc).__name__}", orig=exc
            ) from exc

    def history(self, product: str, *, limit: int = 50) -> list[CheckResult]:
        """The newest ``limit`` results of ``product``'s checks, newest first."""
        query = (
            select(check_results)
            .where(check_results.c.product == product)
            .order_by(check_results.c.checked_at.desc(), check_results.c.id.desc())
            .limit(limit)
        )
        return self._read(query)

    def latest(self, product: str, *, version: str | None = None, depth: int = 500) -> list[CheckResult]:
        """The newest result of each check of ``product`` (of contract ``version`` when given), in check
        order, each with ``since``: the oldest run in the unbroken streak of its current status among
        the last ``depth`` runs."""
        query = select(check_results).where(check_results.c.product == product)
        if version is not None:
            query = query.where(check_results.c.version == version)
        query = query.order_by(check_results.c.checked_at.desc(), check_results.c.id.desc()).limit(depth)
        newest: dict[tuple[int, str], CheckResult] = {}
        broken: set[tuple[int, str]] = set()
        for result in self._read(query):
            key = (result.check_index, result.check_name)
            current = newest.get(key)
            if current is None:
                newest[key] = result.model_copy(update={"since": result.checked_at})
            elif key not in broken and result.status == current.status:
                current.since = result.checked_at
            else:
                broken.add(key)
        return sorted(newest.values(), key=lambda r: r.check_index)

    def _read(self, query: object) -> list[CheckResult]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()  # type: ignore[call-overload]
        except SQLAlchemyError as exc:
            raise ConnectorError(
                f"could not read check results from the registry: {type(exc).__name__}", orig=exc
            ) from exc
        return [CheckResult.model_validate(dict(row)) for row in rows]
