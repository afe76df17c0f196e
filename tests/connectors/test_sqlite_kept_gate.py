"""SQLite keeps the gate of the last governed statement on its connection, and it stays a wall.

Setting an authorizer expires the connection's prepared statements, so the SQLite wall leaves the gate
of a statement's views installed after it runs (a repeated lookup is then neither prepared nor
authorized again). These tests check what that must not change: another principal's statement gets
its own gate, a statement reading outside the views is still refused right after a served one, and a
non-governed read on the same connection runs under the read-only authorizer again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlglot import exp

from catalog.compile import compile_query
from catalog.errors import QueryExecutionError
from catalog.policy import govern
from catalog.query import Limits, Query
from connectors import ConnectionConfig, connector_for
from connectors.sqlite import SQLiteConnector
from tests.catalog.governance_fixtures import (
    ANALYST,
    EU_ANALYST,
    EU_ROWS,
    PII_READER,
    ROWS,
    SALT,
    contract,
    fill_sqlite,
)
from tests.connectors.test_walls import escape

pytestmark = pytest.mark.anyio

LOOKUP = Query(columns=["person_id", "email", "region"], where=[{"column": "person_id", "op": ">", "value": 0}])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteConnector]:
    fill_sqlite(tmp_path / "people.sqlite")
    connector = connector_for(ConnectionConfig(name="crm", kind="sqlite", path=str(tmp_path / "people.sqlite")))
    assert isinstance(connector, SQLiteConnector)
    try:  # statements run one after another, so each runs on the pooled connection the previous one left
        yield connector
    finally:
        await connector.aclose()


def lookup(store: SQLiteConnector, principal: object) -> exp.Select:
    view = govern(contract(), principal)  # type: ignore[arg-type]
    return compile_query(view, LOOKUP, limits=Limits(max_rows=100), dialect="sqlite", hash_salt=SALT).statement


async def test_repeated_statements_keep_their_answers_across_principals(store: SQLiteConnector) -> None:
    eu = store.prepare(lookup(store, EU_ANALYST))
    pii = store.prepare(lookup(store, PII_READER))
    for _ in range(3):  # alternate: each switch installs the other statement's gate
        eu_rows = (await store.execute(eu, Limits())).rows
        pii_rows = (await store.execute(pii, Limits())).rows
        again = (await store.execute(pii, Limits())).rows  # the kept gate: no new authorizer
        assert len(eu_rows) == len(EU_ROWS) and {r[2] for r in eu_rows} == {"EU"}
        assert len(pii_rows) == len(again) == len(ROWS)
        assert pii_rows == again
        raw_emails = {r[1] for r in pii_rows if r[1] is not None}
        assert raw_emails and not raw_emails & {r[1] for r in eu_rows}  # the EU analyst still sees masks


async def test_an_escape_right_after_a_served_statement_is_refused(store: SQLiteConnector) -> None:
    served = store.prepare(lookup(store, ANALYST))
    await store.execute(served, Limits())
    await store.execute(served, Limits())
    with pytest.raises(QueryExecutionError, match="outside its governed sources"):
        await store.execute(
            escape(store, "SELECT g.email, p.email FROM governed AS g, main.people AS p"), Limits(), governed=True
        )
    assert len((await store.execute(served, Limits())).rows) == len(ROWS)


async def test_plain_reads_after_a_governed_statement_run_under_the_read_only_authorizer(
    store: SQLiteConnector,
) -> None:
    await store.execute(store.prepare(lookup(store, ANALYST)), Limits())
    schema = await store.introspect("people")  # reads sqlite_master and table_info, which the gate refuses
    assert "email" in schema.column_names
    rows = (await store.execute("SELECT count(*) FROM people", Limits())).rows
    assert rows == [(len(ROWS),)]
    with pytest.raises(QueryExecutionError):
        await store.execute("CREATE TABLE x (a INTEGER)", Limits())
