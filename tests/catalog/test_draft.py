from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr

from catalog.draft import draft_contract, pii_candidate
from catalog.errors import ContractError
from catalog.loader import parse_contracts
from catalog.validate import validate_against_source
from connectors import ConnectionConfig, IntrospectedColumn, TableSchema, connector_for


def col(name: str, type_: str = "string", native: str = "TEXT", nullable: bool = True) -> IntrospectedColumn:
    return IntrospectedColumn.model_validate({"name": name, "type": type_, "native_type": native, "nullable": nullable})


CUSTOMERS = TableSchema(
    table="customers",
    columns=[
        col("customer_id", "integer", "INTEGER", nullable=False),
        col("firstName"),
        col("email_address"),
        col("signup_ip"),
        col("date_of_birth", "date", "DATE"),
        col("iban"),
        col("segment"),
        col("Order Notes"),
    ],
    primary_key=["customer_id"],
    row_count=1234567,
)


def draft(schema: TableSchema = CUSTOMERS, **kwargs: str) -> str:
    return draft_contract(schema, **{"name": "crm.customers", "connection": "shop", "owner_team": "crm", **kwargs})


def test_a_draft_is_a_valid_contract_with_todo_descriptions_and_no_pii_set() -> None:
    [loaded] = parse_contracts(draft(), file="draft.yaml")
    contract = loaded.contract
    assert contract.name == "crm.customers"
    assert contract.version == "0.1.0"
    assert contract.source.table == "customers"
    assert contract.primary_key == ["customer_id"]
    assert contract.column_names == [
        "customer_id",
        "firstName",
        "email_address",
        "signup_ip",
        "date_of_birth",
        "iban",
        "segment",
    ]
    assert all(c.description == f"TODO: describe {c.name}" for c in contract.columns)
    assert all(c.pii is None for c in contract.columns)
    assert contract.columns[0].nullable is False
    assert contract.columns[4].type == "date"
    assert contract.policy.access == []
    assert [q.check for q in contract.quality] == ["unique"]


def test_pii_candidates_are_flagged_as_comments_above_their_columns() -> None:
    lines = draft().splitlines()
    flagged = {
        lines[i + 1].removeprefix("  - name: "): line.split("PII candidate: ")[1].split(" ")[0]
        for i, line in enumerate(lines)
        if "# PII candidate:" in line
    }
    assert flagged == {
        "firstName": "name",
        "email_address": "email",
        "signup_ip": "ip_address",
        "date_of_birth": "birth_date",
        "iban": "financial",
    }
    assert "# PII candidate: email — confirm and set pii: email" in draft()


def test_the_row_count_and_left_out_columns_are_comments() -> None:
    text = draft()
    assert text.startswith("# Draft contract generated from shop:customers (1,234,567 rows).")
    assert "# column 'Order Notes' (TEXT) left out: not an identifier" in text
    unknown = draft(CUSTOMERS.model_copy(update={"row_count": None}))
    assert "(row count unknown)" in unknown


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("customer_email", "email"),
        ("EMail", "email"),
        ("mobile_phone", "phone"),
        ("last_name", "name"),
        ("name", "name"),
        ("customer_name", "name"),
        ("street_address", "address"),
        ("ip_address", "ip_address"),
        ("client_ip", "ip_address"),
        ("zip", "postal_code"),
        ("birthdate", "birth_date"),
        ("ssn", "national_id"),
        ("passport_no", "national_id"),
        ("credit_card_number", "financial"),
        ("product_name", None),
        ("order_id", None),
        ("description", None),
        ("shipping_fee", None),
    ],
)
def test_pii_candidates_come_from_column_names(column: str, kind: str | None) -> None:
    assert pii_candidate(column) == kind


def test_a_draft_without_a_primary_key_asks_for_one() -> None:
    [loaded] = parse_contracts(draft(CUSTOMERS.model_copy(update={"primary_key": []})))
    assert loaded.contract.primary_key == []
    assert "TODO: no primary key found" in draft(CUSTOMERS.model_copy(update={"primary_key": []}))


def test_a_malformed_name_version_or_table_is_refused() -> None:
    with pytest.raises(ContractError) as info:
        draft(name="Customers", version="1")
    assert [p.path for p in info.value.problems] == ["name", "version"]
    only_bad = TableSchema(table="t", columns=[col("Bad Name")])
    with pytest.raises(ContractError, match="no column"):
        draft(only_bad)


def test_text_that_needs_quoting_survives_in_the_draft() -> None:
    [loaded] = parse_contracts(draft(title="Customers: all of them # really", owner_email="crm@example.org"))
    assert loaded.contract.title == "Customers: all of them # really"
    assert loaded.contract.owner.email == "crm@example.org"


def test_a_draft_from_a_live_sqlite_table_loads_and_matches_its_source(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_email TEXT NOT NULL, "
            "amount NUMERIC(10,2), ordered_at TIMESTAMP)"
        )
        db.execute("INSERT INTO orders VALUES (1, 'a@example.org', 3.5, '2026-01-01 10:00:00')")
    db.close()
    config = ConnectionConfig(name="shop", kind="sqlite", url=SecretStr(f"sqlite:///{path}"))

    async def run() -> list[object]:
        async with connector_for(config) as connector:
            text = draft_contract(
                await connector.introspect("orders"), name="sales.orders", connection="shop", owner_team="sales"
            )
            [loaded] = parse_contracts(text)
            assert "(1 row)" in text
            assert "# PII candidate: email" in text
            return list(await validate_against_source(loaded.contract, connector))

    assert anyio.run(run) == []
