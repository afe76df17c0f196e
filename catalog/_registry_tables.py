"""SQLAlchemy Core tables of the registry and audit log, and the engine they live in.

Portable between SQLite and PostgreSQL: contracts are canonical JSON text, timestamps are stored in
UTC and always come back timezone-aware.

Upgrades: ``metadata.create_all`` also adds the columns listed in ``_ADDED_COLUMNS`` to tables created
by an older version (``ALTER TABLE ... ADD COLUMN``, nullable), so opening an existing registry
migrates it. Replicas opening one PostgreSQL registry together may race; ``IF NOT EXISTS`` makes the
loser a no-op, and SQLite serialises the check and the change in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

__all__ = [
    "audit",
    "check_results",
    "engine_for",
    "metadata",
    "product_events",
    "product_versions",
    "products",
    "replica_syncs",
    "upgrade_schema",
    "utcnow",
    "write_transaction",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONList(TypeDecorator[list[str]]):
    """A list of strings kept as JSON text (``["a","b"]``); NULL stays None."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Dialect) -> list[str] | None:
        return None if value is None else [str(v) for v in json.loads(value)]


metadata = MetaData()

products = Table(
    "dp_products",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("domain", String(100), nullable=False, index=True),
    Column("latest_version", String(40), nullable=False),
    Column("deprecated", Boolean, nullable=False, default=False),
    Column("deprecation_note", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

product_versions = Table(
    "dp_product_versions",
    metadata,
    Column("name", String(200), ForeignKey("dp_products.name"), primary_key=True),
    Column("version", String(40), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("contract", Text, nullable=False),  # canonical JSON
    Column("content_sha256", String(64), nullable=False),
    Column("registered_by", String(200), nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("change_summary", Text, nullable=False),
)

product_events = Table(
    "dp_product_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), ForeignKey("dp_products.name"), nullable=False, index=True),
    Column("action", String(20), nullable=False),  # registered | deprecated
    Column("version", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("summary", Text, nullable=False),
)

audit = Table(
    "dp_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("principal", String(200), nullable=False),
    Column("tool", String(100), nullable=False),
    Column("product", String(200)),
    Column("args_digest", String(64), nullable=False),
    Column("rows", BigInteger),
    Column("bytes", BigInteger),
    Column("latency_ms", Float, nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("error_code", String(50)),
    Column("objects", JSONList),  # physical objects the statement touched; NULL when none ran
    Index("ix_dp_audit_time", "time"),
    Index("ix_dp_audit_principal_time", "principal", "time"),
)

check_results = Table(
    "dp_check_results",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("product", String(200), nullable=False),
    Column("version", String(40), nullable=False),  # contract version the check belongs to
    Column("check_index", Integer, nullable=False),  # position in the contract's quality list
    Column("check_name", String(200), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("status", String(10), nullable=False),  # pass | warn | fail | error
    Column("observed", Text),
    Column("threshold", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("rows_scanned", BigInteger),
    Column("duration_ms", Float, nullable=False),
    Column("checked_at", UTCDateTime, nullable=False),
    Index("ix_dp_check_results_product_time", "product", "checked_at"),
)

replica_syncs = Table(
    "dp_replica_syncs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("product", String(200), nullable=False),
    Column("version", String(40), nullable=False),  # contract version the replica was built for
    Column("store", String(20), nullable=False),  # duckdb
    Column("mode", String(20), nullable=False),  # full | incremental
    Column("status", String(10), nullable=False),  # ok | failed
    Column("path", Text),  # the replica file readers open (ok runs)
    Column("as_of", UTCDateTime),  # when the run began reading the source: the replica holds its state then
    Column("watermark", Text),  # JSON: the largest cursor value copied
    Column("rows", BigInteger),  # rows the replica holds
    Column("changed", BigInteger),  # rows copied (upserted) by the run
    Column("deleted", BigInteger),  # rows the run removed
    Column("runs_since_compare", Integer),  # incremental runs since the last full key comparison
    Column("masked_at_rest", Boolean, nullable=False, default=False),
    Column("columns_digest", String(64)),  # the contract columns the replica was built with
    Column("duration_ms", Float, nullable=False),
    Column("message", Text),
    Column("synced_at", UTCDateTime, nullable=False),
    Index("ix_dp_replica_syncs_product_time", "product", "synced_at"),
)

#: Columns added after their table's first release: (table, column name). Always nullable.
_ADDED_COLUMNS: tuple[tuple[Table, str], ...] = ((audit, "objects"),)


def upgrade_schema(conn: Connection) -> list[str]:
    """Add the columns of ``_ADDED_COLUMNS`` that existing tables lack; the ``table.column`` names added.

    Runs after every ``metadata.create_all`` (see the ``after_create`` listener below) and is idempotent.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refuses the DDL.
    """
    inspector = inspect(conn)
    added = []
    for table, name in _ADDED_COLUMNS:
        if not inspector.has_table(table.name):
            continue
        if name in {c["name"] for c in inspector.get_columns(table.name)}:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        guard = " IF NOT EXISTS" if conn.dialect.name == "postgresql" else ""
        preparer = conn.dialect.identifier_preparer
        conn.exec_driver_sql(
            f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN{guard} {preparer.quote(name)} {kind}"
        )
        added.append(f"{table.name}.{name}")
    return added


@event.listens_for(metadata, "after_create")
def _upgrade_after_create(target: MetaData, connection: Connection, **_: Any) -> None:
    upgrade_schema(connection)


def engine_for(url: str) -> Engine:
    """An engine for a SQLAlchemy URL, or for a SQLite file when ``url`` is a plain path.

    Server databases (PostgreSQL) check a pooled connection before use, so the registry recovers by
    itself once a restarted server is back. SQLite connections use WAL (readers and the writer do not
    block each other), wait for locks instead of failing at once, enforce foreign keys, and start
    write transactions with ``BEGIN IMMEDIATE`` (``execution_options(dp_write=True)``) so a
    read-then-write registration cannot interleave with another writer.
    """
    if "://" not in url:
        path = Path(url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    if make_url(url).get_backend_name() != "sqlite":
        # a pooled connection that died with a restarted server is replaced before use, not failed on
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
    with engine.connect() as conn:
        conn.execution_options(dp_write=True)
        with conn.begin():
            yield conn


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let the "begin" hook emit BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 10000")
    # Readers do not wait for the audit writer. Switching a new file to WAL needs an exclusive lock and
    # is answered "database is locked" at once, without waiting, while another connection does the same.
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))
    # In WAL mode NORMAL keeps every commit atomic and durable across process crashes; only an OS
    # crash or power loss can roll back the last commits. It takes an fsync off every audit write.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    write = connection.get_execution_options().get("dp_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
