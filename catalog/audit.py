"""The audit log: one row per served request, in the registry's database.

A row says who asked (``principal``), what (``tool``, ``product``, a digest of the arguments), what it
read (``objects``: the physical tables or views the statement touched, when one ran), how it ended
(``outcome``, ``error_code``) and how much it returned (``rows``, ``bytes``). Refusals before any
statement ran have rows too: unknown tools, invalid arguments, HTTP 401s.

Writes fail closed: when a row cannot be written :meth:`AuditLog.record` raises
:class:`~catalog.errors.AuditError` and the caller must not return the result it was about to give.
Writes are group-committed (:mod:`catalog._group_commit`): the rows of concurrent calls are inserted
by one writer thread in one transaction, and each caller waits until the transaction holding its
row has committed. Async callers wait on :meth:`AuditLog.submit`'s future without holding a thread;
a caller already on a worker thread may :meth:`AuditLog.lead` instead, committing its row (and the
rows waiting then) in its own thread when no batch is being written. Batches run as one compiled
``INSERT`` on kept DBAPI connections (:mod:`catalog._audit_insert`).
Arguments are kept as a digest only (sha256 of their canonical JSON), never in clear.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from catalog._audit_insert import AuditInserter
from catalog._group_commit import GroupCommitter
from catalog._registry_errors import database_name, unavailable_reason
from catalog._registry_tables import audit, engine_for, metadata, utcnow, write_transaction
from catalog.errors import AuditError, AuditUnavailableError
from catalog.registry import Registry

__all__ = ["AuditLog", "AuditRecord", "Outcome", "digest_args"]

Outcome = Literal["ok", "error", "denied"]


def digest_args(args: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a call's arguments (sorted keys, no whitespace).

    Arguments too deeply nested to serialise get the digest of a fixed marker instead, so that a
    hostile argument can never keep its call from being audited.
    """
    try:
        text = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except (RecursionError, ValueError):
        text = '{"undigestable":true}'
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _clip(value: str | None, size: int) -> str | None:
    """Keep caller-chosen text (a tool or product name as asked) within its column."""
    if value is None or len(value) <= size:
        return value
    return value[: size - 1] + "…"


class AuditRecord(BaseModel):
    """One audited call."""

    model_config = ConfigDict(frozen=True)

    time: AwareDatetime = Field(default_factory=utcnow)
    principal: str = Field(min_length=1)
    tool: str = Field(min_length=1)
    product: str | None = None
    args_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    latency_ms: float = Field(ge=0)
    outcome: Outcome
    error_code: str | None = None
    objects: list[str] | None = None  # physical objects the statement touched; None when none ran
    id: int | None = None  # set when read back

    @field_validator("tool", mode="before")
    @classmethod
    def _clip_tool(cls, value: object) -> object:
        return _clip(value, 100) if isinstance(value, str) else value

    @field_validator("product", mode="before")
    @classmethod
    def _clip_product(cls, value: object) -> object:
        return _clip(value, 200) if isinstance(value, str) else value


class AuditLog:
    """Audit rows in the registry database (table ``dp_audit``)."""

    def __init__(self, store: Engine | Registry, *, owns_engine: bool = False) -> None:
        """Audit rows in ``store``: an engine, or a registry whose engine is shared (it keeps ownership)."""
        self.engine = store.engine if isinstance(store, Registry) else store
        self._owns_engine = owns_engine and not isinstance(store, Registry)
        self._inserter = AuditInserter(self.engine, audit, _COLUMNS)
        self._committer = GroupCommitter(
            self._insert,
            lambda rec, exc: _audit_error(self.engine, rec, exc),
            retry_alone=lambda exc: unavailable_reason(exc) is None,  # a database that is down fails them all
            name="dataproducts-audit-writer",
        )

    @classmethod
    def from_url(cls, url: str) -> AuditLog:
        """An audit log on a SQLAlchemy URL (or SQLite file path), table created or upgraded if needed."""
        log = cls(engine_for(url), owns_engine=True)
        with write_transaction(log.engine) as conn:
            metadata.create_all(conn, tables=[audit], checkfirst=True)  # upgrades an older table too
        return log

    @classmethod
    def from_registry(cls, registry: Registry) -> AuditLog:
        """An audit log sharing the registry's engine (the registry keeps ownership)."""
        return cls(registry)

    def close(self) -> None:
        """Write the pending rows, then dispose the engine when this log created it. Idempotent.

        Rows recorded after closing are still written, each in its own transaction.
        """
        self._committer.close()
        self._inserter.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def record(self, rec: AuditRecord) -> None:
        """Write one audit row; return once the transaction holding it has committed.

        Raises:
            AuditError: the row could not be written (the caller fails closed); ``__cause__`` is the
                database error. :class:`~catalog.errors.AuditUnavailableError` (code ``unavailable``) when
                the database is unreachable, locked or full: the same call may be retried.
        """
        self.submit(rec).result()

    def submit(self, rec: AuditRecord) -> Future[None]:
        """Queue one audit row for the next group commit; the future resolves once it has committed.

        The future fails with :class:`~catalog.errors.AuditError` when the row could not be written.
        """
        return self._committer.submit(rec)

    def lead(self, rec: AuditRecord) -> Future[None]:
        """Commit one audit row in this thread when no batch is being written, else queue it (:meth:`submit`).

        The future is already resolved when this thread wrote the row. Call it from a worker thread
        (it may wait for the database), never from the event loop.
        """
        return self._committer.lead(rec)

    @property
    def transactions(self) -> int:
        """How many write transactions this log has run (fewer than rows when rows were grouped)."""
        return self._committer.batches

    def _insert(self, records: Sequence[AuditRecord]) -> None:
        self._inserter.insert([rec.model_dump(exclude={"id"}) for rec in records])

    def query(
        self,
        principal: str | None = None,
        tool: str | None = None,
        product: str | None = None,
        outcome: Outcome | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit records matching every given filter, newest first, at most ``limit``.

        Raises:
            ValueError: ``since`` is a naive datetime, or ``limit`` is below 1.
            AuditError: the audit table cannot be read.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware, e.g. datetime.now(UTC) - timedelta(hours=1)")
        query = select(audit)
        for column, value in (
            (audit.c.principal, principal),
            (audit.c.tool, tool),
            (audit.c.product, product),
            (audit.c.outcome, outcome),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(audit.c.time >= since)
        query = query.order_by(audit.c.time.desc(), audit.c.id.desc()).limit(limit)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise AuditError(f"could not read the audit log: {exc}") from exc
        return [AuditRecord.model_validate(dict(row)) for row in rows]


_COLUMNS = [name for name in AuditRecord.model_fields if name != "id"]


def _audit_error(engine: Engine, rec: AuditRecord, exc: Exception) -> Exception:
    """The error a caller gets when its row did not commit (the database error becomes its cause):
    :class:`AuditUnavailableError` when the database is unreachable, locked or full."""
    unavailable = unavailable_reason(exc)
    if unavailable is not None:
        return AuditUnavailableError(
            f"could not write the audit record of {rec.tool} by {rec.principal}, so nothing was served: "
            f"the audit database {database_name(engine)} {unavailable}"
        )
    reason = _driver_reason(exc) if isinstance(exc, SQLAlchemyError) else type(exc).__name__
    return AuditError(
        f"could not write the audit record of {rec.tool} by {rec.principal} ({reason}); nothing was served"
    )


def _driver_reason(exc: SQLAlchemyError) -> str:
    """The first line of the driver's message: SQLAlchemy's full text echoes the statement and its values."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0][:200] if lines and not isinstance(orig, SQLAlchemyError) else type(orig).__name__
