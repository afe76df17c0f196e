"""The stores the fuzzer runs on: the demo workspace with its shop on SQLite, DuckDB or PostgreSQL.

* ``sqlite``: the demo as built (``shop.*`` on the SQLite file).
* ``duckdb``: the shop tables copied into a ``.duckdb`` file behind a ``duckdb`` connection, plus the
  demo's own ``analytics.*`` products (Parquet and CSV files read by DuckDB).
* ``postgresql``: the shop tables copied into a database of a real PostgreSQL cluster behind a
  ``postgresql`` connection.

The contracts are the demo's, unchanged; only the ``shop`` connection is swapped. A third principal,
``cy`` (role ``support``), is added to the demo's ``ana`` and ``sam``: it reads ``shop.customers`` and
``shop.reviews`` with personal data masked and is denied every other product.

:func:`read_raw` returns each product's raw rows and native column types straight from the physical
store (the contract's source table or query, nothing of our compiler): the oracle's input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import yaml

from catalog.loader import load_contract_file
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.settings import Settings, load_settings

__all__ = ["STORES", "FuzzStore", "RawProduct", "open_store"]

STORES = ("sqlite", "duckdb", "postgresql")
SHOP = ("shop.customers", "shop.orders", "shop.order_lines", "shop.reviews")
ANALYTICS = ("analytics.order_facts", "analytics.daily_sales")
PRODUCTS: dict[str, tuple[str, ...]] = {"sqlite": SHOP, "duckdb": SHOP + ANALYTICS, "postgresql": SHOP}
EXTRA_PRINCIPALS: dict[str, list[str]] = {"cy": ["support"]}
# The demo's limits, with a shorter statement timeout: a correlated subquery over a row-filtered product
# can take seconds (its governed source is fenced, so it is scanned for every outer row); it counts as
# inconclusive instead of holding up the run.
LIMITS = {"max_rows": 1000, "max_bytes": 4_000_000, "timeout_s": 2}

# SQLite declared type of the demo's shop tables -> (DuckDB type, PostgreSQL type) of the copies.
_TYPES = {
    "INTEGER": ("INTEGER", "INTEGER"),
    "TEXT": ("VARCHAR", "TEXT"),
    "DATE": ("DATE", "DATE"),
    "TIMESTAMP": ("TIMESTAMP", "TIMESTAMP"),
    "NUMERIC(10, 2)": ("DECIMAL(10,2)", "NUMERIC(10,2)"),
    "BOOLEAN": ("BOOLEAN", "BOOLEAN"),
}
# The demo keeps review times as text in SQLite; the copies store them as the contract's timestamp.
_RETYPED = {("reviews", "reviewed_at"): "TIMESTAMP"}
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "INTEGER": int,
    "TEXT": str,
    "DATE": date.fromisoformat,
    "TIMESTAMP": datetime.fromisoformat,
    "NUMERIC(10, 2)": lambda v: Decimal(str(v)).quantize(Decimal("0.01")),
    "BOOLEAN": bool,
}


@dataclass(frozen=True)
class RawProduct:
    """A product's rows as its source holds them, before any policy."""

    name: str
    columns: list[str]
    types: list[str]  # native type of each column in the store (the oracle's tables use them)
    rows: list[tuple[Any, ...]]


@dataclass
class FuzzStore:
    """One store under test: settings to open the service with, the contracts as written, raw rows."""

    kind: str
    settings: Settings
    contracts: dict[str, dict[str, Any]]
    raw: dict[str, RawProduct]
    principals: dict[str, frozenset[str]]

    @property
    def salt(self) -> str:
        return self.settings.require_salt()

    @property
    def products(self) -> tuple[str, ...]:
        return PRODUCTS[self.kind]

    def connection_of(self, product: str) -> str:
        return str(self.contracts[product]["source"]["connection"])


def open_store(kind: str, workspace: DemoWorkspace, *, pg_url: Callable[[str], str] | None = None) -> FuzzStore:
    """Lay out store ``kind`` over a built demo workspace and register the demo contracts for it.

    ``pg_url(name)`` creates a PostgreSQL database and returns its SQLAlchemy URL (postgresql only).
    """
    base = load_settings(workspace.config_path)
    connections = {name: c.model_dump(mode="json", exclude={"name"}) for name, c in base.connections.items()}
    for name, config in base.connections.items():
        if config.url is not None:
            connections[name]["url"] = config.url.get_secret_value()
    shop_db = workspace.path / "data" / "shop.db"
    if kind == "duckdb":
        path = workspace.path / "data" / "shop.duckdb"
        if not path.exists():
            _copy_to_duckdb(shop_db, path)
        connections["shop"] = {"kind": "duckdb", "path": str(path)}
    elif kind == "postgresql":
        if pg_url is None:
            raise ValueError("the postgresql store needs a PostgreSQL cluster")
        url = pg_url("fuzz_shop")
        _copy_to_postgres(shop_db, url)
        connections["shop"] = {"kind": "postgresql", "url": url}
    elif kind != "sqlite":
        raise ValueError(f"unknown store {kind!r}; stores are {STORES}")
    principals = [p.model_dump(exclude_none=True) for p in base.principals]
    principals += [{"name": name, "roles": roles} for name, roles in EXTRA_PRINCIPALS.items()]
    settings = load_settings(
        workspace.config_path,
        registry_url=f"sqlite:///{workspace.path / '.dataproducts' / f'fuzz-{kind}.db'}",
        connections=connections,
        principals=principals,
        limits=LIMITS,
    )
    contracts: dict[str, dict[str, Any]] = {}
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        for path in workspace.contract_paths:
            if path.stem in PRODUCTS[kind]:
                contracts[path.stem] = yaml.safe_load(path.read_text(encoding="utf-8"))
                for contract in load_contract_file(path):
                    registry.register(contract, actor="fuzz")
    finally:
        registry.close()
    raw = {name: read_raw(settings, contract) for name, contract in contracts.items()}
    return FuzzStore(
        kind=kind,
        settings=settings,
        contracts=contracts,
        raw=raw,
        principals={p.name: frozenset(p.roles) for p in settings.principals},
    )


