"""A governed product with personal data, filled identically into SQLite, DuckDB and PostgreSQL.

``crm.people``: e-mail hashed, phone partially shown, name redacted, national id nulled unless the
caller holds ``role:pii``; callers with ``role:eu`` see only ``region = 'EU'``. Values carry quotes,
backslashes, unicode, ``%``/``_`` and NULLs. ``code`` is numeric text in EU rows and not a number
elsewhere, so an expression that fails on hidden rows shows whether outer predicates run first.

Stores are reached two ways: :class:`DirectStore` runs rendered SQL on the driver (unit tests), and
:func:`open_connector` goes through the project's connectors (property tests).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import duckdb
import yaml
from sqlglot import exp

from catalog.contract import ProductContract
from catalog.principal import Principal

SALT = "pe'pper\\salt"

CONTRACT_YAML = """\
name: crm.people
version: 1.0.0
title: People
description: One row per person.
owner: {team: crm}
source: {connection: crm, table: people}
primary_key: [person_id]
columns:
  - {name: person_id, type: integer, nullable: false, description: Key}
  - {name: email, type: string, pii: email, description: E-mail}
  - {name: phone, type: string, pii: phone, description: Phone}
  - {name: full_name, type: string, pii: name, description: Name}
  - {name: national_id, type: string, pii: national_id, description: National id}
  - {name: region, type: string, nullable: false, description: Region}
  - {name: amount, type: decimal, description: Amount}
  - {name: score, type: integer, description: Score, nullable: true}
  - {name: signup, type: date, description: Signup day}
  - {name: note, type: string, description: Free text}
  - {name: code, type: string, description: Numeric text in EU rows}
policy:
  access: [role:analyst, role:eu]
  row_filters: [{when: role:eu, where: "region = 'EU'"}]
  masking:
    - {columns: [email], method: hash, unless: role:pii}
    - {columns: [phone], method: partial, unless: role:pii}
    - {columns: [full_name], method: redact, unless: role:pii}
    - {columns: [national_id], method: "null", unless: [role:pii]}
