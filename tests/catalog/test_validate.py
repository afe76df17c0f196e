from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from catalog.contract import ProductContract
from catalog.errors import ContractProblem
from catalog.loader import load_file
from catalog.validate import compatible_types, validate_against_source
from connectors import ConnectionConfig, connector_for

FIXTURES = Path(__file__).parent / "fixtures"

ORDERS_DDL = {
    "sqlite": """CREATE TABLE orders (
        order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, customer_email TEXT,
        amount NUMERIC(10, 2), ordered_at TIMESTAMP, notes TEXT, PRIMARY KEY (order_id, line_no))""",
    "postgresql": """CREATE TABLE orders (
        order_id integer NOT NULL, line_no integer NOT NULL, customer_email text,
        amount numeric(10, 2), ordered_at timestamptz, notes text, PRIMARY KEY (order_id, line_no))""",
}


def sqlite_shop(directory: Path) -> ConnectionConfig:
    path = directory / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute(ORDERS_DDL["sqlite"])
    db.close()
    return ConnectionConfig(name="shop", kind="sqlite", url=SecretStr(f"sqlite:///{path}"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> ConnectionConfig:
    """A connection named ``shop`` to a store holding an ``orders`` table like the fixture contract's."""
    if request.param == "sqlite":
        return sqlite_shop(tmp_path)
    url = str(request.getfixturevalue("pg_url"))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(ORDERS_DDL["postgresql"])
    engine.dispose()
    return ConnectionConfig(name="shop", kind="postgresql", url=SecretStr(url))


@pytest.fixture
def orders() -> ProductContract:
    [loaded] = load_file(FIXTURES / "orders.yaml")
    return loaded.contract


def check(contract: ProductContract, config: ConnectionConfig) -> list[ContractProblem]:
    async def run() -> list[ContractProblem]:
        async with connector_for(config) as connector:
            return await validate_against_source(contract, connector)

    return anyio.run(run)


def change(contract: ProductContract, **update: Any) -> ProductContract:
    return ProductContract.model_validate({**contract.model_dump(), **update})


def rename(contract: ProductContract, old: str, new: str) -> list[dict[str, Any]]:
    return [{**c.model_dump(), "name": new} if c.name == old else c.model_dump() for c in contract.columns]


def test_a_contract_that_matches_its_table_has_no_problems(orders: ProductContract, shop: ConnectionConfig) -> None:
    assert check(orders, shop) == []


def test_a_declared_column_missing_from_the_source_suggests_the_closest_real_column(
    orders: ProductContract, shop: ConnectionConfig
) -> None:
    contract = change(
        orders,
        columns=rename(orders, "customer_email", "customer_mail"),
        policy={"access": ["role:analyst"], "masking": [{"columns": ["customer_mail"]}]},
    )
    [problem] = check(contract, shop)
    assert problem.path == "columns[2].name"
    assert problem.message == "column 'customer_mail' is not in source table 'orders'"
    assert problem.hint == (
        "did you mean 'customer_email'? source columns: order_id, line_no, customer_email, amount, ordered_at, notes"
    )


def test_a_declared_type_the_native_type_cannot_hold_is_reported(
    orders: ProductContract, shop: ConnectionConfig
) -> None:
    columns = [
        {**c.model_dump(), "type": "integer"} if c.name == "customer_email" else c.model_dump() for c in orders.columns
    ]
    [problem] = check(change(orders, columns=columns), shop)
    assert problem.path == "columns[2].type"
    assert "declared integer but the source column is" in problem.message
    assert problem.hint == "declare type: string, or cast in a source query"


def test_primary_key_columns_missing_from_the_source_are_reported(
    orders: ProductContract, shop: ConnectionConfig
) -> None:
    extra = {"name": "line_number", "type": "integer", "description": "Line"}
    contract = change(orders, columns=[*orders.model_dump()["columns"], extra], primary_key=["order_id", "line_number"])
    problems = check(contract, shop)
    assert [(p.path, p.message) for p in problems] == [
        ("columns[5].name", "column 'line_number' is not in source table 'orders'"),
        ("primary_key", "primary key column 'line_number' is not in source table 'orders'"),
    ]
    assert problems[1].hint is not None and problems[1].hint.startswith("did you mean 'line_no'?")


def test_a_missing_source_table_is_one_problem_naming_the_tables_that_exist(
    orders: ProductContract, shop: ConnectionConfig
) -> None:
    [problem] = check(change(orders, source={"connection": "shop", "table": "order_lines"}), shop)
    assert (problem.path, problem.message) == ("source.table", "source table 'order_lines' not found")
    assert problem.hint is not None and "orders" in problem.hint


def test_query_sources_are_not_checked(orders: ProductContract, shop: ConnectionConfig) -> None:
    contract = change(orders, source={"connection": "shop", "query": "SELECT * FROM nowhere"})
    assert check(contract, shop) == []


def test_live_problems_can_be_located_at_their_line_in_the_contract_file(tmp_path: Path) -> None:
    shop = sqlite_shop(tmp_path)
    path = tmp_path / "orders.yaml"
    text = (FIXTURES / "orders.yaml").read_text(encoding="utf-8").replace("type: timestamp", "type: boolean")
    path.write_text(text, encoding="utf-8")
    [loaded] = load_file(path)
    [problem] = check(loaded.contract, shop)
    located = loaded.locate(problem)
    assert (located.file, located.line, located.path) == (str(path), 14, "columns[4].type")


def test_text_may_hold_temporal_and_json_values_but_not_numbers() -> None:
    assert "string" in compatible_types("timestamp")
    assert "string" in compatible_types("json")
    assert "string" not in compatible_types("integer")
    assert "integer" in compatible_types("decimal")
    assert compatible_types("string") == frozenset({"string"})
