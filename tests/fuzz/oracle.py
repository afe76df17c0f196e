"""The oracle: each principal's governed view of each product as a plain table in a scratch database.

The policy is applied here in Python, from the contract as written (YAML) and the raw rows, without
any of ``catalog.policy`` / ``catalog.compile``: those are what the fuzzer tests. Rules reimplemented:

* access: the principal matches one subject of ``policy.access`` (``*``, ``principal:<name>``,
  ``role:<role>``); unreadable products are left out of the scratch database;
* row filters: every filter whose ``when`` matches applies; only ``column = 'literal'`` is modelled
  (anything else fails loudly rather than give a wrong oracle);
* masks, unless a subject of ``unless`` matches; the strictest of several wins
  (null > redact > hash > partial): ``hash`` = md5 hex of salt || text, ``partial`` = ``***`` + the
  last four characters of values of eight characters or more (else ``***``), ``redact`` = ``***``,
  ``null`` = NULL; NULL stays NULL.

A scratch database holds the tables under the products' own names (``shop.customers``), so the
statement runs there as written, transpiled to the engine's dialect by sqlglot. Masked columns are
text (SQLite: no declared type, the affinity of the masking expressions); other columns keep the
native type of the source, so comparisons and arithmetic behave as over the governed source.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import re2
import sqlglot
from sqlglot import exp

from tests.fuzz.stores import FuzzStore, RawProduct, _libpq

__all__ = [
    "GovernedTable",
    "Oracle",
    "OracleError",
    "OracleResult",
    "OracleTooLarge",
    "Prepared",
    "governed_tables",
    "open_oracle",
]

STRICTNESS = {"partial": 0, "hash": 1, "redact": 2, "null": 3}
ORACLE_TIMEOUT_S = 20.0
ORACLE_MAX_ROWS = 20_000
_EQUALS = re.compile(r"^\s*\"?(\w+)\"?\s*=\s*'((?:[^']|'')*)'\s*$")


class OracleError(Exception):
    """The scratch database rejected (or could not run) the statement."""


class OracleTooLarge(OracleError):
    """The statement returns more rows than the oracle fetches: no verdict."""


@dataclass(frozen=True)
class GovernedTable:
    """A product as one principal may see it, computed in Python."""

    name: str
    columns: list[str]
    types: list[str | None]  # native type; None for a masked column (text)
    rows: list[tuple[Any, ...]]
    masked: dict[str, str]
    filters: list[str]


def subjects(principal: str, roles: frozenset[str]) -> set[str]:
    return {"*", f"principal:{principal}", *(f"role:{r}" for r in roles)}


def _listed(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def governed_table(
    contract: dict[str, Any], raw: RawProduct, principal: str, roles: frozenset[str], salt: str
) -> GovernedTable | None:
    """``raw`` as ``principal`` may see it, or None when the policy does not grant access."""
    policy = contract.get("policy") or {}
    who = subjects(principal, roles)
    if not who & set(_listed(policy.get("access"))):
        return None
    masked: dict[str, str] = {}
    for rule in policy.get("masking") or []:
        if who & set(_listed(rule.get("unless"))):
            continue
        for column in rule["columns"]:
            if column not in masked or STRICTNESS[rule["method"]] > STRICTNESS[masked[column]]:
                masked[column] = rule["method"]
    filters = [f["where"] for f in policy.get("row_filters") or [] if f["when"] in who]
    tests = [_row_test(where, raw.columns) for where in filters]
    index = {c: i for i, c in enumerate(raw.columns)}
    rows = []
    for row in raw.rows:
        if all(test(row) for test in tests):
            values = list(row)
            for column, method in masked.items():
                values[index[column]] = mask(values[index[column]], method, salt)
            rows.append(tuple(values))
    types = [None if c in masked else t for c, t in zip(raw.columns, raw.types, strict=True)]
    return GovernedTable(raw.name, raw.columns, types, rows, masked, filters)


def _row_test(where: str, columns: list[str]) -> Any:
    match = _EQUALS.match(where)
    if match is None or match.group(1) not in columns:
        raise NotImplementedError(f"the oracle models row filters of the form column = 'text', not {where!r}")
    position, wanted = columns.index(match.group(1)), match.group(2).replace("''", "'")
    return lambda row: row[position] == wanted


def mask(value: Any, method: str, salt: str) -> str | None:
    """A raw value masked by ``method``, as the policy defines it."""
    if value is None or method == "null":
        return None
    if not isinstance(value, str):
        raise NotImplementedError(f"the oracle masks text values only, not {type(value).__name__}")
    if method == "hash":
        return hashlib.md5((salt + value).encode("utf-8"), usedforsecurity=False).hexdigest()
    if method == "partial":
        return "***" + value[-4:] if len(value) >= 8 else "***"
    if method == "redact":
        return "***"
    raise NotImplementedError(f"unknown mask method {method!r}")


def governed_tables(store: FuzzStore, principal: str) -> dict[str, GovernedTable]:
    """Every product of ``store`` that ``principal`` may read, as that principal sees it."""
    roles = store.principals[principal]
    tables = {}
    for name, contract in store.contracts.items():
        table = governed_table(contract, store.raw[name], principal, roles, store.salt)
        if table is not None:
            tables[name] = table
    return tables


@dataclass(frozen=True)
class Prepared:
    """A statement as the oracle runs it, and what its outer LIMIT/OFFSET were."""

    text: str
    unlimited: bool  # the statement had an outer LIMIT or OFFSET (not applied: all rows are fetched)
    limit: int | None
    offset: int
    named: bool  # the statement names every output (aliases, columns): the names must agree
    statement: exp.Expr | None = None  # the parsed statement, without its outer LIMIT/OFFSET
    dialect: str = "sqlite"

    def capped(self, cap: int) -> Prepared:
        """This statement with its outer LIMIT (at most ``cap``) and OFFSET, as the product path runs it."""
        assert isinstance(self.statement, exp.Query)  # prepare() takes queries only
        query = self.statement.limit(min(cap, self.limit if self.limit is not None else cap))
        if self.offset:
            query = query.offset(self.offset, copy=False)
        return Prepared(query.sql(dialect=self.dialect), False, None, 0, self.named)


@dataclass(frozen=True)
class OracleResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    prepared: Prepared


_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Oracle:
    """A scratch database of one engine holding one principal's governed tables."""

    dialect: str

    def __init__(self, tables: dict[str, GovernedTable]) -> None:
        self.tables = tables
        self._lock = threading.Lock()

    def prepare(self, sql: str) -> Prepared:
        """``sql`` (generic SQL) transpiled to this engine, without its outer LIMIT/OFFSET.

        Raises:
            OracleError: the statement does not parse or transpile.
        """
        try:
            statements = [s for s in sqlglot.parse(sql, read=None) if s is not None]
        except (sqlglot.errors.SqlglotError, RecursionError) as exc:
            raise OracleError(f"sqlglot: {exc}"[:300]) from exc
        if len(statements) != 1:
            raise OracleError(f"{len(statements)} statements")
        (statement,) = statements
        if not isinstance(statement, exp.Query):
            raise OracleError(f"not a query: {type(statement).__name__}")
        limit, offset = _literal(statement.args.get("limit")), _literal(statement.args.get("offset"))
        unlimited = bool(statement.args.get("limit") or statement.args.get("offset"))
        statement.set("limit", None)
        statement.set("offset", None)
        leftmost = statement
        while isinstance(leftmost, exp.SetOperation):
            leftmost = leftmost.this
        named = isinstance(leftmost, exp.Select) and all(
            isinstance(e, exp.Alias) or (isinstance(e, exp.Column) and not isinstance(e.this, exp.Star))
            for e in leftmost.expressions
        )
        for identifier in statement.find_all(exp.Identifier):
            # sqlglot reads some characters as part of a bare name that engines do not (a control
            # character after a comment's carriage return): print them quoted, as the product does
            if not identifier.quoted and not _BARE_NAME.fullmatch(identifier.name):
                identifier.set("quoted", True)
        try:
            text = statement.sql(dialect=self.dialect)
        except (sqlglot.errors.SqlglotError, RecursionError) as exc:
            raise OracleError(f"sqlglot: {exc}"[:300]) from exc
        return Prepared(text, unlimited, limit, offset or 0, named, statement, self.dialect)

    def execute(self, prepared: Prepared) -> OracleResult:
        """Run a prepared statement: every row it returns without its outer LIMIT/OFFSET.

        Raises:
            OracleError: the engine rejects the statement, or it returns more than ``ORACLE_MAX_ROWS`` rows.
        """
        with self._lock:
            columns, rows = self._execute(prepared.text)
        return OracleResult(columns, rows, prepared)

    def run(self, sql: str) -> OracleResult:
        return self.execute(self.prepare(sql))

    def _execute(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _indexed(table: GovernedTable) -> list[str]:
    """Key-like columns, indexed so that correlated subqueries do not scan (the answer is the same)."""
    return [c for c in table.columns if c.endswith(("_id", "sku"))]


def _literal(node: exp.Expr | None) -> int | None:
    value = node.expression if isinstance(node, exp.Limit | exp.Offset) else None
    return int(value.name) if isinstance(value, exp.Literal) and value.is_int else None


def _fetch(cursor: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = [d[0] for d in cursor.description or []]
    rows = cursor.fetchmany(ORACLE_MAX_ROWS + 1)
    if len(rows) > ORACLE_MAX_ROWS:
        raise OracleTooLarge(f"more than {ORACLE_MAX_ROWS} rows")
    return columns, [tuple(r) for r in rows]


def _regexp(pattern: str | None, value: Any) -> int | None:
    if pattern is None or value is None:
        return None
    return int(re2.search(pattern, str(value)) is not None)


class SQLiteOracle(Oracle):
    dialect = "sqlite"

    def __init__(self, tables: dict[str, GovernedTable]) -> None:
        super().__init__(tables)
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.create_function("regexp", 2, _regexp, deterministic=True)  # SQLite has no REGEXP of its own
        for schema in sorted({name.split(".")[0] for name in tables}):
            self.conn.execute(f"ATTACH ':memory:' AS \"{schema}\"")
        for name, table in tables.items():
            schema, short = name.split(".")
            defs = ", ".join(f'"{c}" {t or ""}'.strip() for c, t in zip(table.columns, table.types, strict=True))
            self.conn.execute(f'CREATE TABLE "{schema}"."{short}" ({defs})')
            marks = ", ".join("?" for _ in table.columns)
            self.conn.executemany(f'INSERT INTO "{schema}"."{short}" VALUES ({marks})', table.rows)
            for column in _indexed(table):
                self.conn.execute(f'CREATE INDEX "{schema}"."{short}_{column}" ON "{short}" ("{column}")')
        self.conn.commit()
        self.conn.execute("PRAGMA query_only = ON")

    def _execute(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with _deadline(self.conn.interrupt):
            try:
                return _fetch(self.conn.execute(sql))
            except sqlite3.Error as exc:
                raise OracleError(f"sqlite: {exc}") from exc
            except (OverflowError, ValueError) as exc:
                raise OracleError(f"sqlite value: {exc}") from exc

    def close(self) -> None:
        self.conn.close()


class DuckDBOracle(Oracle):
    dialect = "duckdb"

    def __init__(self, tables: dict[str, GovernedTable]) -> None:
        super().__init__(tables)
        self.conn = duckdb.connect(":memory:")
        for schema in sorted({name.split(".")[0] for name in tables}):
            self.conn.execute(f'CREATE SCHEMA "{schema}"')
        for name, table in tables.items():
            schema, short = name.split(".")
            types = [t or "VARCHAR" for t in table.types]
            defs = ", ".join(f'"{c}" {t}' for c, t in zip(table.columns, types, strict=True))
            self.conn.execute(f'CREATE TABLE "{schema}"."{short}" ({defs})')
            data = pa.table(
                {f"c{i}": pa.array([row[i] for row in table.rows]) for i in range(len(table.columns))}
                if table.rows
                else {f"c{i}": pa.array([], pa.null()) for i in range(len(table.columns))}
            )
            self.conn.register("oracle_rows", data)
            self.conn.execute(f'INSERT INTO "{schema}"."{short}" SELECT * FROM oracle_rows')
            self.conn.unregister("oracle_rows")

    def _execute(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = self.conn.cursor()
        try:
            with _deadline(cursor.interrupt):
                cursor.execute(sql)
                return _fetch(cursor)
        except duckdb.Error as exc:
            raise OracleError(f"duckdb: {exc}") from exc
        finally:
            cursor.close()

    def close(self) -> None:
        self.conn.close()


class PostgresOracle(Oracle):
    dialect = "postgres"

    def __init__(self, tables: dict[str, GovernedTable], url: str) -> None:
        super().__init__(tables)
        self.conn = psycopg.connect(_libpq(url), autocommit=True)
        for schema in sorted({name.split(".")[0] for name in tables}):
            self.conn.execute(f'CREATE SCHEMA "{schema}"')
        for name, table in tables.items():
            schema, short = name.split(".")
            types = [t or "text" for t in table.types]
            defs = ", ".join(f'"{c}" {t}' for c, t in zip(table.columns, types, strict=True))
            self.conn.execute(f'CREATE TABLE "{schema}"."{short}" ({defs})')
            columns = ", ".join(f'"{c}"' for c in table.columns)
            with self.conn.cursor().copy(f'COPY "{schema}"."{short}" ({columns}) FROM STDIN') as copy:
                for row in table.rows:
                    copy.write_row(row)
            for column in _indexed(table):
                self.conn.execute(f'CREATE INDEX ON "{schema}"."{short}" ("{column}")')
            self.conn.execute(f'ANALYZE "{schema}"."{short}"')
        self.conn.execute(f"SET statement_timeout = {int(ORACLE_TIMEOUT_S * 1000)}")
        self.conn.execute("SET default_transaction_read_only = on")

    def _execute(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql)
                return _fetch(cursor)
        except psycopg.Error as exc:
            raise OracleError(f"postgresql: {exc}") from exc

    def close(self) -> None:
        self.conn.close()


@contextmanager
def _deadline(interrupt: Any) -> Iterator[None]:
    timer = threading.Timer(ORACLE_TIMEOUT_S, interrupt)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def open_oracle(store: FuzzStore, principal: str, *, pg_url: str | None = None) -> Oracle:
    """The scratch database of ``principal`` on the engine of ``store`` (``pg_url``: an empty database)."""
    tables = governed_tables(store, principal)
    if store.kind == "sqlite":
        return SQLiteOracle(tables)
    if store.kind == "duckdb":
        return DuckDBOracle(tables)
    if pg_url is None:
        raise ValueError("a PostgreSQL oracle needs an empty database")
    return PostgresOracle(tables, pg_url)
