"""PostgreSQL: read-only transactions, one query per call, a superuser login dropped to pg_read_all_data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import psycopg
import pytest
import sqlglot
from pydantic import SecretStr
from sqlglot import exp

from catalog.errors import ConfigError, ConnectorUnavailableError, QueryExecutionError
from catalog.query import Limits
from connectors.base import ConnectionConfig
from connectors.postgresql import PostgreSQLConnector
from tests.connectors import dataset

pytestmark = pytest.mark.anyio


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
async def superuser(pg_url: str) -> AsyncIterator[PostgreSQLConnector]:
    """A connector logged in as the cluster's superuser, given a plain ``postgresql://`` URL."""
    dataset.load_postgres(pg_url)
    connector = PostgreSQLConnector(ConnectionConfig(name="shop", kind="postgresql", url=SecretStr(plain_url(pg_url))))
    try:
        yield connector
    finally:
        await connector.aclose()


@pytest.fixture
async def reader(pg_url: str) -> AsyncIterator[PostgreSQLConnector]:
    """A connector logged in as an ordinary role that may only select from orders."""
    dataset.load_postgres(pg_url)
    with psycopg.connect(plain_url(pg_url), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS shop_reader")  # roles are cluster-wide; the fixture may run again
        conn.execute("CREATE ROLE shop_reader LOGIN")
        conn.execute("GRANT SELECT ON orders TO shop_reader")
    url = pg_url.replace("postgres@", "shop_reader@")
    connector = PostgreSQLConnector(ConnectionConfig(name="shop", kind="postgresql", url=SecretStr(url)))
    try:
        yield connector
    finally:
        await connector.aclose()
        with psycopg.connect(plain_url(pg_url), autocommit=True) as conn:
            conn.execute("REVOKE ALL ON orders FROM shop_reader")
            conn.execute("DROP ROLE shop_reader")


def command(text: str) -> exp.Query:
    """Raw text the way sqlglot passes through what it does not model (exp.Command)."""
    return cast(exp.Query, exp.Command(this=text))


async def test_copy_to_program_is_refused_for_a_superuser_login(superuser: PostgreSQLConnector, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(QueryExecutionError):
        await superuser.execute(command(f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"), Limits())
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "SELECT pg_read_file('/etc/hostname')",
        "SELECT * FROM pg_ls_dir('/')",
        "SELECT lo_import('/etc/hostname')",
    ],
)
async def test_a_superuser_login_runs_statements_without_superuser_powers(
    superuser: PostgreSQLConnector, text: str
) -> None:
    with pytest.raises(QueryExecutionError, match="permission denied"):
        await superuser.execute(cast(exp.Query, sqlglot.parse_one(text, read="postgres")), Limits())


@pytest.mark.parametrize(
    "text",
    [
        "SET TRANSACTION READ WRITE; INSERT INTO orders (order_id) VALUES (99)",
        "RESET ROLE; COPY (SELECT 1) TO PROGRAM 'true'",
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
        "SELECT 1 FROM orders FOR UPDATE",
    ],
)
async def test_smuggled_writes_are_refused_and_the_table_is_unchanged(
    superuser: PostgreSQLConnector, text: str
) -> None:
    with pytest.raises(QueryExecutionError):
        await superuser.execute(command(text), Limits())
    assert (await superuser.introspect("orders")).row_count == len(dataset.ROWS)


async def test_a_read_only_role_reads_and_cannot_write(reader: PostgreSQLConnector) -> None:
    assert await reader.list_assets() == ["orders"]
    result = await reader.execute(exp.select("count(*)").from_("orders"), Limits())
    assert result.rows == [(len(dataset.ROWS),)]
    with pytest.raises(QueryExecutionError):
        await reader.execute(command("INSERT INTO orders (order_id) VALUES (99)"), Limits())


async def test_tables_outside_the_current_schema_are_listed_and_introspected_schema_qualified(pg_url: str) -> None:
    with psycopg.connect(plain_url(pg_url)) as conn:
        conn.execute("CREATE SCHEMA sales")
        conn.execute("CREATE TABLE sales.regions (code CHAR(2) PRIMARY KEY, name TEXT NOT NULL, tags TEXT[])")
        conn.execute("INSERT INTO sales.regions VALUES ('EU', 'Europe', '{a,b}')")
    async with PostgreSQLConnector(
        ConnectionConfig(name="shop", kind="postgresql", url=SecretStr(pg_url))
    ) as connector:
        assert await connector.list_assets() == ["sales.regions"]
        schema = await connector.introspect("sales.regions")

    assert [(c.name, c.native_type, c.type, c.nullable) for c in schema.columns] == [
        ("code", "character(2)", "string", False),
        ("name", "text", "string", False),
        ("tags", "text[]", "json", True),
    ]
    assert schema.primary_key == ["code"]
    assert schema.row_count == 1


async def test_an_unreachable_server_makes_the_store_unavailable() -> None:
    config = ConnectionConfig(name="shop", kind="postgresql", url=SecretStr("postgresql://nobody@127.0.0.1:1/none"))
    async with PostgreSQLConnector(config) as connector:
        with pytest.raises(ConnectorUnavailableError, match="cannot reach 'shop'"):
            await connector.list_assets()
        assert await connector.health() is False


def test_a_url_of_another_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected a postgresql:// url"):
        PostgreSQLConnector(ConnectionConfig(name="shop", kind="postgresql", url=SecretStr("mysql://u@h/db")))


def test_a_postgresql_connection_without_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs 'url'"):
        PostgreSQLConnector(ConnectionConfig(name="shop", kind="postgresql"))
