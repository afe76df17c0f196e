"""SQLite and PostgreSQL through SQLAlchemy Core, read-only at the driver level.

One class serves both kinds; ``kind``, ``dialect`` and ``capabilities`` are set per instance.

SQLite
    The file is opened with the URI ``file:<path>?mode=ro``; an authorizer admits only reads
    (``mode=ro`` alone still lets ``ATTACH`` create a new, writable file) and ``query_only`` is on.
    A progress handler aborts a statement after ``limits.timeout_s``. Every connection gets a
    deterministic ``md5(text)`` function, which governance uses to mask columns, and safe
    ``regexp``/``floor`` in place of the driver's (:mod:`connectors._sqlite_functions`).
PostgreSQL (psycopg 3; ``postgresql://`` URLs are normalised to ``postgresql+psycopg://``)
    Sessions start with ``default_transaction_read_only=on``; every call runs in a ``READ ONLY``
    transaction with ``SET LOCAL statement_timeout`` and is rolled back. Statements go over the
    extended protocol, so the server accepts exactly one statement per call (nothing can be appended
    to it), without a server-side cursor, which would rule out parallel plans. A
    superuser login drops to ``pg_read_all_data`` for the transaction (a read-only transaction does
    not stop a superuser's ``COPY ... TO PROGRAM`` or ``pg_read_file``); prefer a read-only role.

Governed statements (``execute(..., governed=True)``) run behind each store's own wall: TEMP views and
a per-statement authorizer on SQLite (:mod:`connectors._sqlite_wall`); views that only a NOLOGIN reader
role may read, each bound to the statements it serves, on PostgreSQL (:mod:`connectors._pg_wall`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlglot import exp

from catalog.compile import GovernedMark
from catalog.contract import ColumnType
from catalog.errors import (
    ConfigError,
    ConnectorError,
    ConnectorUnavailableError,
    QueryExecutionError,
    QueryTimeoutError,
)
from catalog.query import Limits, RowSet
from connectors import _sqlite_functions
from connectors._common import (
    Deadline,
    driver_message,
    fetch_capped,
    known_type,
    neutral_type,
    timeout_message,
    unknown_table,
)
from connectors._pg_wall import PostgresWall
from connectors._sqlite_wall import SQLiteWall, read_only_authorizer
from connectors.base import (
    Capabilities,
    ConnectionConfig,
    Connector,
    GovernedRelation,
    IntrospectedColumn,
    Prepared,
    TableSchema,
)

__all__ = ["SQLAlchemyConnector"]

log = logging.getLogger(__name__)

INTROSPECT_TIMEOUT_S = 60.0
_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres"}
_PG_CANCELED = "57014"
_ASSETS = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND substr(name, 1, 7) <> 'sqlite_'",
    "postgresql": (
        "SELECT CASE WHEN n.nspname = current_schema() THEN c.relname ELSE n.nspname || '.' || c.relname END"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND has_schema_privilege(n.oid, 'USAGE')"
        " AND n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'"
    ),
}


class SQLAlchemyConnector(Connector):
    """SQLite (``kind: sqlite``, ``path`` or ``url``) or PostgreSQL (``kind: postgresql``, ``url``)."""

    def __init__(self, config: ConnectionConfig) -> None:
        """Raises:
        ConfigError: unsupported kind, or no usable ``url``/``path`` for it.
        """
        super().__init__(config)
        if config.kind not in _DIALECTS:
            raise ConfigError(f"SQLAlchemyConnector serves kinds {sorted(_DIALECTS)}, not {config.kind!r}")
        self.kind = config.kind
        self.dialect = _DIALECTS[config.kind]
        self.capabilities = Capabilities(supports_schemas=self.kind == "postgresql", supports_store_governance=True)
        self._sqlite_path: Path | None = None
        self._superuser: bool | None = None  # PostgreSQL: learnt on first use
        self._lock = threading.Lock()
        self._closed = False
        self._engine = self._sqlite_engine() if self.kind == "sqlite" else self._postgres_engine()
        self._wall = SQLiteWall(self.name) if self.kind == "sqlite" else PostgresWall(self.name, config.options)

    # -- engines -------------------------------------------------------------------------------

    def _sqlite_engine(self) -> sa.Engine:
        if self.config.path:
            database = self.config.path
        elif self.config.url is not None:
            database = sa.make_url(self.config.url.get_secret_value()).database or ""
        else:
            raise ConfigError(f"connection {self.name!r}: kind sqlite needs 'path' (or a sqlite:/// 'url')")
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ConfigError(f"connection {self.name!r}: give the SQLite database as a file path, not {database!r}")
        self._sqlite_path = Path(database).expanduser().resolve()
        url = sa.URL.create("sqlite+pysqlite", database=f"file:{quote(str(self._sqlite_path))}")
        engine = sa.create_engine(url.update_query_dict({"mode": "ro", "uri": "true"}))
        event.listen(engine, "connect", _prepare_sqlite)
        return engine

    def _postgres_engine(self) -> sa.Engine:
        if self.config.url is None:
            raise ConfigError(f"connection {self.name!r}: kind postgresql needs 'url' (postgresql://user@host/db)")
        url = sa.make_url(self.config.url.get_secret_value())
        if not url.drivername.startswith(("postgresql", "postgres")):
            raise ConfigError(f"connection {self.name!r}: expected a postgresql:// url, got {url.drivername}://")
        url = url.set(drivername="postgresql+psycopg")
        args = {
            "connect_timeout": 10,
            "application_name": "dataproducts",
            "options": "-c default_transaction_read_only=on",
        }
        return sa.create_engine(url, pool_pre_ping=True, isolation_level="AUTOCOMMIT", connect_args=args)

    # -- the one place driver errors are mapped ------------------------------------------------

    @contextmanager
    def _session(self, timeout_s: float, governed: Prepared | None = None) -> Iterator[tuple[sa.Connection, Deadline]]:
        """A connection inside a read-only transaction with a time budget; always rolled back.

        For a ``governed`` statement on PostgreSQL the transaction runs as the reader role with the
        statement's view tokens (its missing views are created first).

        Raises:
            ConnectorUnavailableError: the store cannot be opened or reached.
            QueryTimeoutError: the time budget ran out.
            QueryExecutionError: the store rejected a statement.
        """
        if self._closed:
            raise ConnectorUnavailableError(f"connection {self.name!r} is closed")
        deadline = Deadline(timeout_s)
        try:
            if self._sqlite_path is not None and not self._sqlite_path.is_file():
                raise ConnectorUnavailableError(f"SQLite database file {str(self._sqlite_path)!r} does not exist")
            with self._engine.connect() as conn:
                try:
                    if self.kind == "sqlite":
                        with _sqlite_deadline(conn, deadline):
                            yield conn, deadline
                    else:
                        try:
                            self._begin_postgres(conn, timeout_s, governed)
                            yield conn, deadline
                        finally:
                            conn.exec_driver_sql("ROLLBACK")
                finally:
                    conn.rollback()
        except ConnectorError:
            raise
        except (sa_exc.DBAPIError, psycopg.Error) as exc:
            orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
            message = driver_message(orig)
            if _is_timeout(orig, deadline):
                raise QueryTimeoutError(timeout_message(timeout_s), orig=orig) from exc
            unreachable = isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
            if isinstance(exc, sa_exc.DBAPIError) and (exc.statement is None or exc.connection_invalidated):
                # SQLite raises a statement's own errors (integer overflow, …) while rows are fetched,
                # outside any statement SQLAlchemy tracks: only a file it cannot open is unreachable
                unreachable = not isinstance(orig, sqlite3.DatabaseError) or "unable to open" in str(orig)
            if unreachable:
                raise ConnectorUnavailableError(f"cannot reach {self.name!r}: {message}", orig=orig) from exc
            raise QueryExecutionError(
                f"{self.name!r} rejected the statement: {message}{_hint(orig)}", orig=orig
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise QueryExecutionError(f"{self.name!r} failed: {driver_message(exc)}", orig=exc) from exc

    def _begin_postgres(self, conn: sa.Connection, timeout_s: float, governed: Prepared | None = None) -> None:
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
            assert isinstance(self._wall, PostgresWall)
            raw: Any = conn.connection.dbapi_connection
            self._wall.begin(raw, timeout_s, governed, superuser=self._superuser)
            return
        begin = f"BEGIN READ ONLY; SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}"
        if self._superuser:
            begin += "; SET LOCAL ROLE pg_read_all_data"
        conn.exec_driver_sql(begin)

    # -- the contract --------------------------------------------------------------------------

    async def execute(self, statement: exp.Query | str | Prepared, limits: Limits, *, governed: bool = False) -> RowSet:
        if governed or isinstance(statement, Prepared):
            prepared = self.prepared(statement)
            return await anyio.to_thread.run_sync(self._execute_governed_sync, prepared, limits)
        sql = self.render(statement)
        return await anyio.to_thread.run_sync(self._execute_sync, sql, limits)

    def _bind_governed(self, source: exp.Subquery, mark: GovernedMark) -> GovernedRelation:
        return self._wall.bind(source, mark)

    def _check_prepared(self, statement: exp.Query, relations: tuple[GovernedRelation, ...]) -> None:
        if isinstance(self._wall, SQLiteWall):
            self._wall.check(statement, relations)

    def _execute_governed_sync(self, prepared: Prepared, limits: Limits) -> RowSet:
        if isinstance(self._wall, SQLiteWall):
            with self._session(limits.timeout_s) as (conn, deadline):
                return self._wall.run(conn, prepared, limits, deadline)
        for attempt in (1, 2):  # a second time when a view was dropped under the cached binding
            try:
                with self._session(limits.timeout_s, prepared) as (conn, deadline):
                    raw: Any = conn.connection.dbapi_connection
                    return self._wall.run(raw, prepared, limits, deadline)
            except QueryExecutionError as exc:
                if attempt == 2 or not self._wall.forget(exc, prepared):
                    raise
        raise AssertionError("unreachable")

    def _execute_sync(self, sql: str, limits: Limits) -> RowSet:
        with self._session(limits.timeout_s) as (conn, deadline):
            if self.kind == "postgresql":
                return _run_postgres(conn, sql, limits, deadline)
            result = conn.exec_driver_sql(sql)
            try:
                if not result.returns_rows:
                    return RowSet(columns=[], rows=[])
                return fetch_capped(list(result.keys()), result.fetchmany, limits, deadline)
            finally:
                result.close()

    def _driver_sql(self, sql: str) -> str:
        """Rendered SQL as the driver must receive it: psycopg (``pyformat``) reads a bare ``%`` as a placeholder."""
        return sql.replace("%", "%%") if self._engine.dialect.paramstyle in ("pyformat", "format") else sql

    async def list_assets(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._list_assets_sync)

    def _list_assets_sync(self) -> list[str]:
        with self._session(INTROSPECT_TIMEOUT_S) as (conn, _):
            return self._assets(conn)

    def _assets(self, conn: sa.Connection) -> list[str]:
        return sorted(str(name) for (name,) in conn.exec_driver_sql(_ASSETS[self.kind]))

    async def introspect(self, table: str) -> TableSchema:
        return await anyio.to_thread.run_sync(self._introspect_sync, table)

    def _introspect_sync(self, table: str) -> TableSchema:
        with self._session(INTROSPECT_TIMEOUT_S) as (conn, _):
            found = _sqlite_columns(conn, table) if self.kind == "sqlite" else _postgres_columns(conn, table)
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


# -- SQLite ------------------------------------------------------------------------------------

_SQLITE_AFFINITY: tuple[tuple[str, ColumnType], ...] = (
    ("INT", "integer"),
    ("CHAR", "string"),
    ("CLOB", "string"),
    ("TEXT", "string"),
    ("BLOB", "bytes"),
    ("REAL", "float"),
    ("FLOA", "float"),
    ("DOUB", "float"),
)


def _prepare_sqlite(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    _sqlite_functions.install(dbapi_connection)
    dbapi_connection.execute("PRAGMA query_only = ON")
    dbapi_connection.set_authorizer(read_only_authorizer)


@contextmanager
def _sqlite_deadline(conn: sa.Connection, deadline: Deadline) -> Iterator[None]:
    """Abort the running SQLite statement once ``deadline`` passes (it fails with ``interrupted``)."""
    raw: Any = conn.connection.dbapi_connection
    raw.set_progress_handler(lambda: 1 if deadline.passed else 0, 1000)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)


def _sqlite_columns(conn: sa.Connection, table: str) -> tuple[str, list[IntrospectedColumn], list[str]] | None:
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?", (table,)
    ).first()
    if exists is None:
        return None
    quoted = '"' + table.replace('"', '""') + '"'
    rows = conn.exec_driver_sql(f"PRAGMA table_info({quoted})").all()
    columns = [
        IntrospectedColumn(name=name, native_type=native, type=_sqlite_type(native), nullable=not notnull)
        for _cid, name, native, notnull, _default, _pk in rows
    ]
    primary_key = [name for _cid, name, _n, _nn, _d, pk in sorted(rows, key=lambda r: r[5]) if pk]
    return quoted, columns, primary_key


def _sqlite_type(native: str) -> ColumnType:
    """Known names first, then SQLite's type-affinity rules (https://sqlite.org/datatype3.html#affinity_name_examples)."""
    declared = native.upper()
    if known := known_type(declared):
        return known
    if not declared:
        return "bytes"  # BLOB affinity: values are stored as given
    return next((neutral for needle, neutral in _SQLITE_AFFINITY if needle in declared), "decimal")


