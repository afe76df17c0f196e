"""DuckDB over a database file and/or Parquet, CSV, JSON and Markdown files, read-only at the driver level.

How one connection is laid out:

* a private catalog file ``files.duckdb`` is built once, in a temporary directory owned by the
  connector, holding one view per entry of ``config.files`` (``CREATE VIEW orders AS SELECT * FROM
  read_parquet('/data/orders/*.parquet')``); it is the main database, opened ``read_only``. A view
  of text documents (``.md``, ``.rst``: one row per file) names each file by its path relative to
  the pattern's folder (``returns.md``), never by its absolute path;
* ``config.path``, when given, is attached read-only as ``source`` and made the default catalog,
  with ``files.main`` next on the search path, so its tables and the file views both resolve
  unqualified (a file view may not share a name with a table of ``source.main``);
* ``allowed_paths`` (plain files) and ``allowed_directories`` (the fixed directory part of a glob)
  are set to just those files, then ``enable_external_access=false`` and ``lock_configuration=true``:
  SQL can read no other file, attach nothing and change no setting. DuckDB refuses
  ``allowed_paths`` in the connect-time config ("before the database is started") and once
  external access is off, hence this order. Extensions are never installed or auto-loaded.

Each statement runs on its own cursor of the shared connection, must be a single SELECT (checked
with DuckDB's own parser) and is interrupted by a timer after ``limits.timeout_s``.

Governed statements: no second wall
    DuckDB cannot enforce governance by itself, so a governed statement here is only as safe as the
    SQL rewrite that built it (``capabilities.supports_store_governance`` is false). DuckDB has no
    authorizer hook, no roles and no GRANT; a view is expanded with the caller's own access to the
    catalogs, so whatever may read a view may read its base tables too; and a table function such as
    ``read_parquet`` on an allowed path reads a file view's data without going through any view. What
    DuckDB does enforce is process-wide (``read_only``, ``allowed_paths``, no external access, locked
    configuration, see above), and that holds for every statement. For governed statements this
    connector qualifies the physical names inside each governed source with their catalog and
    schema (``"files"."main"."orders"`` for a file view, ``"source"."main"."people"`` for a table of
    the attached database), so no name in the statement can redirect them, and reports those objects
    in ``RowSet.objects``. Where a product needs the store to enforce its policy, serve it from
    SQLite or PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import duckdb
from sqlglot import exp

from catalog.errors import (
    ConfigError,
    ConnectorError,
    ConnectorUnavailableError,
    QueryExecutionError,
    QueryTimeoutError,
)
from catalog.query import Limits, RowSet
from connectors._common import Deadline, driver_message, fetch_capped, neutral_type, timeout_message, unknown_table
from connectors._watchdog import Alarm, arm
from connectors.base import ConnectionConfig, Connector, IntrospectedColumn, Prepared, TableSchema

T = TypeVar("T")

__all__ = ["DuckDBConnector"]

INTROSPECT_TIMEOUT_S = 60.0
_DRIVER_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
_READERS = {".parquet": "read_parquet", ".pq": "read_parquet", ".csv": "read_csv", ".tsv": "read_csv"}
_READERS |= {".txt": "read_csv", ".json": "read_json", ".jsonl": "read_json", ".ndjson": "read_json"}
# Documents: one row per file (filename, content, size, last_modified), for document products.
_READERS |= {".md": "read_text", ".markdown": "read_text", ".rst": "read_text"}
_COMPRESSION = (".gz", ".zst")
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ASSETS = """
SELECT database_name, schema_name, table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary
UNION ALL
SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary
"""


class DuckDBConnector(Connector):
    """``kind: duckdb`` with ``path`` (a .duckdb file) and/or ``files`` (view name → Parquet/CSV/JSON path or glob)."""

    kind = "duckdb"
    dialect = "duckdb"

    def __init__(self, config: ConnectionConfig) -> None:
        """Nothing is opened until first use.

        Raises:
            ConfigError: neither ``path`` nor ``files``, a view name that is not an identifier, or a
                file type DuckDB cannot read without extensions.
        """
        super().__init__(config)
        if not config.path and not config.files:
            raise ConfigError(f"connection {self.name!r}: kind duckdb needs 'path' (a .duckdb file) and/or 'files'")
        self._path = Path(config.path).expanduser().resolve() if config.path else None
        self._files: dict[str, tuple[str, str]] = {}  # view → (reader, absolute path or glob)
        for view, pattern in config.files.items():
            if not _VIEW_NAME.match(view):
                raise ConfigError(f"connection {self.name!r}: file view name {view!r} must be an identifier")
            self._files[view] = (_reader(self.name, pattern), str(Path(pattern).expanduser().absolute()))
        self._lock = threading.Lock()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._cleanup: weakref.finalize[Any, Any] | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        tmp = tempfile.mkdtemp(prefix="dataproducts-duckdb-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
        try:
            catalog = str(Path(tmp) / "files.duckdb")
            with duckdb.connect(catalog, config=_DRIVER_CONFIG) as build:
                for view, (reader, pattern) in self._files.items():
                    build.execute(f"CREATE VIEW {_ident(view)} AS {_view_query(reader, pattern)}")
            conn = duckdb.connect(catalog, read_only=True, config=_DRIVER_CONFIG)
        except BaseException:
            self._cleanup()
            raise
        try:
            if self._path is not None:
                if not self._path.is_file():
                    raise ConnectorUnavailableError(f"DuckDB database file {str(self._path)!r} does not exist")
                conn.execute(f"ATTACH {_literal(str(self._path))} AS source (READ_ONLY)")
                self._refuse_name_clashes(conn)
            paths = [p for _, p in self._files.values() if not _is_glob(p)]
            directories = sorted({_glob_root(p) for _, p in self._files.values() if _is_glob(p)})
            conn.execute(f"SET allowed_paths = {_list_literal(paths)}")
            conn.execute(f"SET allowed_directories = {_list_literal(directories)}")
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
        except BaseException:
            conn.close()
            self._cleanup()
            raise
        return conn

    def _refuse_name_clashes(self, conn: duckdb.DuckDBPyConnection) -> None:
        names = conn.execute(
            f"SELECT table_name FROM ({_ASSETS}) WHERE database_name = 'source' AND schema_name = 'main'"
        )
        clashes = sorted({name for (name,) in names.fetchall()} & set(self._files))
        if clashes:
            raise ConfigError(
                f"connection {self.name!r}: file views {clashes} clash with tables of {str(self._path)!r}"
            )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._closed:
                raise ConnectorUnavailableError(f"connection {self.name!r} is closed")
            if self._conn is None:
                self._conn = self._open()
            cursor = self._conn.cursor()
        if self._path is not None:
            cursor.execute("USE source")
            cursor.execute("SET search_path = 'source.main,files.main'")
        return cursor

    # -- the one place driver errors are mapped ------------------------------------------------

    @contextmanager
    def _run(self, timeout_s: float) -> Iterator[tuple[duckdb.DuckDBPyConnection, Deadline]]:
        """A fresh cursor that is interrupted after ``timeout_s`` and closed afterwards.

        Raises:
            ConnectorUnavailableError: the database or a file cannot be opened.
            QueryTimeoutError: the statement ran longer than ``timeout_s``.
            QueryExecutionError: DuckDB rejected the statement.
        """
        deadline = Deadline(timeout_s)
        alarm: Alarm | None = None
        try:
            cursor = self._cursor()
            try:
                alarm = arm(timeout_s, cursor.interrupt)
                try:
                    yield cursor, deadline
                finally:
                    alarm.disarm()
            finally:
                cursor.close()
        except ConnectorError:
            raise
        except duckdb.InterruptException as exc:
            if alarm is not None and alarm.fired:
                raise QueryTimeoutError(timeout_message(timeout_s), orig=exc) from exc
            raise QueryExecutionError(f"{self.name!r}: the statement was interrupted", orig=exc) from exc
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            raise ConnectorUnavailableError(f"cannot read {self.name!r}: {driver_message(exc)}", orig=exc) from exc
        except duckdb.Error as exc:
            message = driver_message(exc)
            if "'pytz'" in message:  # DuckDB's Python client builds TIMESTAMP WITH TIME ZONE values with pytz
                message = "returning TIMESTAMP WITH TIME ZONE values needs the pytz package (pip install pytz)"
            raise QueryExecutionError(f"{self.name!r} rejected the statement: {message}", orig=exc) from exc

    # -- the contract --------------------------------------------------------------------------

    async def _execute(self, statement: exp.Query | str | Prepared, limits: Limits, *, governed: bool) -> RowSet:
        if governed or isinstance(statement, Prepared):
            prepared = self.prepared(statement)
            rowset = await anyio.to_thread.run_sync(self._execute_sync, prepared.sql, limits, prepared.parameters)
            rowset.objects = prepared.objects
            return rowset
        return await anyio.to_thread.run_sync(self._execute_sync, self.render(statement), limits)

    async def _execute_then(self, prepared: Prepared, limits: Limits, then: Callable[[RowSet], T]) -> T:
        def run() -> T:
            rowset = self._execute_sync(prepared.sql, limits, prepared.parameters)
            rowset.objects = prepared.objects
            return then(rowset)

        return await anyio.to_thread.run_sync(run)

    def _qualify(self, table: exp.Table) -> str:
        """``"files"."main".<view>`` for a file view, ``"source".<schema>.<table>`` for the attached database."""
        if not table.catalog:
            if not table.db and table.name.lower() in {view.lower() for view in self._files}:
                table.set("catalog", exp.to_identifier("files", quoted=True))
                table.set("db", exp.to_identifier("main", quoted=True))
            elif self._path is not None:
                table.set("catalog", exp.to_identifier("source", quoted=True))
                table.set("db", table.args.get("db") or exp.to_identifier("main", quoted=True))
        return ".".join(part.name for part in table.parts)

    def _execute_sync(self, sql: str, limits: Limits, parameters: Mapping[str, Any] | None = None) -> RowSet:
        with self._run(limits.timeout_s) as (cursor, deadline):
            statements = cursor.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise QueryExecutionError(
                    f"{self.name!r} runs exactly one SELECT statement; this connection only reads"
                )
            cursor.execute(sql, dict(parameters) if parameters else None)
            columns = [d[0] for d in cursor.description or []]
            return fetch_capped(columns, cursor.fetchmany, limits, deadline)

    async def list_assets(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._list_assets_sync)

    def _list_assets_sync(self) -> list[str]:
        with self._run(INTROSPECT_TIMEOUT_S) as (cursor, _):
            return sorted(self._assets(cursor))

    def _assets(self, cursor: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str, str]]:
        """Readable name → (database, schema, table) for the source file and the file views."""
        found: dict[str, tuple[str, str, str]] = {}
        for database, schema, table in cursor.execute(_ASSETS).fetchall():
            if database in ("source", "files"):
                found.setdefault(table if schema == "main" else f"{schema}.{table}", (database, schema, table))
        return found

    async def introspect(self, table: str) -> TableSchema:
        return await anyio.to_thread.run_sync(self._introspect_sync, table)

    def _introspect_sync(self, table: str) -> TableSchema:
        with self._run(INTROSPECT_TIMEOUT_S) as (cursor, _):
            assets = self._assets(cursor)
            if table not in assets:
                raise unknown_table(self.name, table, list(assets))
            where = "WHERE database_name = ? AND schema_name = ? AND table_name = ?"
            rows = cursor.execute(
                f"SELECT column_name, data_type, is_nullable FROM duckdb_columns() {where} ORDER BY column_index",
                list(assets[table]),
            ).fetchall()
            keys = cursor.execute(
                f"SELECT constraint_column_names FROM duckdb_constraints() {where} AND constraint_type = 'PRIMARY KEY'",
                list(assets[table]),
            ).fetchall()
            (count,) = cursor.execute(f"SELECT count(*) FROM {'.'.join(map(_ident, assets[table]))}").fetchone() or (0,)
        columns = [
            IntrospectedColumn(name=name, native_type=native, type=neutral_type(native), nullable=bool(nullable))
            for name, native, nullable in rows
        ]
        return TableSchema(table=table, columns=columns, primary_key=list(keys[0][0]) if keys else [], row_count=count)

    async def aclose(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._cleanup is not None:
            self._cleanup()


def _reader(connection: str, pattern: str) -> str:
    name = pattern.lower()
    for suffix in _COMPRESSION:
        name = name.removesuffix(suffix)
    reader = _READERS.get(Path(name).suffix)
    if reader is None:
        raise ConfigError(
            f"connection {connection!r}: cannot tell how to read {pattern!r}; use a file ending in {sorted(_READERS)}"
        )
    return reader


def _view_query(reader: str, pattern: str) -> str:
    """The SELECT of a file view. Documents (``read_text``) are named by their path relative to the
    folder of the pattern (``returns.md``, ``policies/returns.md``): a document's key is cited to
    agents, and an absolute path would show the server's layout."""
    source = f"{reader}({_literal(pattern)})"
    if reader != "read_text":
        return f"SELECT * FROM {source}"
    root = _literal(_glob_root(pattern) if _is_glob(pattern) else str(Path(pattern).parent).rstrip("/") + "/")
    relative = f"CASE WHEN starts_with(filename, {root}) THEN substr(filename, length({root}) + 1) ELSE filename END"
    return f"SELECT * REPLACE ({relative} AS filename) FROM {source}"


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[{")


def _glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard, with a trailing slash."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if _is_glob(part))
    return str(Path(*parts[:fixed])).rstrip("/") + "/"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list_literal(items: list[str]) -> str:
    return "[" + ", ".join(_literal(item) for item in items) + "]"
