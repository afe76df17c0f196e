"""PostgreSQL through SQLAlchemy Core and psycopg 3 (``kind: postgresql``), read-only at the driver level.

``postgresql://`` URLs are normalised to ``postgresql+psycopg://``. Sessions start with
``default_transaction_read_only=on``; every call runs in a ``READ ONLY`` transaction with
``SET LOCAL statement_timeout`` and is rolled back. Statements go over the extended protocol, so the
server accepts exactly one statement per call (nothing can be appended to it), without a
server-side cursor, which would rule out parallel plans. A superuser login drops to
``pg_read_all_data`` for the transaction (a read-only transaction does not stop a superuser's
``COPY ... TO PROGRAM`` or ``pg_read_file``); prefer a read-only role.

Governed statements (``execute(..., governed=True)``) run behind PostgreSQL's own wall: views that
only a NOLOGIN reader role may read, each bound to the statements it serves (:mod:`connectors._pg_wall`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy import exc as sa_exc
from sqlglot import exp

from catalog.contract import ColumnType
from catalog.errors import ConfigError, QueryExecutionError
from catalog.governed_source import GovernedMark
from catalog.query import Limits, RowSet
from connectors._common import Deadline, fetch_capped, neutral_type
from connectors._pg_wall import PostgresWall
from connectors._sqlalchemy import FoundColumns, SQLAlchemyConnector
from connectors.base import (
    Capabilities,
    ConnectionConfig,
    GovernedRelation,
    IntrospectedColumn,
    Prepared,
)

__all__ = ["PostgreSQLConnector"]

log = logging.getLogger(__name__)

_CANCELED = "57014"  # SQLSTATE query_canceled: statement_timeout ran out
_SYNTAX_ERROR = "42601"  # what the extended protocol answers to a second statement
_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, t.typcategory,
       array_position(i.indkey::int2[], a.attnum)  -- int2vector is 0-based; NULL: not in the key
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_CATEGORIES: dict[str, ColumnType] = {"A": "json", "B": "boolean", "C": "json", "D": "timestamp", "N": "decimal"}


class PostgreSQLConnector(SQLAlchemyConnector):
    """A PostgreSQL database (``url``), read in READ ONLY transactions."""

    kind = "postgresql"
    dialect = "postgres"
    capabilities = Capabilities(supports_store_governance=True)
    driver_errors: ClassVar[tuple[type[Exception], ...]] = (sa_exc.DBAPIError, psycopg.Error)
    assets_sql = (
        "SELECT CASE WHEN n.nspname = current_schema() THEN c.relname ELSE n.nspname || '.' || c.relname END"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND has_schema_privilege(n.oid, 'USAGE')"
        " AND n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'"
    )

    def __init__(self, config: ConnectionConfig) -> None:
        """Raises:
        ConfigError: another kind, no ``url`` or one of another database, or unusable wall ``options``.
        """
        super().__init__(config)
        self._superuser: bool | None = None  # learnt on first use
        self._engine = _read_only_engine(config)
        self._wall = PostgresWall(self.name, config.options)

    # -- session -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, conn: sa.Connection, deadline: Deadline, governed: Prepared | None) -> Iterator[None]:
        """The call's READ ONLY transaction, always rolled back. For a ``governed`` statement it runs
        as the reader role with the statement's view tokens (its missing views are created first)."""
        try:
            self._begin(conn, deadline.timeout_s, governed)
            yield
        finally:
            raw: Any = conn.connection.dbapi_connection
            if raw.info.transaction_status != pq.TransactionStatus.IDLE:  # a pipelined run rolled back already
                conn.exec_driver_sql("ROLLBACK")

    def _begin(self, conn: sa.Connection, timeout_s: float, governed: Prepared | None = None) -> None:
        """Open the call's READ ONLY transaction with its settings in one round trip (the engine is in
        autocommit mode, so the transaction is ours to begin and to roll back)."""
        if self._superuser is None:
            row = conn.exec_driver_sql(
                "SELECT rolsuper, current_setting('server_version_num')::int >= 140000"
                " FROM pg_roles WHERE rolname = current_user"
            ).one()
            self._superuser = bool(row[0])
            if self._superuser:
                log.warning("connection %r logs in as a PostgreSQL superuser; use a read-only role", self.name)
            if self._superuser and not row[1]:
                raise ConfigError(
                    f"connection {self.name!r}: a superuser login needs PostgreSQL 14+; use a read-only role"
                )
        if governed is not None:
            raw: Any = conn.connection.dbapi_connection
            self._wall.begin(raw, timeout_s, governed, superuser=self._superuser)
            return
        begin = f"BEGIN READ ONLY; SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}"
        if self._superuser:
            begin += "; SET LOCAL ROLE pg_read_all_data"
        conn.exec_driver_sql(begin)

    def _is_timeout(self, orig: BaseException | None, deadline: Deadline) -> bool:
        return getattr(orig, "sqlstate", None) == _CANCELED

    def _is_unreachable(self, exc: Exception, orig: BaseException | None) -> bool:
        if isinstance(exc, sa_exc.DBAPIError):
            return exc.statement is None or exc.connection_invalidated
        return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None

    def _hint(self, orig: BaseException | None) -> str:
        if getattr(orig, "sqlstate", None) == _SYNTAX_ERROR:  # the extended protocol accepts one statement
            return " (run one SELECT statement)"
        return ""

    # -- statements ----------------------------------------------------------------------------

    def _run(self, conn: sa.Connection, sql: str, limits: Limits, deadline: Deadline) -> RowSet:
        """Run one statement over the extended protocol (``binary=True``): the server accepts exactly one
        statement, so nothing can be appended to it. No server-side cursor: the statement carries its own
        ``LIMIT``, and a plain portal keeps PostgreSQL's parallel query plans (cursors never get them)."""
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cursor:
            cursor.execute(sql, binary=True)
            if cursor.description is None:
                return RowSet(columns=[], rows=[])
            return fetch_capped([d.name for d in cursor.description], cursor.fetchmany, limits, deadline)

    def _bind_governed(self, source: exp.Subquery, mark: GovernedMark) -> GovernedRelation:
        return self._wall.bind(source, mark)

    def _template(self, statement: exp.Query) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self._wall.template(statement)

    def _execute_governed_sync(self, prepared: Prepared, limits: Limits) -> RowSet:
        for attempt in (1, 2):  # a second time when a view was dropped under the cached binding
            try:
                with self._session(limits.timeout_s, prepared) as (conn, deadline):
                    raw: Any = conn.connection.dbapi_connection
                    return self._wall.run(raw, prepared, limits, deadline)
            except QueryExecutionError as exc:
                if attempt == 2 or not self._wall.forget(exc, prepared):
                    raise
        raise AssertionError("unreachable")

    # -- introspection -------------------------------------------------------------------------

    def _columns(self, conn: sa.Connection, table: str) -> FoundColumns | None:
        quoted = ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))
        oid = conn.exec_driver_sql(
            "SELECT c.oid FROM pg_class c"
            " WHERE c.oid = to_regclass(%(name)s) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')",
            {"name": quoted},
        ).scalar()
        if oid is None:
            return None
        rows = conn.exec_driver_sql(_COLUMNS, {"oid": oid}).all()
        columns = [
            IntrospectedColumn(
                name=name,
                native_type=native,
                type=neutral_type(native, _CATEGORIES.get(cat, "string")),
                nullable=nullable,
            )
            for name, native, nullable, cat, _pos in rows
        ]
        primary_key = [row[0] for row in sorted((r for r in rows if r[4] is not None), key=lambda r: r[4])]
        return quoted, columns, primary_key


def _read_only_engine(config: ConnectionConfig) -> sa.Engine:
    """An autocommit psycopg engine whose sessions default to read-only transactions.

    Raises:
        ConfigError: no ``url``, or one of another database.
    """
    if config.url is None:
        raise ConfigError(f"connection {config.name!r}: kind postgresql needs 'url' (postgresql://user@host/db)")
    url = sa.make_url(config.url.get_secret_value())
    if not url.drivername.startswith(("postgresql", "postgres")):
        raise ConfigError(f"connection {config.name!r}: expected a postgresql:// url, got {url.drivername}://")
    url = url.set(drivername="postgresql+psycopg")
    args = {
        "connect_timeout": 10,
        "application_name": "dataproducts",
        "options": "-c default_transaction_read_only=on",
    }
    return sa.create_engine(url, pool_pre_ping=True, isolation_level="AUTOCOMMIT", connect_args=args)