# -- PostgreSQL --------------------------------------------------------------------------------

_PG_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, t.typcategory,
       array_position(i.indkey::int2[], a.attnum)  -- int2vector is 0-based; NULL: not in the key
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PG_CATEGORIES: dict[str, ColumnType] = {"A": "json", "B": "boolean", "C": "json", "D": "timestamp", "N": "decimal"}


def _postgres_columns(conn: sa.Connection, table: str) -> tuple[str, list[IntrospectedColumn], list[str]] | None:
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))
    oid = conn.exec_driver_sql(
        "SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(%(name)s) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')",
        {"name": quoted},
    ).scalar()
    if oid is None:
        return None
    rows = conn.exec_driver_sql(_PG_COLUMNS, {"oid": oid}).all()
    columns = [
        IntrospectedColumn(
            name=name,
            native_type=native,
            type=neutral_type(native, _PG_CATEGORIES.get(cat, "string")),
            nullable=nullable,
        )
        for name, native, nullable, cat, _pos in rows
    ]
    primary_key = [row[0] for row in sorted((r for r in rows if r[4] is not None), key=lambda r: r[4])]
    return quoted, columns, primary_key


def _run_postgres(conn: sa.Connection, sql: str, limits: Limits, deadline: Deadline) -> RowSet:
    """Run one statement over the extended protocol (``binary=True``): the server accepts exactly one
    statement, so nothing can be appended to it. No server-side cursor: the statement carries its own
    ``LIMIT``, and a plain portal keeps PostgreSQL's parallel query plans (cursors never get them)."""
    raw: Any = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.execute(sql, binary=True)
        if cursor.description is None:
            return RowSet(columns=[], rows=[])
        return fetch_capped([d.name for d in cursor.description], cursor.fetchmany, limits, deadline)


def _is_timeout(orig: BaseException | None, deadline: Deadline) -> bool:
    if getattr(orig, "sqlstate", None) == _PG_CANCELED:
        return True
    return isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig) and deadline.passed


def _hint(orig: BaseException | None) -> str:
    if isinstance(orig, sqlite3.DatabaseError) and "authoriz" in str(orig):
        return " (this connection only reads: run one SELECT statement)"
    if isinstance(orig, sqlite3.OperationalError) and "user-defined function" in str(orig):
        return " (a function failed on its arguments; REGEXP patterns use RE2 syntax)"
    if getattr(orig, "sqlstate", None) == "42601":  # the extended protocol accepts one statement
        return " (run one SELECT statement)"
    return ""
