"""SQLite: read-only URI, an authorizer that admits only reads, md5 for masking, safe floor and regexp."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import sqlglot
from pydantic import SecretStr
from sqlglot import exp

from catalog.errors import ConfigError, ConnectorUnavailableError, QueryExecutionError
from catalog.query import Limits
from connectors._sqlite_functions import _python_floor
from connectors.base import ConnectionConfig
from connectors.sqlite import SQLiteConnector, _sqlite_type
from tests.connectors import dataset

pytestmark = pytest.mark.anyio


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[SQLiteConnector]:
    dataset.load_sqlite(tmp_path / "shop.sqlite")
    connector = SQLiteConnector(ConnectionConfig(name="shop", kind="sqlite", path=str(tmp_path / "shop.sqlite")))
    try:
        yield connector
    finally:
        await connector.aclose()


def command(text: str) -> exp.Query:
    return cast(exp.Query, exp.Command(this=text))


@pytest.mark.parametrize(
    "text",
    [
        "ATTACH '{tmp}/new.sqlite' AS x",  # mode=ro alone would let this create a writable file
        "ATTACH 'file:{tmp}/new.sqlite?mode=rwc' AS x",
        "VACUUM INTO '{tmp}/new.sqlite'",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = WAL",
    ],
)
async def test_attach_vacuum_into_and_setting_pragmas_are_refused(
    shop: SQLiteConnector, tmp_path: Path, text: str
) -> None:
    with pytest.raises(QueryExecutionError, match="not authorized|authorization denied"):
        await shop.execute(command(text.format(tmp=tmp_path)), Limits())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.sqlite"]


async def test_md5_is_deterministic_null_safe_and_hashes_numbers_as_text(shop: SQLiteConnector) -> None:
    statement = sqlglot.parse_one("SELECT md5('abc'), md5(NULL), md5(42), md5(customer) FROM orders WHERE order_id = 1")
    result = await shop.execute(cast(exp.Query, statement), Limits())

    assert result.rows == [
        (hashlib.md5(b"abc").hexdigest(), None, hashlib.md5(b"42").hexdigest(), hashlib.md5(b"O'Brien").hexdigest())
    ]


async def test_floor_is_sqlites_own_null_safe_function_not_the_drivers(shop: SQLiteConnector) -> None:
    # SQLAlchemy installs math.floor on every connection, which raises on NULL and text
    statement = sqlglot.parse_one("SELECT floor(NULL), floor(2.5), floor(-2.5), floor(7), floor('3.7'), floor('x')")
    result = await shop.execute(cast(exp.Query, statement), Limits())
    assert result.rows == [(None, 2.0, -3.0, 7, 3.0, None)]


async def test_regexp_matches_with_re2_in_linear_time(shop: SQLiteConnector) -> None:
    # Python's backtracking re takes 2^n steps here, holding the GIL where no time budget can stop it
    value = "a" * 200 + "!"
    statement = sqlglot.parse_one(
        f"SELECT REGEXP_LIKE('{value}', '(a+)+$'), REGEXP_LIKE(customer, '^O.Br'), REGEXP_LIKE(NULL, 'a') "
        "FROM orders WHERE order_id = 1"
    )
    result = await shop.execute(cast(exp.Query, statement), Limits())
    assert result.rows == [(0, 1, None)]


async def test_a_pattern_re2_rejects_fails_with_a_hint_at_re2_syntax(shop: SQLiteConnector) -> None:
    statement = sqlglot.parse_one(r"SELECT REGEXP_LIKE('aa', '(a)\1')")  # backreferences are not RE2
    with pytest.raises(QueryExecutionError, match="RE2 syntax"):
        await shop.execute(cast(exp.Query, statement), Limits())


async def test_two_statements_in_one_call_are_refused(shop: SQLiteConnector) -> None:
    with pytest.raises(QueryExecutionError):
        await shop.execute(command("SELECT 1; SELECT 2"), Limits())


async def test_a_missing_database_file_makes_the_store_unavailable_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.sqlite"
    async with SQLiteConnector(ConnectionConfig(name="shop", kind="sqlite", path=str(path))) as connector:
        with pytest.raises(ConnectorUnavailableError, match="does not exist"):
            await connector.list_assets()
    assert not path.exists()


async def test_a_path_with_spaces_hash_question_mark_and_percent_is_opened_as_is(tmp_path: Path) -> None:
    path = tmp_path / "my shop #1?%20.sqlite"
    dataset.load_sqlite(path)
    async with SQLiteConnector(ConnectionConfig(name="shop", kind="sqlite", path=str(path))) as connector:
        assert await connector.list_assets() == ["orders"]


async def test_a_sqlite_url_names_the_file_like_path_does(tmp_path: Path) -> None:
    dataset.load_sqlite(tmp_path / "shop.sqlite")
    config = ConnectionConfig(name="shop", kind="sqlite", url=SecretStr(f"sqlite:///{tmp_path}/shop.sqlite"))
    async with SQLiteConnector(config) as connector:
        assert (await connector.introspect("orders")).row_count == len(dataset.ROWS)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x.db?mode=rw&uri=true"])
def test_an_in_memory_or_uri_database_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="file path"):
        SQLiteConnector(ConnectionConfig(name="shop", kind="sqlite", url=SecretStr(url)))


def test_another_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="serves kinds"):
        SQLiteConnector(ConnectionConfig(name="shop", kind="duckdb", path="x.duckdb"))


@pytest.mark.parametrize(
    ("declared", "neutral"),
    [
        ("INTEGER", "integer"),
        ("UNSIGNED BIG INT", "integer"),
        ("VARCHAR(20)", "string"),
        ("NVARCHAR(5)", "string"),
        ("CLOB", "string"),
        ("", "bytes"),
        ("BLOB", "bytes"),
        ("DOUBLE PRECISION", "float"),
        ("REAL", "float"),
        ("DECIMAL(10,2)", "decimal"),
        ("NUMERIC", "decimal"),
        ("BOOLEAN", "boolean"),
        ("DATE", "date"),
        ("DATETIME", "timestamp"),
        ("TIMESTAMP", "timestamp"),
        ("JSON", "json"),
        ("WHATEVER", "decimal"),  # NUMERIC affinity, SQLite's own rule
        ("BIGINTEGERISH", "integer"),
    ],
)
def test_declared_sqlite_types_map_by_name_then_by_sqlite_affinity(declared: str, neutral: str) -> None:
    assert _sqlite_type(declared) == neutral


async def test_a_view_is_introspected_like_a_table(tmp_path: Path) -> None:
    path = tmp_path / "shop.sqlite"
    dataset.load_sqlite(path)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("CREATE VIEW paid_orders AS SELECT order_id, amount FROM orders WHERE paid")
    finally:
        conn.close()
    async with SQLiteConnector(ConnectionConfig(name="shop", kind="sqlite", path=str(path))) as connector:
        schema = await connector.introspect("paid_orders")
    assert schema.column_names == ["order_id", "amount"]
    assert schema.row_count == 3


@pytest.mark.parametrize("value", [None, 2, -2, 2.5, -2.5, 0.0, "3", " 3.7 ", "x", "", b"\x00", float("inf"), 2**62])
def test_the_fallback_floor_agrees_with_sqlites_own(value: object) -> None:
    # the fallback serves SQLite builds without math functions; this one has them, so compare
    builtin = sqlite3.connect(":memory:").execute("SELECT floor(?)", (value,)).fetchone()[0]
    assert _python_floor(value) == builtin and type(_python_floor(value)) is type(builtin)
