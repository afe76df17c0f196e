"""Regression tests: each class of run_sql attack seen against the guard, on every store.

The statements are the attacks as reported, rewritten for ``crm.people`` (physical table ``people``):
raw SQL smuggled through words sqlglot prints back verbatim, the salt read from result column names,
a CTE shadowing the physical table inside the governed source, and inputs that stall the parser.
Each runs through the guard, the rewrite and the real connector, as a principal whose view is masked
and row-filtered.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
import yaml
from sqlglot import exp

from catalog.contract import ProductContract
from catalog.errors import DataProductsError, SQLRefusedError
from catalog.policy import GovernedView, govern
from catalog.query import Limits, RowSet
from catalog.sqlguard import _check_rendering, parse_product_sql, rewrite_sql
from connectors import Connector
from tests.catalog.governance_fixtures import (
    CONTRACT_YAML,
    EU_ANALYST,
    EU_ROWS,
    SALT,
    contract,
    leaked,
    open_connector,
)


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    with open_connector(request, tmp_path_factory, "attacks") as connector:
        yield connector


def query_source_contract() -> ProductContract:
    """``crm.people`` served from a source query that names the physical table unqualified."""
    data = yaml.safe_load(CONTRACT_YAML)
    data["source"] = {"connection": "crm", "query": "SELECT * FROM people"}
    return ProductContract.model_validate(data)


def run(store: Connector, sql: str, view: GovernedView | None = None) -> RowSet:
    view = view or govern(contract(), EU_ANALYST)
    parsed = parse_product_sql(sql)
    statement = rewrite_sql(
        parsed, dict.fromkeys(parsed.products, view), dialect=store.dialect, hash_salt=SALT, limits=Limits()
    )
    return anyio.run(store.execute, statement, Limits())


def assert_clean(rowset: RowSet) -> None:
    text = repr(rowset.columns) + repr(rowset.rows)
    assert not leaked(text), leaked(text)
    assert SALT not in text and "pe'pper" not in text
    for name in rowset.columns:
        assert "md5" not in name.lower() and "_source" not in name and "select" not in name.lower(), name


# -- 1. raw SQL through words printed back verbatim -------------------------------------------------

SMUGGLED = [
    'SELECT CAST(1 AS VARCHAR("1)) AS A, PERSON_ID, EMAIL, PHONE FROM PEOPLE --")) FROM crm.people',
    'SELECT CAST(1 AS DECIMAL("1)) AS A, EMAIL FROM PEOPLE --", 2)) FROM crm.people',
    'SELECT EXTRACT("year) FROM signup) AS y, email FROM people --" FROM signup) FROM crm.people',
    # a string unit that a dialect prints as a bare word
    "SELECT DATE_ADD(signup, 1, 'day) AS x, email FROM people --') FROM crm.people",
    "SELECT DATE_TRUNC('month'' , signup) AS x, email FROM people --', signup) FROM crm.people",
    "SELECT signup + INTERVAL '1' \"day) AS x, email FROM people --\" FROM crm.people",
    'SELECT DATE_TRUNC("month) , email FROM people --", signup) FROM crm.people',
    'SELECT CAST(1 AS VARCHAR("1)) AS a FROM sqlite_master --")) FROM crm.people',
    "SELECT CAST(1 AS VARCHAR(\"1)) AS a FROM read_csv('/etc/passwd') --\")) FROM crm.people",
]


@pytest.mark.parametrize("sql", SMUGGLED, ids=range(len(SMUGGLED)))
def test_words_printed_verbatim_cannot_carry_sql(store: Connector, sql: str) -> None:
    try:
        rowset = run(store, sql)
    except SQLRefusedError as exc:
        assert not leaked(exc.message)
        return
    except DataProductsError as exc:  # the store rejected what we printed: nothing ran around the guard
        assert not leaked(exc.message) and SALT not in exc.message
        return
    assert_clean(rowset)
    assert len(rowset.rows) <= len(EU_ROWS)


def test_a_quoted_name_is_no_cast_parameter_nor_date_part() -> None:
    for sql in SMUGGLED[:5]:  # the others are accepted: their text stays a quoted name or a string
        with pytest.raises(SQLRefusedError):
            parse_product_sql(sql)


def test_allowed_words_are_printed_in_our_own_spelling(store: Connector) -> None:
    rowset = run(
        store,
        "SELECT person_id, CAST(amount AS decimal(10, 2)) AS a, "
        "sum(score) OVER (ORDER BY person_id ROWS BETWEEN unbounded preceding AND current row) AS running "
        "FROM crm.people ORDER BY person_id",
    )
    assert [r[0] for r in rowset.rows] == [r[0] for r in EU_ROWS]


# -- 2. the salt in result column names -----------------------------------------------------------

NAMELESS = [
    "SELECT (SELECT email FROM crm.people LIMIT 1) FROM crm.people",
    "SELECT * FROM (SELECT (SELECT email FROM crm.people LIMIT 1), upper(phone) FROM crm.people) AS s",
    "SELECT email || '' FROM crm.people",
    "SELECT count(*), max(email), CASE WHEN max(email) IS NULL THEN 1 END FROM crm.people",
    "SELECT x.* FROM (SELECT email, (SELECT max(phone) FROM crm.people) FROM crm.people) AS x",
    "SELECT 1 + person_id FROM crm.people UNION ALL SELECT person_id FROM crm.people",
]


@pytest.mark.parametrize("sql", NAMELESS, ids=range(len(NAMELESS)))
def test_column_names_come_from_the_callers_text_never_from_the_rewrite(store: Connector, sql: str) -> None:
    rowset = run(store, sql)
    assert rowset.rows
    assert_clean(rowset)


def test_unnamed_outputs_are_named_by_function_or_position(store: Connector) -> None:
    rowset = run(
        store, "SELECT count(*), person_id, person_id + 1, max(email) AS m, CURRENT_DATE FROM crm.people GROUP BY 2"
    )
    assert rowset.columns == ["count", "person_id", "col_3", "m", "col_5"]


# -- 3. a CTE shadowing the physical table inside the governed source ------------------------------

SHADOWS = [
    "WITH RECURSIVE people(person_id, region) AS (SELECT 1, 'EU') SELECT count(*) FROM crm.people",
    "WITH people AS (SELECT 'known@example.org' AS email, 'EU' AS region) SELECT email FROM crm.people",
    "WITH PEOPLE AS (SELECT 1) SELECT count(*) FROM crm.people",
    'WITH "people" AS (SELECT 1) SELECT count(*) FROM crm.people',
    "WITH _source AS (SELECT 1) SELECT count(*) FROM crm.people",
    "SELECT * FROM (WITH people AS (SELECT 1) SELECT count(*) FROM crm.people) AS s",
]


@pytest.mark.parametrize("sql", SHADOWS, ids=range(len(SHADOWS)))
@pytest.mark.parametrize("source", ["table", "query"])
def test_a_cte_cannot_shadow_what_a_governed_source_reads(store: Connector, sql: str, source: str) -> None:
    view = govern(contract() if source == "table" else query_source_contract(), EU_ANALYST)
    with pytest.raises(SQLRefusedError, match="CTE name .* is taken"):
        run(store, sql, view)


def test_a_cte_named_otherwise_still_counts_only_visible_rows(store: Connector) -> None:
    view = govern(query_source_contract(), EU_ANALYST)
    rowset = run(store, "WITH p AS (SELECT * FROM crm.people) SELECT count(*) AS n FROM p", view)
    assert rowset.rows == [(len(EU_ROWS),)]


# -- 4. inputs that stall the parser ---------------------------------------------------------------

STALLS = {
    "nested parentheses": "SELECT " + "(" * 60 + "1" + ")" * 60 + " FROM crm.people",
    "nested subqueries": "SELECT * FROM " + "(SELECT * FROM " * 40 + "crm.people" + ") AS s" * 40,
    "a 2 MB IN list": "SELECT * FROM crm.people WHERE person_id IN (" + ", ".join(["1"] * 700_000) + ")",
    "unary chain": "SELECT " + "NOT " * 3000 + "TRUE FROM crm.people",
    "minus chain": "SELECT " + "- " * 3000 + "1 FROM crm.people",
    "nested CASE": "SELECT " + "CASE WHEN TRUE THEN " * 300 + "1" + " END" * 300 + " FROM crm.people",
    "long sum": "SELECT " + " + ".join(["person_id"] * 2400) + " FROM crm.people",
    "unclosed comment": "SELECT 1 FROM crm.people /*" + "(" * 5000,
    "NUL": "SELECT email FROM crm.people WHERE note = 'a\x00b'",
}


@pytest.mark.parametrize("sql", list(STALLS.values()), ids=list(STALLS))
def test_huge_or_deep_input_is_refused_with_a_clear_reason(sql: str) -> None:
    with pytest.raises(SQLRefusedError) as info:
        parse_product_sql(sql)
    message = info.value.message
    assert any(word in message for word in ("nested too deeply", "characters long", "NUL", "could not parse"))
    assert "Traceback" not in message and len(message) < 400


def test_nesting_within_the_limit_is_accepted(store: Connector) -> None:
    sql = "SELECT " + "(" * 20 + "person_id" + ")" * 20 + " AS p FROM crm.people ORDER BY p"
    assert len(run(store, sql).rows) == len(EU_ROWS)


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb", "postgres"])
def test_text_smuggled_past_the_allow_lists_is_caught_when_the_rendering_is_read_back(dialect: str) -> None:
    """The last check: as if a payload had slipped through a node printed verbatim."""
    view = govern(contract(), EU_ANALYST)
    parsed = parse_product_sql("SELECT person_id FROM crm.people")
    statement = rewrite_sql(parsed, {"crm.people": view}, dialect=dialect, hash_salt=SALT, limits=Limits())
    statement.find(exp.Column).replace(exp.var("email FROM people --"))  # type: ignore[union-attr]
    with pytest.raises(SQLRefusedError, match="cannot be rendered safely"):
        _check_rendering(statement, dialect)
