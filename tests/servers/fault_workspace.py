"""A small governed product over SQLite or PostgreSQL, and a service over it, for the fault tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import yaml

from catalog.audit import AuditLog
from catalog.contract import ProductContract
from catalog.principal import Principal
from catalog.registry import Registry
from servers.service import DataProductsService
from servers.settings import Settings

READER = Principal(name="reader", roles=frozenset({"analyst"}))
ROWS = [(1, "EU", 10, "a@example.org"), (2, "US", 20, "b@example.org"), (3, "EU", 30, "c@example.org")]
_DDL = "CREATE TABLE orders (id INTEGER PRIMARY KEY, region VARCHAR(10), amount INTEGER, email VARCHAR(100))"


def contract(version: str = "1.0.0", *, policy: str = "{access: [role:analyst]}") -> ProductContract:
    text = f"""
name: shop.orders
version: {version}
title: Orders
description: One row per order.
owner: {{team: shop, email: shop@example.org}}
source: {{connection: shop, table: orders}}
primary_key: [id]
columns:
  - {{name: id, type: integer, description: Order number}}
  - {{name: region, type: string, description: Sales region}}
  - {{name: amount, type: integer, description: Total}}
  - {{name: email, type: string, pii: email, description: Buyer}}
policy: {policy}
"""
    return ProductContract.model_validate(yaml.safe_load(text))


def sqlite_source(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        conn.execute(_DDL)
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", ROWS)
    conn.close()
    return {"kind": "sqlite", "path": str(path)}


def postgresql_source(url: str) -> dict[str, Any]:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(_DDL)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)", ROWS)
    return {"kind": "postgresql", "url": url}


def open_service(
    tmp_path: Path,
    source: dict[str, Any],
    *,
    registry_url: str | None = None,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> DataProductsService:
    """A service over ``source`` (connection ``shop``) with ``shop.orders`` 1.0.0 registered.

    ``settings`` adds to the service's settings; ``options`` go to the service's constructor.
    """
    config = Settings(
        workspace=tmp_path,
        registry_url=registry_url or f"sqlite:///{tmp_path / 'registry.db'}",
        hash_salt="fault-salt",
        connections={"shop": source},
        **(settings or {}),
    )
    registry = Registry.from_url(config.resolved_registry_url())
    registry.register(contract(), actor="tests")
    return DataProductsService(config, registry, AuditLog.from_registry(registry), **options)
