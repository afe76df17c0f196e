"""SQLite's wall: governed statements read through TEMP views, and the authorizer admits nothing else.

Binding
    Each governed source becomes a TEMP view of the connection, named ``dp_<digest>``: an HMAC of
    its body under a key drawn when the connector starts, so a contract version or another
    principal's governance gives another view, and no caller can guess a name. Physical names in
    the body are qualified (``"main"."people"``) and the CTEs of a contract's source query are
    renamed after the view (``dp_<digest>_0``). A body that drops rows (row filters) keeps, or gets,
    the ``LIMIT -1 OFFSET 0`` fence: SQLite then cannot flatten the view into the statement, so no
    condition of the statement runs before the row filters (SQLite has no leakproof notion, and
    functions such as ``abs()`` raise on some values: evaluated on hidden rows, an error would say
    something about them). The cost: conditions on such a view are not pushed into it, so a lookup
    by key scans the filtered rows. Unfiltered bodies stay unfenced and keep index lookups.

Flattened views
    Measured: when SQLite flattens an unfenced view into the statement and the statement uses none
    of the table's columns (``count(*)``, ``SELECT 1``, or only an ``INTEGER PRIMARY KEY``), SQLite
    asks the authorizer about the table with an empty column name from the *statement's* context,
    not the view's — exactly what a statement reading the table itself would produce. Admitting it
    would leak the table's row count past its row filters; fencing every view would cost index
    lookups on the view (SQLite pushes no predicate into a subquery with ``LIMIT``). So each body
    compares up to two of its source's columns with themselves (``"c" IS "c"``, true for every row,
    NULLs included): at most one column of a table is its rowid, so a real column stays in use once
    the view is flattened, and the read is reported from the view. A shape that still reports such
    a read (a source query whose extra table's columns are never used) fails closed.

Creating views on a read-only connection
    Measured: with ``PRAGMA query_only = ON``, ``CREATE TEMP VIEW`` fails with "attempt to write a
    readonly database", although the TEMP schema lives in memory. So, while the connection is
    checked out by the call (no other thread can use it), the wall lifts ``query_only``, creates the
    missing views under an authorizer that admits exactly those ``CREATE TEMP VIEW`` statements and
    their ``sqlite_temp_master`` rows, and restores ``query_only`` (the connection is invalidated if
    that fails). The database file itself stays untouchable: it is opened ``mode=ro``. SQLAlchemy
    pools SQLite file connections (``QueuePool``), so views persist per pooled connection; the
    connection's ``info`` dict records which exist, and at most :data:`MAX_VIEWS` are kept (least
    recently used ones are dropped).

Running
    For the statement's lifetime the authorizer admits ``SQLITE_READ`` of a physical table only when
    SQLite reports the read from inside one of *this statement's* views (the 5th authorizer argument,
    the innermost view or CTE), reads of those views' columns from the statement, ``SELECT``,
    functions and recursive CTEs — and denies everything else: other tables, ``sqlite_master`` and
    ``sqlite_temp_master``, other principals' views, pragmas. SQLite names a CTE as the context of
    the reads inside it, so a statement whose own CTE reuses a scope name is refused before it runs.
    A CTE used without its columns (``count(*)``, a recursive CTE) is reported like a table read with
    an empty column name; it is admitted when the statement defines a CTE of that name and no stored
    table or view has it (else a reference outside the CTE's scope could count a table's rows).
    Setting an authorizer expires the connection's prepared statements, so a cached statement is
    authorized again. The physical tables seen read become ``RowSet.objects``.

    A limit that follows: SQLite reports the reads inside a view *of the database* as that view's, so
    a product whose source is such a view is refused behind the wall ("reads main.t through v"). Give
    it the view's query as its source query, or its table.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlglot import exp

from catalog.errors import QueryExecutionError
from catalog.governed_source import GovernedMark
from catalog.query import Limits, RowSet
from connectors._common import Deadline, fetch_capped
from connectors._governed import cte_names, digest, physical_tables, rename_ctes
from connectors.base import GovernedRelation, Prepared

__all__ = ["MAX_VIEWS", "SQLiteWall", "read_only_authorizer"]

#: Governed views kept per pooled connection.
MAX_VIEWS = 64
_VIEWS = "dataproducts.governed_views"  # key in the pooled connection's info dict
_GATE = "dataproducts.governed_gate"  # the governed authorizer left installed: (views it admits, gate)

Authorizer = Callable[[int, str | None, str | None, str | None, str | None], int]

# Authorizer action codes (sqlite3.SQLITE_*) a read-only session needs; everything else is denied.
_READ_ONLY = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,  # WITH RECURSIVE
    sqlite3.SQLITE_TRANSACTION,  # the driver's own BEGIN/ROLLBACK
}
_READ_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
# A gate left on an idle connection also admits the driver's own BEGIN/ROLLBACK (which read nothing).
_GOVERNED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_TRANSACTION}
_STORED_NAMES = "SELECT name FROM main.sqlite_master UNION ALL SELECT name FROM temp.sqlite_master"
_SCHEMA_ROWS = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_READ}


def read_only_authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    """The connection's everyday authorizer: reads only (``mode=ro`` alone still lets ``ATTACH`` create a file)."""
    if action in _READ_ONLY:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class SQLiteWall:
    """Binds governed sources to TEMP views and runs statements under the governed authorizer."""

    def __init__(self, connection: str) -> None:
        self.connection = connection
        self._key = secrets.token_bytes(32)

    def bind(self, source: exp.Subquery, mark: GovernedMark) -> GovernedRelation:
        """Replace ``source`` by a reference to its TEMP view; the relation to create."""
        body = source.this
        filters_rows = body.find(exp.Where) is not None
        if filters_rows and isinstance(body, exp.Select) and not (body.args.get("limit") or body.args.get("offset")):
            body.limit(-1, copy=False).offset(0, copy=False)  # the fence: row filters run first
        objects = set()
        for table in physical_tables(body):
            if not table.db:
                table.set("db", exp.to_identifier("main", quoted=True))
            objects.add(f"{table.db}.{table.name}")
        _keep_in_use(body)
        text = body.sql(dialect="sqlite")
        name = "dp_" + digest(text, key=self._key)
        ctes = rename_ctes(body, name)
        if ctes:
            text = body.sql(dialect="sqlite")
        relation = GovernedRelation(mark.product, name, text, tuple(sorted(objects)), (name, *ctes), filters_rows)
        reference = exp.table_(name, db="temp", quoted=True)
        alias = source.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            reference.set("alias", alias)
        source.replace(reference)
        return relation

    def check(self, statement: exp.Query, relations: Iterable[GovernedRelation]) -> None:
        """Refuse a statement whose own CTEs reuse a scope name (SQLite would report their reads as the view's).

        Raises:
            QueryExecutionError: such a CTE exists.
        """
        scopes = {scope.lower() for relation in relations for scope in relation.scopes}
        if cte_names(statement) & scopes:
            raise QueryExecutionError(
                f"{self.connection!r} refused the statement: a CTE reuses the name of a governed source; rename the CTE"
            )

    def run(self, conn: sa.Connection, prepared: Prepared, limits: Limits, deadline: Deadline) -> RowSet:
        """Create the statement's views on ``conn`` if needed and run it under the governed authorizer.

        Raises:
            QueryExecutionError: the statement reads outside its governed sources (or as the driver says).
        """
        raw: Any = conn.connection.dbapi_connection
        views: OrderedDict[str, None] = conn.connection.info.setdefault(_VIEWS, OrderedDict())
        self._ensure(conn, raw, views, prepared.relations)
        parameters = _sqlite_parameters(prepared.parameters)
        if not prepared.ctes:
            return self._run_kept(conn, raw, prepared, parameters, limits, deadline)
        self.release(conn)  # sqlite_master is read under the read-only authorizer
        stored = {str(name).lower() for (name,) in conn.exec_driver_sql(_STORED_NAMES)}
        gate = _Gate(prepared.relations, ctes=set(prepared.ctes) - stored)
        raw.set_authorizer(gate)
        try:
            rowset = self._fetch(conn, gate, prepared.sql, parameters, limits, deadline)
        finally:
            raw.set_authorizer(read_only_authorizer)
        rowset.objects = sorted(gate.read)
        return rowset

    def _run_kept(
        self,
        conn: sa.Connection,
        raw: Any,
        prepared: Prepared,
        parameters: dict[str, Any] | None,
        limits: Limits,
        deadline: Deadline,
    ) -> RowSet:
        """Run a statement without CTEs under its views' gate, which stays on the connection afterwards.

        Setting an authorizer expires every prepared statement of the connection, so a gate replaced on
        each call would make SQLite prepare and authorize the statement again each time. The gate of the
        last views read stays installed instead (the connection's cached statements were authorized by
        it); :meth:`release` puts the read-only authorizer back before the connection runs anything else.
        """
        key = tuple(r.name for r in prepared.relations)
        held = conn.connection.info.get(_GATE)
        if held is not None and held[0] == key:
            gate = held[1]
        else:
            gate = _Gate(prepared.relations, ctes=set())
            raw.set_authorizer(gate)
            conn.connection.info[_GATE] = (key, gate)
        try:
            rowset = self._fetch(conn, gate, prepared.sql, parameters, limits, deadline)
        except BaseException:
            self.release(conn)
            raise
        rowset.objects = prepared.objects
        return rowset

    def release(self, conn: sa.Connection) -> None:
        """Put the connection's everyday read-only authorizer back if a governed gate was left on it."""
        if conn.connection.info.pop(_GATE, None) is not None:
            conn.connection.dbapi_connection.set_authorizer(read_only_authorizer)  # type: ignore[union-attr]

    def _fetch(
        self,
        conn: sa.Connection,
        gate: _Gate,
        sql: str,
        parameters: dict[str, Any] | None,
        limits: Limits,
        deadline: Deadline,
    ) -> RowSet:
        try:
            result = conn.exec_driver_sql(sql, parameters)
            try:
                return fetch_capped(list(result.keys()), result.fetchmany, limits, deadline)
            finally:
                result.close()
        except sa_exc.DBAPIError as exc:
            if gate.refused is None:
                raise
            raise QueryExecutionError(
                f"{self.connection!r} refused the statement: it {gate.refused}; governed statements read "
                "products only through their governed sources",
                orig=exc.orig,
            ) from exc

    def _ensure(
        self, conn: sa.Connection, raw: Any, views: OrderedDict[str, None], relations: tuple[GovernedRelation, ...]
    ) -> None:
        """Create the missing views of ``relations`` on this connection (dropping the least recently used)."""
        for relation in relations:
            if relation.name in views:
                views.move_to_end(relation.name)
        missing = {r.name: r for r in relations if r.name not in views}
        if not missing:
            return
        wanted = {r.name for r in relations}
        excess = len(views) + len(missing) - MAX_VIEWS
        stale = [name for name in views if name not in wanted][: max(0, excess)]
        raw.set_authorizer(_schema_gate(set(missing) | set(stale)))
        try:
            conn.exec_driver_sql("PRAGMA query_only = OFF")
            try:
                for name in stale:
                    conn.exec_driver_sql(f'DROP VIEW IF EXISTS "temp"."{name}"')
                    del views[name]
                for name, relation in missing.items():
                    conn.exec_driver_sql(f'CREATE TEMP VIEW IF NOT EXISTS "{name}" AS {relation.body}')
                    views[name] = None
            finally:
                try:
                    conn.exec_driver_sql("PRAGMA query_only = ON")
                except BaseException:
                    conn.invalidate()  # never hand a writable connection back to the pool
                    raise
        finally:
            raw.set_authorizer(read_only_authorizer)
            conn.connection.info.pop(_GATE, None)


