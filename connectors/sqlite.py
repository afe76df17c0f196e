"""SQLite through SQLAlchemy Core (``kind: sqlite``), read-only at the driver level.

The file is opened with the URI ``file:<path>?mode=ro``; an authorizer admits only reads
(``mode=ro`` alone still lets ``ATTACH`` create a new, writable file) and ``query_only`` is on.
A progress handler aborts a statement after ``limits.timeout_s``. Every connection gets a
deterministic ``md5(text)`` function, which governance uses to mask columns, and safe
``regexp``/``floor`` in place of the driver's (:mod:`connectors._sqlite_functions`).

Governed statements (``execute(..., governed=True)``) run behind SQLite's own wall: TEMP views and a
per-statement authorizer (:mod:`connectors._sqlite_wall`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlglot import exp

from catalog.contract import ColumnType
from catalog.errors import ConfigError, ConnectorUnavailableError
from catalog.governed_source import GovernedMark
from catalog.query import Limits, RowSet
from connectors import _sqlite_functions
from connectors._common import Deadline, fetch_capped, known_type
from connectors._sqlalchemy import FoundColumns, SQLAlchemyConnector
from connectors._sqlite_typeof import infer_column_types
from connectors._sqlite_wall import SQLiteWall, read_only_authorizer
from connectors.base import (
    Capabilities,
    ConnectionConfig,
    GovernedRelation,
    IntrospectedColumn,
    Prepared,
)

__all__ = ["SQLiteConnector"]

_AFFINITY: tuple[tuple[str, ColumnType], ...] = (
    ("INT", "integer"),
    ("CHAR", "string"),
    ("CLOB", "string"),
    ("TEXT", "string"),
    ("BLOB", "bytes"),
    ("REAL", "float"),
    ("FLOA", "float"),
    ("DOUB", "float"),
)


class SQLiteConnector(SQLAlchemyConnector):
    """A SQLite database file (``path``, or a ``sqlite:///`` ``url``), opened read-only."""

    kind = "sqlite"
    dialect = "sqlite"
    capabilities = Capabilities(supports_store_governance=True)
    assets_sql = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND substr(name, 1, 7) <> 'sqlite_'"

    def __init__(self, config: ConnectionConfig) -> None:
        """Raises:
        ConfigError: another kind, no file path given, or an in-memory or URI database.
        """
        super().__init__(config)
        self._path = _database_file(config)
        self._engine = _read_only_engine(self._path)
        self._wall = SQLiteWall(self.name)

    # -- session -------------------------------------------------------------------------------

    def _connect(self) -> sa.Connection:
        if not self._path.is_file():
            raise ConnectorUnavailableError(f"SQLite database file {str(self._path)!r} does not exist")
        return super()._connect()

    @contextmanager
    def _transaction(self, conn: sa.Connection, deadline: Deadline, governed: Prepared | None) -> Iterator[None]:
        """SQLAlchemy's implicit transaction (the session rolls it back), with a progress handler that
        aborts the running statement once ``deadline`` passes (it fails with ``interrupted``). The
        connection itself only reads (:func:`_prepare_connection`); the wall needs nothing more."""
        raw: Any = conn.connection.dbapi_connection
        if governed is None:
            self._wall.release(conn)  # a governed gate left on the connection admits only its own views
        raw.set_progress_handler(lambda: 1 if deadline.passed else 0, 1000)
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)

    def _is_timeout(self, orig: BaseException | None, deadline: Deadline) -> bool:
        return isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig) and deadline.passed

    def _is_unreachable(self, exc: Exception, orig: BaseException | None) -> bool:
        # SQLite raises a statement's own errors (integer overflow, …) while rows are fetched,
        # outside any statement SQLAlchemy tracks: only a file it cannot open is unreachable
        if isinstance(exc, sa_exc.DBAPIError) and (exc.statement is None or exc.connection_invalidated):
            return not isinstance(orig, sqlite3.DatabaseError) or "unable to open" in str(orig)
        return False

    def _hint(self, orig: BaseException | None) -> str:
        if isinstance(orig, sqlite3.DatabaseError) and "authoriz" in str(orig):
            return " (this connection only reads: run one SELECT statement)"
        if isinstance(orig, sqlite3.OperationalError) and "user-defined function" in str(orig):
            return " (a function failed on its arguments; REGEXP patterns use RE2 syntax)"
        return ""

    # -- statements ----------------------------------------------------------------------------

    def _run(self, conn: sa.Connection, sql: str, limits: Limits, deadline: Deadline) -> RowSet:
        result = conn.exec_driver_sql(sql)
        try:
            if not result.returns_rows:
                return RowSet(columns=[], rows=[])
            return fetch_capped(list(result.keys()), result.fetchmany, limits, deadline)
        finally:
            result.close()

    def _bind_governed(self, source: exp.Subquery, mark: GovernedMark) -> GovernedRelation:
        return self._wall.bind(source, mark)

    def _check_prepared(self, statement: exp.Query, relations: tuple[GovernedRelation, ...]) -> None:
        self._wall.check(statement, relations)

    def _execute_governed_sync(self, prepared: Prepared, limits: Limits) -> RowSet:
        with self._session(limits.timeout_s, prepared) as (conn, deadline):
            return self._wall.run(conn, prepared, limits, deadline)

    # -- introspection -------------------------------------------------------------------------

    def _columns(self, conn: sa.Connection, table: str) -> FoundColumns | None:
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
        untyped = [c.name for c in columns if not c.native_type.strip()]
        if untyped:
            inferred = infer_column_types(conn, quoted, untyped)
            columns = [c.model_copy(update=inferred[c.name]) if c.name in inferred else c for c in columns]
        primary_key = [name for _cid, name, _n, _nn, _d, pk in sorted(rows, key=lambda r: r[5]) if pk]
        return quoted, columns, primary_key


def _database_file(config: ConnectionConfig) -> Path:
    """The database file ``config`` names (``path``, or the database of a ``sqlite:///`` url), resolved.

    Raises:
        ConfigError: neither is given, or it names an in-memory or URI database.
    """
    if config.path:
        database = config.path
    elif config.url is not None:
        database = sa.make_url(config.url.get_secret_value()).database or ""
    else:
        raise ConfigError(f"connection {config.name!r}: kind sqlite needs 'path' (or a sqlite:/// 'url')")
    if database in ("", ":memory:") or database.startswith("file:"):
        raise ConfigError(f"connection {config.name!r}: give the SQLite database as a file path, not {database!r}")
    return Path(database).expanduser().resolve()


def _read_only_engine(path: Path) -> sa.Engine:
    """An engine opening ``path`` with ``mode=ro``; each new connection is prepared by :func:`_prepare_connection`."""
    url = sa.URL.create("sqlite+pysqlite", database=f"file:{quote(str(path))}")
    engine = sa.create_engine(url.update_query_dict({"mode": "ro", "uri": "true"}))
    event.listen(engine, "connect", _prepare_connection)
    return engine


def _prepare_connection(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    """Our md5/regexp/floor, ``query_only`` on, and the authorizer that admits only reads."""
    _sqlite_functions.install(dbapi_connection)
    dbapi_connection.execute("PRAGMA query_only = ON")
    dbapi_connection.set_authorizer(read_only_authorizer)


def _sqlite_type(native: str) -> ColumnType:
    """Known names first, then SQLite's type-affinity rules (https://sqlite.org/datatype3.html#affinity_name_examples)."""
    declared = native.upper()
    if known := known_type(declared):
        return known
    if not declared:
        return "bytes"  # BLOB affinity: values are stored as given
    return next((neutral for needle, neutral in _AFFINITY if needle in declared), "decimal")