"""

EU_ANALYST = Principal(name="eve", roles=frozenset({"eu"}))
ANALYST = Principal(name="ann", roles=frozenset({"analyst"}))
PII_READER = Principal(name="pia", roles=frozenset({"analyst", "pii"}))
OUTSIDER = Principal(name="otto", roles=frozenset({"marketing"}))

REGIONS = ("EU", "US", "APAC")
NOTES = ("it's", "back\\slash", "100% _sure_", "Zoë — ünïcode ✓", None, "a\nnewline", '"quoted"', "")

COLUMNS = [
    "person_id",
    "email",
    "phone",
    "full_name",
    "national_id",
    "region",
    "amount",
    "score",
    "signup",
    "note",
    "code",
]


def contract() -> ProductContract:
    return ProductContract.model_validate(yaml.safe_load(CONTRACT_YAML))


def make_rows(n: int = 48) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(1, n + 1):
        region = REGIONS[i % 3]
        rows.append(
            (
                i,
                f"p{i}.o'neil@exämple.org",
                None if i % 5 == 0 else f"+49 170 {i:07d}",
                f"Zoë O'Brien-{i}\\",
                f"NID-{i:04d}-X",
                region,
                None if i % 7 == 0 else decimal.Decimal(i * 37 % 100) + decimal.Decimal("0.25"),
                None if i % 4 == 0 else i % 6,
                dt.date(2024, 1, 1) + dt.timedelta(days=i * 3),
                NOTES[i % len(NOTES)],
                str(i) if region == "EU" else f"hidden-{i}",
            )
        )
    return rows


ROWS = make_rows()
EU_ROWS = [r for r in ROWS if r[5] == "EU"]
#: Raw personal values that must never reach a caller without role:pii.
SECRETS = sorted({str(v) for r in ROWS for v in (r[1], r[2], r[3], r[4]) if v is not None})


def leaked(text: str) -> list[str]:
    """The raw personal values that occur in ``text``."""
    return [s for s in SECRETS if s in text]


def salted_md5(value: str) -> str:
    return hashlib.md5((SALT + value).encode("utf-8")).hexdigest()


_DDL = """CREATE TABLE people (person_id INTEGER PRIMARY KEY, email TEXT, phone TEXT, full_name TEXT,
national_id TEXT, region TEXT NOT NULL, amount DECIMAL(10, 2), score INTEGER, signup DATE, note TEXT, code TEXT)"""
_INSERT = "INSERT INTO people VALUES (" + ", ".join(["?"] * len(COLUMNS)) + ")"


def _md5(value: object) -> str | None:
    return None if value is None else hashlib.md5(str(value).encode("utf-8")).hexdigest()


def fill_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(_DDL)
        conn.executemany(
            _INSERT, [tuple(str(v) if isinstance(v, decimal.Decimal | dt.date) else v for v in r) for r in ROWS]
        )


def fill_duckdb(path: Path) -> None:
    with duckdb.connect(str(path)) as conn:
        conn.execute(_DDL)
        conn.executemany(_INSERT, ROWS)


def fill_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(_DDL)
        with conn.cursor() as cur:
            cur.executemany(_INSERT.replace("?", "%s"), ROWS)


@dataclass
class DirectStore:
    """Runs a sqlglot statement, rendered in ``dialect``, straight on the driver."""

    kind: str
    dialect: str
    run_sql: Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]

    def run(self, statement: exp.Expr) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.run_sql(statement.sql(dialect=self.dialect))


@contextmanager
def direct_store(kind: str, tmp: Path, pg_url: str | None = None) -> Iterator[DirectStore]:
    """A filled store of ``kind`` (sqlite, duckdb, postgresql) reached through its driver."""
    if kind == "sqlite":
        fill_sqlite(tmp / "people.sqlite")
        conn = sqlite3.connect(tmp / "people.sqlite")
        conn.create_function("md5", 1, _md5, deterministic=True)

        def run_sqlite(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
            cur = conn.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()

        try:
            yield DirectStore(kind, "sqlite", run_sqlite)
        finally:
            conn.close()
    elif kind == "duckdb":
        fill_duckdb(tmp / "people.duckdb")
        dconn = duckdb.connect(str(tmp / "people.duckdb"), read_only=True)

        def run_duckdb(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
            cur = dconn.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()

        try:
            yield DirectStore(kind, "duckdb", run_duckdb)
        finally:
            dconn.close()
    else:
        import psycopg

        assert pg_url is not None
        fill_postgres(pg_url)
        pconn = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

        def run_postgres(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
            with pconn.cursor() as cur:
                cur.execute(sql)  # type: ignore[arg-type]
                return [d.name for d in cur.description or []], cur.fetchall()

        try:
            yield DirectStore(kind, "postgres", run_postgres)
        finally:
            pconn.close()


_databases = iter(range(10**6))


@contextmanager
def store_for(kind: str, tmp_path_factory: Any, pg_cluster: Any) -> Iterator[DirectStore]:
    """A module-scoped :func:`direct_store`; PostgreSQL gets a new database on the session cluster."""
    tmp = tmp_path_factory.mktemp(f"gov-{kind}")
    url = pg_cluster.create_database(f"governance_{next(_databases)}_{tmp.name}") if kind == "postgresql" else None
    with direct_store(kind, tmp, url) as store:
        yield store


@contextmanager
def open_connector(request: Any, tmp_path_factory: Any, label: str) -> Iterator[Any]:
    """A project connector on a filled store of ``request.param`` (sqlite, duckdb, postgresql), named
    ``crm``; PostgreSQL gets a new database on the session cluster. For module-scoped store fixtures."""
    from connectors import ConnectionConfig, connector_for

    kind = request.param
    tmp = tmp_path_factory.mktemp(f"{label}-{kind}")
    if kind == "sqlite":
        fill_sqlite(tmp / "people.sqlite")
        config = ConnectionConfig(name="crm", kind="sqlite", path=str(tmp / "people.sqlite"))
    elif kind == "duckdb":
        fill_duckdb(tmp / "people.duckdb")
        config = ConnectionConfig(name="crm", kind="duckdb", path=str(tmp / "people.duckdb"))
    else:
        url = request.getfixturevalue("pg_cluster").create_database(f"{label}_{tmp.name}")
        fill_postgres(url)
        config = ConnectionConfig.model_validate({"name": "crm", "kind": "postgresql", "url": url})
    connector = connector_for(config)
    try:
        yield connector
    finally:
        anyio.run(connector.aclose)


def normalise(value: Any) -> Any:
    """A driver value comparable across stores (decimals and dates as text, floats rounded)."""
    if isinstance(value, decimal.Decimal):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
