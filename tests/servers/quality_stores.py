"""Crafted data for the quality tests, in SQLite, PostgreSQL and DuckDB, and a service over it.

``good_events`` passes every check of :func:`contract_yaml`; ``bad_events`` fails each one exactly
once (a NULL kind, a duplicated (id, kind), an unknown kind, a negative amount, five rows, old
timestamps, an id over 1000). Timestamps are naive UTC, as the stores keep them: an hour old in
``good_events``, thirty days old in ``bad_events``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import yaml

from catalog.contract import ProductContract
from catalog.principal import Principal
from catalog.registry import Registry
from servers.settings import Settings

READER = Principal(name="reader", roles=frozenset({"analyst"}))
STORES = ("sqlite", "postgresql", "duckdb")

_DDL = "CREATE TABLE {table} (id INTEGER, kind VARCHAR(10), amount DECIMAL(10, 2), created_at TIMESTAMP)"


def rows(now: datetime) -> dict[str, list[tuple[Any, ...]]]:
    recent, old = now - timedelta(hours=1), now - timedelta(days=30)
    return {
        "good_events": [(1, "a", 10, recent), (2, "b", 20, recent), (3, "a", 99.5, recent)],
        "bad_events": [
            (1, "a", 10, old),
            (1, "a", -5, old),
            (2, None, 20, old),
            (1001, "zzz", 30, old),
            (3, "b", 40, old),
        ],
    }


def contract_yaml(name: str, table: str, *, sla: str = "{freshness: 1d, on_stale: warn}", quality: bool = True) -> str:
    checks = f"""
quality:
  - {{check: not_null, column: kind}}
  - {{check: unique, columns: [id, kind]}}
  - {{check: accepted_values, column: kind, values: [a, b]}}
  - {{check: range, column: amount, min: 0, max: 100}}
  - {{check: row_count, min: 1, max: 3}}
  - {{check: freshness, column: created_at, max_age: 1d}}
  - {{check: sql, name: no_big_ids, sql: "SELECT * FROM {name} WHERE id > 1000"}}
  - {{check: range, name: small_amounts, column: amount, max: 5, severity: warn}}
"""
    return f"""
name: {name}
version: 1.0.0
title: Events {name}
description: Crafted events.
owner: {{team: quality-team, email: quality@example.org}}
source: {{connection: store, table: {table}}}
primary_key: [id]
columns:
  - {{name: id, type: integer, description: Id}}
  - {{name: kind, type: string, description: Kind}}
  - {{name: amount, type: decimal, description: Amount}}
  - {{name: created_at, type: timestamp, description: Created (UTC)}}
{checks if quality else ""}
policy: {{access: [role:analyst]}}
sla: {sla}
"""


def _sqlite(tmp_path: Path, data: dict[str, list[tuple[Any, ...]]], _: pytest.FixtureRequest) -> dict[str, Any]:
    path = tmp_path / "events.sqlite"
    with sqlite3.connect(path) as conn:
        for table, values in data.items():
            conn.execute(_DDL.format(table=table))
            text = [(*r[:3], r[3].strftime("%Y-%m-%d %H:%M:%S")) for r in values]  # how SQLite keeps them
            conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", text)
    return {"kind": "sqlite", "path": str(path)}


def _postgresql(_: Path, data: dict[str, list[tuple[Any, ...]]], request: pytest.FixtureRequest) -> dict[str, Any]:
    url = request.getfixturevalue("pg_url")
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for table, values in data.items():
            conn.execute(_DDL.format(table=table))
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", values)
    return {"kind": "postgresql", "url": url}


def _duckdb(tmp_path: Path, data: dict[str, list[tuple[Any, ...]]], _: pytest.FixtureRequest) -> dict[str, Any]:
    path = tmp_path / "events.duckdb"
    with duckdb.connect(str(path)) as conn:
        for table, values in data.items():
            conn.execute(_DDL.format(table=table))
            conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", values)
    return {"kind": "duckdb", "path": str(path)}


LOADERS: dict[str, Callable[[Path, dict[str, list[tuple[Any, ...]]], pytest.FixtureRequest], dict[str, Any]]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "duckdb": _duckdb,
}


def workspace(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, contracts: list[str], **settings: Any
) -> Settings:
    """Settings over ``store`` loaded with the crafted rows, with ``contracts`` (YAML texts) registered."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    connection = LOADERS[store](tmp_path, rows(now), request)
    config = Settings(
        workspace=tmp_path,
        registry_url=f"sqlite:///{tmp_path / 'registry.db'}",
        hash_salt="quality-salt",
        connections={"store": connection},
        **settings,
    )
    with Registry.from_url(config.resolved_registry_url()) as registry:
        for text in contracts:
            registry.register(ProductContract.model_validate(yaml.safe_load(text)), actor="tests")
    return config
