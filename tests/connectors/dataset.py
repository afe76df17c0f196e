"""The one small dataset every store of the contract suite is loaded with, and loaders per store."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from catalog.contract import ColumnType

TABLE = "orders"
COLUMNS: dict[str, ColumnType] = {
    "order_id": "integer",
    "customer": "string",
    "amount": "decimal",
    "quantity": "integer",
    "ordered_on": "date",
    "ordered_at": "timestamp",
    "paid": "boolean",
    "note": "string",
}
ROWS: list[tuple[Any, ...]] = [
    (1, "O'Brien", Decimal("12.50"), 2, date(2024, 1, 5), datetime(2024, 1, 5, 9, 30), True, "first order"),
    (2, 'Zoë "Zed" Ünal', Decimal("7.25"), None, date(2024, 2, 29), datetime(2024, 2, 29, 23, 59, 59), False, None),
    (3, "日本語テキスト", Decimal("100.00"), 1, date(2024, 3, 1), datetime(2024, 3, 1, 0, 0), None, "semi;colon -- x"),
    (4, "Łódź; DROP TABLE orders", Decimal("0.10"), 5, None, None, True, "back\\slash"),
    (5, None, Decimal("-3.99"), 0, date(2023, 12, 31), datetime(2023, 12, 31, 12, 0, 1), False, "emoji 🎉"),
    (6, "plain", None, 3, date(2024, 6, 30), datetime(2024, 6, 30, 8, 15), True, "tab\there"),
]

_DDL = (
    "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer VARCHAR(100), amount DECIMAL(10, 2), "
    "quantity INTEGER, ordered_on DATE, ordered_at TIMESTAMP, paid BOOLEAN, note TEXT)"
)
_ARROW = pa.schema(
    [
        ("order_id", pa.int64()),
        ("customer", pa.string()),
        ("amount", pa.decimal128(10, 2)),
        ("quantity", pa.int32()),
        ("ordered_on", pa.date32()),
        ("ordered_at", pa.timestamp("us")),
        ("paid", pa.bool_()),
        ("note", pa.string()),
    ]
)


def arrow_table(rows: list[tuple[Any, ...]] = ROWS) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(COLUMNS, row, strict=True)) for row in rows], schema=_ARROW)


def load_sqlite(path: Path) -> None:
    def adapt(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat(" ")
        if isinstance(value, date):
            return value.isoformat()
        return value

    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(_DDL)
            conn.executemany(
                f"INSERT INTO orders VALUES ({', '.join('?' * len(COLUMNS))})",
                [tuple(adapt(v) for v in row) for row in ROWS],
            )
    finally:
        conn.close()


def load_postgres(url: str) -> None:
    """``url`` is the SQLAlchemy URL of the ``pg_url`` fixture; loads through a normal read-write connection."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(_DDL)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO orders VALUES ({', '.join(['%s'] * len(COLUMNS))})", ROWS)


def load_duckdb(path: Path) -> None:
    with duckdb.connect(str(path)) as conn:
        conn.execute(_DDL)
        conn.register("data", arrow_table())
        conn.execute("INSERT INTO orders SELECT * FROM data")


def write_parquet_parts(directory: Path) -> str:
    """Two Parquet files holding the rows between them; returns a glob matching both."""
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow_table(ROWS[:3]), directory / "part-0.parquet")
    pq.write_table(arrow_table(ROWS[3:]), directory / "part-1.parquet")
    return str(directory / "*.parquet")


def write_csv(path: Path) -> str:
    pa_csv.write_csv(arrow_table(), path)
    return str(path)