def read_raw(settings: Settings, contract: dict[str, Any]) -> RawProduct:
    """The product's columns read from its source as the store holds them (no masks, no row filters)."""
    source = contract["source"]
    config = settings.connection(source["connection"])
    columns = [c["name"] for c in contract["columns"]]
    body = source.get("query") or f'SELECT * FROM "{source["table"]}"'
    projection = ", ".join(f'"{c}"' for c in columns)
    if config.kind == "sqlite":
        assert config.url is not None
        lite = sqlite3.connect(config.url.get_secret_value().removeprefix("sqlite:///"))
        try:
            lite.execute(f"CREATE TEMP VIEW fuzz_source AS {body}")
            declared = {row[1]: row[2] for row in lite.execute("PRAGMA temp.table_info(fuzz_source)")}
            rows = lite.execute(f"SELECT {projection} FROM temp.fuzz_source").fetchall()
        finally:
            lite.close()
        return RawProduct(contract["name"], columns, [declared[c] for c in columns], rows)
    if config.kind == "duckdb":
        with duckdb.connect(config.path or ":memory:", read_only=config.path is not None) as duck:
            for view, pattern in config.files.items():
                reader = "read_parquet" if pattern.endswith(".parquet") else "read_csv"
                duck.execute(f"CREATE TEMP VIEW \"{view}\" AS SELECT * FROM {reader}('{pattern}')")
            described = duck.execute(f"DESCRIBE SELECT {projection} FROM ({body})").fetchall()
            rows = duck.execute(f"SELECT {projection} FROM ({body})").fetchall()
        return RawProduct(contract["name"], columns, [str(d[1]) for d in described], rows)
    assert config.url is not None
    with psycopg.connect(_libpq(config.url.get_secret_value())) as pg:
        pg.execute(f"CREATE TEMP VIEW fuzz_source AS {body}")
        types: dict[str, str] = dict(
            pg.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'fuzz_source'::regclass AND attnum > 0"
            ).fetchall()
        )
        rows = pg.execute(f"SELECT {projection} FROM fuzz_source").fetchall()
        pg.rollback()
    return RawProduct(contract["name"], columns, [types[c] for c in columns], rows)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _shop_tables(shop_db: Path) -> list[tuple[str, list[tuple[str, str, bool]], list[tuple[Any, ...]]]]:
    """(table, [(column, SQLite declared type, part of the primary key)], typed rows) of the demo shop."""
    conn = sqlite3.connect(shop_db)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        tables = []
        for table in names:
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            columns = [(row[1], _RETYPED.get((table, row[1]), row[2]), bool(row[5])) for row in info]
            rows = [
                tuple(None if v is None else _CONVERT[c[1]](v) for v, c in zip(row, columns, strict=True))
                for row in conn.execute(f'SELECT * FROM "{table}"')
            ]
            tables.append((table, columns, rows))
        return tables
    finally:
        conn.close()


def _ddl(table: str, columns: list[tuple[str, str, bool]], engine: int) -> str:
    defs = [f'"{name}" {_TYPES[declared][engine]}' for name, declared, _ in columns]
    key = [f'"{name}"' for name, _, in_key in columns if in_key]
    if key:
        defs.append(f"PRIMARY KEY ({', '.join(key)})")
    return f'CREATE TABLE "{table}" ({", ".join(defs)})'


def _copy_to_duckdb(shop_db: Path, target: Path) -> None:
    with duckdb.connect(str(target)) as conn:
        for table, columns, rows in _shop_tables(shop_db):
            conn.execute(_ddl(table, columns, 0))
            data = pa.table({name: pa.array([row[i] for row in rows]) for i, (name, _, _) in enumerate(columns)})
            conn.register("fuzz_rows", data)
            conn.execute(f'INSERT INTO "{table}" SELECT * FROM fuzz_rows')
            conn.unregister("fuzz_rows")


def _copy_to_postgres(shop_db: Path, url: str) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        for table, columns, rows in _shop_tables(shop_db):
            conn.execute(_ddl(table, columns, 1))
            names = ", ".join(f'"{name}"' for name, _, _ in columns)
            with conn.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
