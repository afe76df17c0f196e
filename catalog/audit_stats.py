"""Audit statistics: calls per principal, product, tool and outcome over a window, counted by the database.

One ``GROUP BY`` over the audit table (``dp_audit``), SQLite or PostgreSQL alike: the rows never
come to Python, only one row per group, so a window of millions of calls costs one indexed scan
(``ix_dp_audit_time``). Used by ``dataproducts audit --stats``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from catalog._registry_tables import audit
from catalog.audit import AuditLog, Outcome
from catalog.errors import AuditError

__all__ = ["AuditStat", "audit_stats"]


class AuditStat(BaseModel):
    """The calls of one principal to one tool about one product that ended one way, over the window."""

    model_config = ConfigDict(frozen=True)

    principal: str
    product: str | None
    tool: str
    outcome: Outcome
    calls: int
    rows: int  # rows (or hits) returned, summed
    avg_ms: float
    max_ms: float
    first: AwareDatetime
    last: AwareDatetime


def audit_stats(
    log: AuditLog,
    *,
    since: datetime,
    until: datetime | None = None,
    principal: str | None = None,
    tool: str | None = None,
    product: str | None = None,
    outcome: Outcome | None = None,
) -> list[AuditStat]:
    """One :class:`AuditStat` per (principal, product, tool, outcome) with calls in ``[since, until)``,
    most calls first, narrowed by every filter given.

    Raises:
        ValueError: ``since`` or ``until`` is a naive datetime, or ``until`` is not after ``since``.
        AuditError: the audit table cannot be read.
    """
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware, e.g. datetime.now(UTC) - timedelta(hours=24)")
    if until is not None and until <= since:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    keys = (audit.c.principal, audit.c.product, audit.c.tool, audit.c.outcome)
    query = select(
        *keys,
        func.count().label("calls"),
        func.coalesce(func.sum(audit.c.rows), 0).label("rows"),
        func.avg(audit.c.latency_ms).label("avg_ms"),
        func.max(audit.c.latency_ms).label("max_ms"),
        func.min(audit.c.time).label("first"),
        func.max(audit.c.time).label("last"),
    ).where(audit.c.time >= since)
    if until is not None:
        query = query.where(audit.c.time < until)
    for column, value in zip(keys, (principal, product, tool, outcome), strict=True):
        if value is not None:
            query = query.where(column == value)
    query = query.group_by(*keys).order_by(func.count().desc(), *keys)
    try:
        with log.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
    except SQLAlchemyError as exc:
        raise AuditError(f"could not read the audit log: {exc}") from exc
    return [AuditStat.model_validate(dict(row)) for row in rows]
