"""A small shop for replica tests: an ``orders`` table on SQLite or PostgreSQL and its contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from catalog.contract import ProductContract

COLUMNS = [
    {"name": "order_id", "type": "integer", "description": "order number", "nullable": False},
    {"name": "customer_email", "type": "string", "description": "buyer", "pii": "email"},
    {"name": "region", "type": "string", "description": "EU or US"},
    {"name": "amount", "type": "decimal", "description": "line total"},
    {"name": "updated_at", "type": "timestamp", "description": "last change"},
]
DDL = (
    "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_email VARCHAR(200), region VARCHAR(10), "
    "amount NUMERIC(12, 2), updated_at TIMESTAMP)"
)


def contract(*, aggregate_only: list[dict[str, Any]] | None = None, **replica: Any) -> ProductContract:
    """The orders contract with an analytical replica (``replica``: its fields)."""
    return ProductContract.model_validate(
        {
            "name": "shop.orders",
            "version": "1.0.0",
            "title": "Orders",
            "description": "One row per order",
            "owner": {"team": "shop"},
            "source": {"connection": "shop", "table": "orders"},
            "primary_key": ["order_id"],
            "columns": COLUMNS,
            "metrics": [{"name": "revenue", "expr": "sum(amount)", "description": "gross revenue"}],
            "dimensions": [{"name": "region", "column": "region"}],
            "policy": {
                "access": ["*"],
                "row_filters": [{"when": "role:eu", "where": "region = 'EU'"}],
                "masking": [{"columns": ["customer_email"], "unless": "role:pii", "method": "hash"}],
                "aggregate_only": aggregate_only or [],
            },
            "replicas": {"analytical": replica or {"refresh": "full"}},
        }
    )


def engine(url_or_path: str | Path) -> sa.Engine:
    url = str(url_or_path)
    return sa.create_engine(url if "://" in url else f"sqlite:///{url}")


def create(target: sa.Engine, rows: list[tuple[Any, ...]]) -> None:
    with target.begin() as conn:
        conn.exec_driver_sql(DDL)
        insert(conn, rows)


def insert(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:i, :e, :r, :a, :u)"),
            [{"i": r[0], "e": r[1], "r": r[2], "a": _number(r[3]), "u": _text(r[4])} for r in rows],
        )


def _number(value: Any) -> Any:
    return None if value is None else float(value)  # amounts are quarters: exact as binary floats


def _text(value: Any) -> Any:
    return None if value is None else f"{value:%Y-%m-%d %H:%M:%S}"