def _keep_in_use(body: exp.Expr) -> None:
    """AND ``"c" IS "c"`` for source columns the body projects (see "Flattened views")."""
    source = body.args.get("from_")
    if not isinstance(body, exp.Select) or not isinstance(source, exp.From):
        return
    alias = source.this.alias_or_name
    used = dict.fromkeys(
        column.name
        for projection in body.expressions
        for column in projection.find_all(exp.Column)
        if column.table == alias
    )
    # A table holds at most one rowid column, so two of its columns keep it in use; a source query's
    # columns may come from several tables (a join), so all of them are kept in use.
    keep = list(used) if isinstance(source.this, exp.Subquery) else list(used)[:2]
    for name in keep:
        column = exp.column(name, table=alias, quoted=True)
        body.where(exp.Is(this=column, expression=column.copy()), copy=False)


class _Gate:
    """The authorizer of one governed statement; records the physical tables read and what it refused."""

    def __init__(self, relations: Iterable[GovernedRelation], *, ctes: set[str]) -> None:
        relations = list(relations)
        self.views = {r.name.lower() for r in relations}
        self.scopes = {s.lower() for r in relations for s in r.scopes}
        self.ctes = ctes  # the statement's own CTEs that share no name with a stored table or view
        self.read: set[str] = set()
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action in _GOVERNED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and arg1:
            table = arg1.lower()
            if table in self.views and db in (None, "temp"):
                return sqlite3.SQLITE_OK  # a column of one of this statement's governed views
            inside = source is not None and source.lower() in self.scopes
            if inside and db not in (None, "temp") and not table.startswith("sqlite_"):
                self.read.add(f"{db}.{arg1}")
                return sqlite3.SQLITE_OK
            if db is None and not arg2 and (table in self.ctes or (inside and table in self.scopes)):
                return sqlite3.SQLITE_OK  # a CTE used without its columns (count(*), a recursive CTE)
            through = f" through {source}" if source else ""  # e.g. a view of the database a product reads
            self.refused = (
                self.refused or f"reads {f'{db}.{arg1}' if db else arg1}{through} outside its governed sources"
            )
            return sqlite3.SQLITE_DENY
        self.refused = self.refused or "does more than read its governed sources"
        return sqlite3.SQLITE_DENY


def _schema_gate(names: set[str]) -> Authorizer:
    """An authorizer that admits creating and dropping exactly the TEMP views ``names`` (and lifting query_only)."""

    def gate(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action == sqlite3.SQLITE_PRAGMA and arg1 == "query_only":
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_TEMP_VIEW) and arg1 in names:
            return sqlite3.SQLITE_OK
        if action in _SCHEMA_ROWS and db == "temp" and (arg1 == "sqlite_temp_master" or arg1 in names):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return gate


def _sqlite_parameters(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """Placeholder values as SQLite compares them: temporal values as the ISO text inline literals are."""
    if not parameters:
        return None
    return {
        name: value.isoformat(sep=" ")
        if isinstance(value, dt.datetime)
        else value.isoformat()
        if isinstance(value, dt.date | dt.time)
        else value
        for name, value in parameters.items()
    }
