"""The audit log's insert: SQL compiled once, run on kept DBAPI connections.

An audit row is the one write of every call, so its cost is paid per call. Running it through a
SQLAlchemy ``Connection`` (check out, begin, compile-cache lookup, parameter processing, commit) costs
several times the insert itself. :class:`AuditInserter` compiles the ``INSERT`` once for the engine's
dialect, keeps the type's bind processors (timestamps to UTC, the ``objects`` list to JSON), and runs
each batch with ``executemany`` on a DBAPI connection it keeps checked out of the engine's pool: one
per thread writing at the same moment (the writer thread, a leader), taken back after each batch.
They go back to the pool on :meth:`AuditInserter.close`, or are closed when the engine is disposed.

A batch that fails is rolled back; a connection the dialect sees as disconnected (or that fails to
roll back) is invalidated. A kept connection found lost before the commit was sent (the server
restarted while it sat idle) is replaced and the batch run again on a fresh one, as a pool's pre-ping
would have done; a batch whose commit was cut off is never sent twice. Driver errors are raised as
SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (parameters hidden), as an ``Engine`` would raise
them, so callers map them like any other registry failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from threading import Lock
from typing import Any

from sqlalchemy import Engine, Table, event
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.pool import PoolProxiedConnection

__all__ = ["AuditInserter"]


class AuditInserter:
    """Inserts batches of rows (mappings by column key) into ``table``, one transaction per batch; thread-safe."""

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str]) -> None:
        dialect = engine.dialect
        self._engine = engine
        compiled = table.insert().compile(dialect=dialect, column_keys=list(columns))
        self.sql = compiled.string
        self._order = list(compiled.positiontup or ()) if compiled.positional else None
        processors: dict[str, Callable[[Any], Any]] = {}
        for key in columns:
            processor = table.c[key].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[key] = processor
        self._processors = processors
        self._sqlite = dialect.name == "sqlite"
        self._idle: list[PoolProxiedConnection] = []
        self._lock = Lock()
        self._closed = False
        event.listen(engine, "engine_disposed", self._disposed)  # an engine closed by its owner takes them back

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` in one transaction; return once it has committed.

        Raises:
            DBAPIError: the driver's error (``connection_invalidated`` when the connection was lost).
            ValueError: a value its column's type refuses (a naive timestamp).
        """
        params = [self._params(row) for row in rows]
        if not self._attempt(params, kept=True):  # a kept connection was lost (a restarted server)
            self._attempt(params, kept=False)  # again on a fresh one, as a pool's pre-ping would

    def _attempt(self, params: list[Any], *, kept: bool) -> bool:
        """Run one batch; False when a kept connection turned out lost before the commit was sent."""
        dialect = self._engine.dialect
        with self._lock:
            conn = self._idle.pop() if kept and self._idle else None
        reused = conn is not None
        try:
            if conn is None:
                conn = self._engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(exc, lost=True) from exc
        stage: list[str] = []
        try:
            self._run(conn, params, stage)
        except Exception as exc:
            driver = isinstance(exc, dialect.loaded_dbapi.Error)
            lost = driver and dialect.is_disconnect(exc, conn.dbapi_connection, None)  # type: ignore[arg-type]
            self._discard_or_keep(conn, exc if lost else None)
            if lost and reused and stage != ["commit"]:
                return False
            if driver:
                raise self._wrapped(exc, lost=lost) from exc
            raise
        self._checkin(conn)
        return True

    def _wrapped(self, exc: Exception, *, lost: bool) -> StatementError:
        """The driver's error as an ``Engine`` raises it (parameters hidden)."""
        dialect = self._engine.dialect
        return DBAPIError.instance(
            self.sql,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=dialect,
            connection_invalidated=lost,
        )

    def close(self) -> None:
        """Give the kept connections back to the pool; later batches check out and give back their own."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _disposed(self, engine: Engine) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.invalidate()  # the pool they came from is gone: close them

    def _params(self, row: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        values = {key: (p(row[key]) if (p := self._processors.get(key)) else row[key]) for key in row}
        return [values[key] for key in self._order] if self._order is not None else values

    def _run(self, conn: PoolProxiedConnection, params: list[Any], stage: list[str]) -> None:
        cursor = conn.cursor()
        try:
            if self._sqlite:  # autocommit mode (see engine_for): the transaction is ours to open
                cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(self.sql, params)
            stage.append("commit")  # from here a lost connection may have committed: never sent again
            conn.commit()
        finally:
            cursor.close()

    def _checkout(self) -> PoolProxiedConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._engine.raw_connection()

    def _checkin(self, conn: PoolProxiedConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _discard_or_keep(self, conn: PoolProxiedConnection, lost: Exception | None) -> None:
        """After a failed batch: keep a connection that rolls back, invalidate one that was ``lost`` or does not."""
        if lost is None:
            try:
                conn.rollback()
            except Exception as exc:
                lost = exc
        if lost is not None:
            conn.invalidate(lost)
            return
        self._checkin(conn)
