"""SQLite columns declared without a type are typed from a bounded sample of their stored values."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from catalog.draft import draft_contract
from catalog.loader import parse_contracts
from catalog.validate import validate_against_source
from connectors import ConnectionConfig
from connectors._sqlite_typeof import SAMPLE_ROWS, type_of_values
from connectors.sqlite import SQLiteConnector

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def untyped_table(path: Path) -> Path:
    """3,000 rows; ``code`` holds integers but text in every 20th of the first 1,000 rows; ``typed`` is declared."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id, code, amount, payload, empty, typed TEXT)")
        db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, NULL, ?)",
            [
                (i, f"C{i}" if i % 20 == 0 and i < 1000 else i, i / 4 if i % 4 else i // 4, bytes([i % 256]), str(i))
                for i in range(3000)
            ],
        )
    db.close()
    return path


async def test_introspection_types_untyped_columns_from_a_bounded_sample(tmp_path: Path) -> None:
    config = ConnectionConfig(name="ev", kind="sqlite", path=str(untyped_table(tmp_path / "ev.db")))
    async with SQLiteConnector(config) as connector:
        schema = await connector.introspect("events")
    found = {c.name: (c.type, c.inferred) for c in schema.columns}
    sample = f"a {SAMPLE_ROWS:,}-row sample"
    assert found == {
        "id": ("integer", f"inferred from {sample}"),
        "code": ("integer", f"mixed: 950 integer, 50 text in {sample}; check it"),
        "amount": ("float", f"inferred from {sample} (integer and real values)"),
        "payload": ("bytes", f"inferred from {sample}"),
        "empty": ("string", f"no values in {sample} to infer it from; check it"),
        "typed": ("string", None),
    }


async def test_a_draft_of_an_untyped_table_validates_against_it(tmp_path: Path) -> None:
    config = ConnectionConfig(name="ev", kind="sqlite", path=str(untyped_table(tmp_path / "ev.db")))
    async with SQLiteConnector(config) as connector:
        schema = await connector.introspect("events")
        text = draft_contract(schema, name="ops.events", connection="ev", owner_team="ops")
        [loaded] = parse_contracts(text)
        assert await validate_against_source(loaded.contract, connector) == []
    assert "    type: integer  # no declared type; mixed: 950 integer, 50 text in a 1,000-row sample; check it" in text


def test_the_most_frequent_storage_class_wins_and_ties_go_to_the_first_name() -> None:
    assert type_of_values(Counter({"text": 3, "integer": 3, "null": 9}), sampled=15)[0] == "integer"
    assert type_of_values(Counter({"text": 4, "blob": 1}), sampled=5, whole_table=True) == (
        "string",
        "mixed: 4 text, 1 blob in all 5 rows; check it",
    )
