"""The flow the SQLAlchemy Core connectors share (:mod:`connectors.sqlite`, :mod:`connectors.postgresql`).

:class:`SQLAlchemyConnector` runs every call in a worker thread on one pooled connection, inside the
store's read-only transaction with a time budget, and maps driver errors in one place
(:meth:`SQLAlchemyConnector._session`). Each store fills in small hooks: how a transaction begins
and is bounded in time, how its driver's errors read (timeout, unreachable, a hint for the caller),
how one statement runs, where its tables and columns are listed, and how a governed statement runs
behind its wall. Engine and wall are built by each store's constructor.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlglot import exp

from catalog.errors import (
    ConfigError,
    ConnectorError,
    ConnectorUnavailableError,
    QueryExecutionError,
    QueryTimeoutError,
)
from catalog.query import Limits, RowSet
from connectors._common import Deadline, driver_message, timeout_message, unknown_table
from connectors.base import ConnectionConfig, Connector, IntrospectedColumn, Prepared, TableSchema

T = TypeVar("T")

__all__ = ["INTROSPECT_TIMEOUT_S", "FoundColumns", "SQLAlchemyConnector"]

INTROSPECT_TIMEOUT_S = 60.0

#: What :meth:`SQLAlchemyConnector._columns` finds for a table: its quoted name, columns and primary key.
FoundColumns = tuple[str, list[IntrospectedColumn], list[str]]


class SQLAlchemyConnector(Connector):
    """A store reached through a SQLAlchemy engine; subclasses serve one ``kind`` each.

    A subclass sets ``kind``, ``dialect``, ``capabilities`` and :attr:`assets_sql`, builds
    ``self._engine`` (and its wall) in ``__init__`` after calling this one, and fills in the hooks.
    """

    #: Driver exceptions :meth:`_session` maps to connector errors (besides SQLAlchemy's own).
    driver_errors: ClassVar[tuple[type[Exception], ...]] = (sa_exc.DBAPIError,)
    #: One column of names: the tables and views this connection can read.
    assets_sql: ClassVar[str]

    _engine: sa.Engine

    def __init__(self, config: ConnectionConfig) -> None:
        """Raises:
        ConfigError: the config is of another kind.
        """
        super().__init__(config)
        if config.kind != self.kind:
            raise ConfigError(f"{type(self).__name__} serves kinds {[self.kind]}, not {config.kind!r}")
        self._lock = threading.Lock()
        self._closed = False

    # -- hooks ---------------------------------------------------------------------------------

    def _connect(self) -> sa.Connection:
        """A pooled connection (a store may first check that it can be reached at all)."""
        return self._engine.connect()

    @abc.abstractmethod
    def _transaction(
        self, conn: sa.Connection, deadline: Deadline, governed: Prepared | None
    ) -> AbstractContextManager[None]:
        """The call's read-only transaction on ``conn``, cut off at ``deadline``; for a ``governed``
        statement, the transaction its wall needs."""

    @abc.abstractmethod
    def _is_timeout(self, orig: BaseException | None, deadline: Deadline) -> bool:
        """The driver error says the statement was cancelled for running out of time."""

    @abc.abstractmethod
    def _is_unreachable(self, exc: Exception, orig: BaseException | None) -> bool:
        """The driver error says the store cannot be opened or reached (not that it refused a statement)."""

    @abc.abstractmethod
    def _hint(self, orig: BaseException | None) -> str:
        """A parenthesised hint at what would work, appended to a refusal (or nothing)."""

    @abc.abstractmethod
    def _run(self, conn: sa.Connection, sql: str, limits: Limits, deadline: Deadline) -> RowSet:
        """Run one rendered statement and fetch its rows under ``limits``."""

    @abc.abstractmethod
    def _execute_governed_sync(self, prepared: Prepared, limits: Limits) -> RowSet:
        """Run a prepared statement behind the store's wall (in a :meth:`_session`)."""

    @abc.abstractmethod
    def _columns(self, conn: sa.Connection, table: str) -> FoundColumns | None:
        """The table's quoted name, columns and primary key; None when there is no such table or view."""

    # -- the one place driver errors are mapped ------------------------------------------------

    @contextmanager
    def _session(self, timeout_s: float, governed: Prepared | None = None) -> Iterator[tuple[sa.Connection, Deadline]]:
        """A connection inside a read-only transaction with a time budget; always rolled back.

        Raises:
            ConnectorUnavailableError: the store cannot be opened or reached.
            QueryTimeoutError: the time budget ran out.
            QueryExecutionError: the store rejected a statement.
        """
        if self._closed:
            raise ConnectorUnavailableError(f"connection {self.name!r} is closed")
        deadline = Deadline(timeout_s)
        try:
            with self._connect() as conn:
                try:
                    with self._transaction(conn, deadline, governed):
                        yield conn, deadline
                finally:
                    conn.rollback()
        except ConnectorError:
            raise
        except self.driver_errors as exc:
            orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
            message = driver_message(orig)
            if self._is_timeout(orig, deadline):
                raise QueryTimeoutError(timeout_message(timeout_s), orig=orig) from exc
            if self._is_unreachable(exc, orig):
                raise ConnectorUnavailableError(
                    f"cannot reach {self.name!r}: {message}; nothing was served, retry once it is back", orig=orig
                ) from exc
            raise QueryExecutionError(
                f"{self.name!r} rejected the statement: {message}{self._hint(orig)}", orig=orig
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise QueryExecutionError(f"{self.name!r} failed: {driver_message(exc)}", orig=exc) from exc

    # -- the contract --------------------------------------------------------------------------

    async def _execute(self, statement: exp.Query | str | Prepared, limits: Limits, *, governed: bool) -> RowSet:
        if governed or isinstance(statement, Prepared):
            prepared = self.prepared(statement)
            return await anyio.to_thread.run_sync(self._execute_governed_sync, prepared, limits)
        sql = self.render(statement)
        return await anyio.to_thread.run_sync(self._execute_sync, sql, limits)

    async def _execute_then(self, prepared: Prepared, limits: Limits, then: Callable[[RowSet], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: then(self._execute_governed_sync(prepared, limits)))

    def _execute_sync(self, sql: str, limits: Limits) -> RowSet:
        with self._session(limits.timeout_s) as (conn, deadline):
            return self._run(conn, sql, limits, deadline)

    def _driver_sql(self, sql: str) -> str:
        """Rendered SQL as the driver must receive it: psycopg (``pyformat``) reads a bare ``%`` as a placeholder."""
        return sql.replace("%", "%%") if self._engine.dialect.paramstyle in ("pyformat", "format") else sql

    async def list_assets(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._list_assets_sync)

    def _list_assets_sync(self) -> list[str]:
        with self._session(INTROSPECT_TIMEOUT_S) as (conn, _):
            return self._assets(conn)

    def _assets(self, conn: sa.Connection) -> list[str]:
        return sorted(str(name) for (name,) in conn.exec_driver_sql(self.assets_sql))

    async def introspect(self, table: str) -> TableSchema:
        return await anyio.to_thread.run_sync(self._introspect_sync, table)

    def _introspect_sync(self, table: str) -> TableSchema:
        with self._session(INTROSPECT_TIMEOUT_S) as (conn, _):
            found = self._columns(conn, table)
            if found is None:
                raise unknown_table(self.name, table, self._assets(conn))
            quoted, columns, primary_key = found
            count = conn.exec_driver_sql(self._driver_sql(f"SELECT count(*) FROM {quoted}")).scalar_one()
        return TableSchema(table=table, columns=columns, primary_key=primary_key, row_count=int(count))

    async def aclose(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        await anyio.to_thread.run_sync(self._engine.dispose)
