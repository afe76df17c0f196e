"""The contract suite's stores: every built-in connector over the same dataset (tests/connectors/dataset.py).

``store`` is parametrized over SQLite, PostgreSQL (a fresh database of the session's throwaway
cluster), a DuckDB database file, Parquet files (a glob over two parts) and a CSV file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from catalog.contract import ColumnType
from connectors import ConnectionConfig, Connector, connector_for
from tests.connectors import dataset


@dataclass
class Store:
    """A connector over the dataset, with what the suite may expect of this store."""

    id: str
    connector: Connector
    primary_key: list[str]
    # The recursive CTE's bound that keeps the store busy for seconds (DuckDB's recursive CTEs are
    # quadratic, hence a much smaller bound there).
    slow_rows: int
    # Where the store's types differ from dataset.COLUMNS (CSV has no decimal type, sniffs DOUBLE).
    type_overrides: dict[str, ColumnType] = field(default_factory=dict)

    @property
    def types(self) -> dict[str, ColumnType]:
        return dataset.COLUMNS | self.type_overrides


def _sqlite(tmp_path: Path, _: pytest.FixtureRequest) -> Store:
    path = tmp_path / "shop.sqlite"
    dataset.load_sqlite(path)
    config = ConnectionConfig(name="shop", kind="sqlite", path=str(path))
    return Store("sqlite", connector_for(config), ["order_id"], slow_rows=10_000_000)


def _postgresql(_tmp: Path, request: pytest.FixtureRequest) -> Store:
    url = request.getfixturevalue("pg_url")
    dataset.load_postgres(url)
    config = ConnectionConfig(name="shop", kind="postgresql", url=SecretStr(url))
    return Store("postgresql", connector_for(config), ["order_id"], slow_rows=10_000_000)


def _duckdb_file(tmp_path: Path, _: pytest.FixtureRequest) -> Store:
    path = tmp_path / "shop.duckdb"
    dataset.load_duckdb(path)
    config = ConnectionConfig(name="shop", kind="duckdb", path=str(path))
    return Store("duckdb-file", connector_for(config), ["order_id"], slow_rows=40_000)


def _duckdb_parquet(tmp_path: Path, _: pytest.FixtureRequest) -> Store:
    pattern = dataset.write_parquet_parts(tmp_path / "orders")
    config = ConnectionConfig(name="shop", kind="duckdb", files={"orders": pattern})
    return Store("duckdb-parquet", connector_for(config), [], slow_rows=40_000)


def _duckdb_csv(tmp_path: Path, _: pytest.FixtureRequest) -> Store:
    path = dataset.write_csv(tmp_path / "orders.csv")
    config = ConnectionConfig(name="shop", kind="duckdb", files={"orders": path})
    return Store("duckdb-csv", connector_for(config), [], slow_rows=40_000, type_overrides={"amount": "float"})


STORES: dict[str, Callable[[Path, pytest.FixtureRequest], Store]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "duckdb-file": _duckdb_file,
    "duckdb-parquet": _duckdb_parquet,
    "duckdb-csv": _duckdb_csv,
}


@pytest.fixture(params=list(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    built = STORES[request.param](tmp_path, request)
    try:
        yield built
    finally:
        await built.connector.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
