"""DuckDB: locked read-only configuration, file views, attach of a database file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from catalog.errors import ConfigError, ConnectorUnavailableError, QueryExecutionError
from catalog.query import Limits
from connectors.base import ConnectionConfig
from connectors.duckdb import DuckDBConnector
from tests.connectors import dataset

pytestmark = pytest.mark.anyio


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[DuckDBConnector]:
    """A database file and a Parquet glob and a CSV file on one connection."""
    dataset.load_duckdb(tmp_path / "shop.duckdb")
    pattern = dataset.write_parquet_parts(tmp_path / "parts")
    (tmp_path / "secret.csv").write_text("password\nhunter2\n", encoding="utf-8")
    config = ConnectionConfig(
        name="lake",
        kind="duckdb",
        path=str(tmp_path / "shop.duckdb"),
        files={"order_parts": pattern, "order_csv": dataset.write_csv(tmp_path / "orders.csv")},
    )
    connector = DuckDBConnector(config)
    try:
        yield connector
    finally:
        await connector.aclose()


def sql(text: str) -> exp.Query:
    return cast(exp.Query, sqlglot.parse_one(text, read="duckdb"))


async def test_tables_of_the_database_file_and_file_views_are_visible_together(both: DuckDBConnector) -> None:
    assert await both.list_assets() == ["order_csv", "order_parts", "orders"]
    statement = sql("SELECT count(*) FROM orders JOIN order_parts USING (order_id) JOIN order_csv USING (order_id)")
    assert (await both.execute(statement, Limits())).rows == [(len(dataset.ROWS),)]


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_csv('{tmp}/secret.csv')",  # beside an allowed file, not itself allowed
    ],
)
async def test_no_file_outside_the_configured_ones_can_be_read(
    both: DuckDBConnector, tmp_path: Path, text: str
) -> None:
    with pytest.raises(QueryExecutionError, match="Permission Error"):
        await both.execute(sql(text.format(tmp=tmp_path)), Limits())


async def test_a_configured_file_can_also_be_read_by_its_path(both: DuckDBConnector, tmp_path: Path) -> None:
    result = await both.execute(sql(f"SELECT count(*) FROM read_csv('{tmp_path}/orders.csv')"), Limits())
    assert result.rows == [(len(dataset.ROWS),)]


@pytest.mark.parametrize(
    "text",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET lock_configuration",
        "SET allowed_directories = ['/']",
        "SET autoload_known_extensions = true",
    ],
)
async def test_configuration_is_locked_even_for_a_raw_cursor(both: DuckDBConnector, text: str) -> None:
    await both.list_assets()  # opens the shared connection
    cursor = both._cursor()  # below the single-SELECT check: DuckDB itself must refuse
    try:
        with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
            cursor.execute(text)
    finally:
        cursor.close()


@pytest.mark.parametrize(
    "text",
    [
        "ATTACH '{tmp}/new.duckdb' AS x",
        "COPY orders TO '{tmp}/dump.csv'",
        "INSERT INTO orders (order_id) VALUES (99)",
        "CREATE TABLE stolen (a INTEGER)",
        "INSTALL httpfs",
        "LOAD httpfs",
    ],
)
async def test_a_raw_cursor_cannot_write_attach_or_load_extensions(
    both: DuckDBConnector, tmp_path: Path, text: str
) -> None:
    await both.list_assets()
    cursor = both._cursor()
    try:
        with pytest.raises(duckdb.Error):
            cursor.execute(text.format(tmp=tmp_path))
    finally:
        cursor.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.csv", "parts", "secret.csv", "shop.duckdb"]


async def test_only_a_single_select_statement_runs(both: DuckDBConnector) -> None:
    for text in ("SELECT 1; DETACH source", "DETACH source", "USE files", "PRAGMA enable_profiling"):
        with pytest.raises(QueryExecutionError, match="one SELECT"):
            await both.execute(cast(exp.Query, exp.Command(this=text)), Limits())
    assert "orders" in await both.list_assets()


async def test_a_missing_database_file_makes_the_store_unavailable(tmp_path: Path) -> None:
    async with DuckDBConnector(ConnectionConfig(name="lake", kind="duckdb", path=str(tmp_path / "nope.duckdb"))) as c:
        with pytest.raises(ConnectorUnavailableError, match="does not exist"):
            await c.list_assets()


async def test_a_glob_matching_no_file_makes_the_store_unavailable(tmp_path: Path) -> None:
    config = ConnectionConfig(name="lake", kind="duckdb", files={"orders": str(tmp_path / "*.parquet")})
    async with DuckDBConnector(config) as connector:
        with pytest.raises(ConnectorUnavailableError, match="No files found"):
            await connector.execute(exp.select("1 AS one"), Limits())


async def test_a_failed_open_leaves_no_private_catalog_directory_behind(tmp_path: Path) -> None:
    config = ConnectionConfig(name="lake", kind="duckdb", files={"orders": str(tmp_path / "none.csv")})
    async with DuckDBConnector(config) as connector:
        with pytest.raises(ConnectorUnavailableError):
            await connector.list_assets()
        assert connector._cleanup is not None and not connector._cleanup.alive


def test_a_file_type_duckdb_cannot_read_without_extensions_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot tell how to read"):
        DuckDBConnector(ConnectionConfig(name="lake", kind="duckdb", files={"orders": "/data/orders.xlsx"}))


def test_a_view_name_that_is_not_an_identifier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be an identifier"):
        DuckDBConnector(ConnectionConfig(name="lake", kind="duckdb", files={"my orders": "/data/o.parquet"}))


def test_neither_path_nor_files_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs 'path'"):
        DuckDBConnector(ConnectionConfig(name="lake", kind="duckdb"))


async def test_a_file_view_named_like_a_table_of_the_database_file_is_a_config_error(tmp_path: Path) -> None:
    dataset.load_duckdb(tmp_path / "shop.duckdb")
    files = {"orders": dataset.write_csv(tmp_path / "orders.csv")}
    config = ConnectionConfig(name="lake", kind="duckdb", path=str(tmp_path / "shop.duckdb"), files=files)
    async with DuckDBConnector(config) as connector:
        with pytest.raises(ConfigError, match="clash"):
            await connector.list_assets()


async def test_two_connectors_over_one_database_file_do_not_share_configuration(tmp_path: Path) -> None:
    dataset.load_duckdb(tmp_path / "shop.duckdb")
    csv = dataset.write_csv(tmp_path / "orders.csv")
    plain = DuckDBConnector(ConnectionConfig(name="a", kind="duckdb", path=str(tmp_path / "shop.duckdb")))
    with_files = DuckDBConnector(
        ConnectionConfig(name="b", kind="duckdb", path=str(tmp_path / "shop.duckdb"), files={"order_csv": csv})
    )
    async with plain, with_files:
        assert await plain.list_assets() == ["orders"]
        assert await with_files.list_assets() == ["order_csv", "orders"]
        with pytest.raises(QueryExecutionError, match="Permission Error"):
            await plain.execute(sql(f"SELECT * FROM read_csv('{csv}')"), Limits())


async def test_the_private_catalog_directory_is_removed_on_aclose(tmp_path: Path) -> None:
    connector = DuckDBConnector(
        ConnectionConfig(name="lake", kind="duckdb", files={"orders": dataset.write_csv(tmp_path / "o.csv")})
    )
    await connector.list_assets()
    assert connector._cleanup is not None and connector._cleanup.alive
    _, _, args, _ = connector._cleanup.peek() or (None, None, ("",), None)
    catalog_dir = Path(args[0])
    assert (catalog_dir / "files.duckdb").is_file()

    await connector.aclose()

    assert not catalog_dir.exists()


async def test_a_timestamptz_value_is_returned_or_the_error_says_to_install_pytz(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "tz.duckdb")) as conn:
        conn.execute("CREATE TABLE events AS SELECT TIMESTAMPTZ '2024-01-01 10:00:00+02' AS at")
    async with DuckDBConnector(ConnectionConfig(name="lake", kind="duckdb", path=str(tmp_path / "tz.duckdb"))) as c:
        statement = exp.select("at").from_("events")
        try:
            import pytz  # noqa: F401
        except ImportError:
            with pytest.raises(QueryExecutionError, match=r"needs the pytz package"):
                await c.execute(statement, Limits())
        else:
            (row,) = (await c.execute(statement, Limits())).rows
            assert row[0].isoformat().startswith("2024-01-01")
