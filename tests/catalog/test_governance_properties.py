"""Governance holds whatever the caller asks: property tests through the real connectors on every store.

For principals without ``role:pii``, random projections, filters, orderings, aggregates, cursors and
``run_sql`` statements never return (nor put in an error message) a raw personal value or the hash
salt, and every row they see satisfies the row filter. Hostile ``run_sql`` text is refused and the
store is unchanged afterwards.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from catalog.compile import compile_query, next_cursor
from catalog.errors import DataProductsError, InvalidRequestError, SQLRefusedError
from catalog.policy import GovernedView, govern
from catalog.query import Limits, Query, RowSet
from catalog.sqlguard import parse_product_sql, rewrite_sql
from connectors import Connector
from tests.catalog.governance_fixtures import (
    ANALYST,
    COLUMNS,
    EU_ANALYST,
    EU_ROWS,
    NOTES,
    ROWS,
    SALT,
    SECRETS,
    contract,
    leaked,
    open_connector,
)

PROPERTIES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
MASKED_SHAPE = re.compile(r"^([0-9a-f]{32}|\*\*\*.{0,4})$")
MASKED = ("email", "phone", "full_name", "national_id")
STRINGS = ("email", "phone", "full_name", "national_id", "region", "note", "code")
NUMBERS = ("person_id", "score", "amount")


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def connector(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    with open_connector(request, tmp_path_factory, "props") as connector:
        yield connector


def execute(store: Connector, statement: Any, limits: Limits) -> RowSet:
    return anyio.run(store.execute, statement, limits)


def assert_governed(view: GovernedView, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """No raw personal value or salt in the rows; masked columns look masked; the row filter holds."""
    text = repr(rows)
    assert not leaked(text), leaked(text)
    assert SALT not in text
    for index, name in enumerate(columns):
        values = {row[index] for row in rows}
        if name in view.masked:
            assert all(v is None or MASKED_SHAPE.match(str(v)) for v in values), (name, values)
        if name == "region" and view.row_filters:
            assert values <= {"EU"}


def assert_clean_error(error: DataProductsError) -> None:
    assert not leaked(error.message), leaked(error.message)
    assert SALT not in error.message


# -- strategies ------------------------------------------------------------------------------------

fragments = st.sampled_from(SECRETS).flatmap(lambda s: st.integers(0, max(0, len(s) - 3)).map(lambda i: s[i : i + 5]))
strings = st.one_of(
    st.sampled_from(SECRETS),
    fragments,
    st.sampled_from(["EU", "US", "APAC", *[n for n in NOTES if n]]),
    st.text(max_size=6).filter(lambda s: "\x00" not in s),
)
numbers = st.one_of(st.integers(-5, 120), st.floats(-5, 120, allow_nan=False).map(lambda f: round(f, 2)))
dates = st.dates().map(lambda d: d.isoformat())


def condition(column: str) -> st.SearchStrategy[dict[str, Any]]:
    null_tests = st.sampled_from([{"column": column, "op": "is_null"}, {"column": column, "op": "is_not_null"}])
    if column in STRINGS:
        values = strings
        like = st.one_of(fragments, strings).map(lambda s: {"column": column, "op": "like", "value": f"%{s}%"})
    elif column == "signup":
        values, like = dates, st.nothing()
    else:
        values, like = (st.integers(-5, 60) if column != "amount" else numbers), st.nothing()
    compare = st.builds(
        lambda op, v: {"column": column, "op": op, "value": v},
        st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
        values,
    )
    member = st.builds(
        lambda op, v: {"column": column, "op": op, "value": v},
        st.sampled_from(["in", "not_in"]),
        st.lists(values, min_size=1, max_size=4),
    )
    between = st.builds(lambda lo, hi: {"column": column, "op": "between", "value": [lo, hi]}, values, values)
    return st.one_of(compare, member, between, like, null_tests)


conditions = st.sampled_from(COLUMNS).flatmap(condition)
filters = st.recursive(
    conditions,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda f: {"or": f}),
        st.lists(inner, min_size=1, max_size=3).map(lambda f: {"and": f}),
    ),
    max_leaves=6,
)
order_by = st.lists(
    st.builds(lambda c, d: {"column": c, "direction": d}, st.sampled_from(COLUMNS), st.sampled_from(["asc", "desc"])),
    max_size=3,
    unique_by=lambda o: o["column"],
)
aggregates = st.one_of(
    st.builds(lambda c: {"fn": "count", "column": c}, st.sampled_from(COLUMNS)),
    st.builds(lambda c: {"fn": "count_distinct", "column": c}, st.sampled_from(COLUMNS)),
    st.builds(lambda f, c: {"fn": f, "column": c}, st.sampled_from(["sum", "avg"]), st.sampled_from(NUMBERS)),
    st.builds(lambda f, c: {"fn": f, "column": c}, st.sampled_from(["min", "max"]), st.sampled_from(COLUMNS)),
    st.just({"fn": "count"}),
)
row_queries = st.fixed_dictionaries(
    {"where": st.lists(filters, max_size=3), "order_by": order_by},
    optional={"columns": st.lists(st.sampled_from(COLUMNS), min_size=1, unique=True), "limit": st.integers(1, 60)},
)
aggregate_queries = st.fixed_dictionaries(
    {
        "where": st.lists(filters, max_size=2),
        "group_by": st.lists(st.sampled_from(COLUMNS), max_size=2, unique=True),
        "aggregates": st.lists(aggregates, min_size=1, max_size=3, unique_by=lambda a: (a["fn"], a.get("column"))),
    }
)
principals = st.sampled_from([EU_ANALYST, ANALYST])


# -- compile_query ---------------------------------------------------------------------------------


@PROPERTIES
@given(principal=principals, raw=st.one_of(row_queries, aggregate_queries))
def test_structured_queries_never_reveal_masked_values_or_hidden_rows(
    connector: Connector, principal: Any, raw: dict[str, Any]
) -> None:
    view = govern(contract(), principal)
    query = Query.model_validate(raw)
    try:
        compiled = compile_query(view, query, limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    except InvalidRequestError as exc:  # e.g. min() over a boolean: refused before any SQL runs
        assert_clean_error(exc)
        return
    rowset = execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit))
    assert_governed(view, rowset.columns, rowset.rows)
    visible = len(EU_ROWS) if view.row_filters else len(ROWS)
    assert len(rowset.rows) <= visible
    for name in ("count",):
        if name in rowset.columns:
            assert sum(r[rowset.columns.index(name)] for r in rowset.rows) <= visible


@settings(PROPERTIES, max_examples=30)
@given(principal=principals, where=st.lists(filters, max_size=2), order=order_by, page=st.integers(1, 9))
def test_following_cursors_returns_exactly_the_unpaged_rows(
    connector: Connector, principal: Any, where: list[Any], order: list[Any], page: int
) -> None:
    view = govern(contract(), principal)
    query = Query.model_validate({"where": where, "order_by": order})
    full = compile_query(view, query, limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    everything = execute(connector, full.statement, Limits(max_rows=full.row_limit)).rows
    assume(len(everything) <= 60)
    walked: list[tuple[Any, ...]] = []
    cursor = None
    for _ in range(100):
        step = query.model_copy(update={"cursor": cursor, "limit": page})
        compiled = compile_query(view, step, limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
        rowset = execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit))
        assert len(rowset.rows) <= page
        walked += rowset.rows
        cursor = next_cursor(compiled, rowset)
        if cursor is None:
            break
    assert Counter(walked) == Counter(everything)
    if full.pagination == "keyset":  # the order is kept across pages
        assert walked == everything


# -- run_sql ---------------------------------------------------------------------------------------

PROJECTIONS = [
    "*",
    "p.email, p.phone, p.full_name, p.national_id",
    "lower(p.email) AS e, upper(p.full_name) AS u",
    "substr(p.phone, 1, 20) AS s, length(p.email) AS l",
    "p.region, p.email || '|' || coalesce(p.phone, '') AS joined",
    "CASE WHEN p.email LIKE '%@%' THEN p.email ELSE p.note END AS maybe",
    "coalesce(p.national_id, p.email) AS nid",
    "p.region, count(*) AS n",
    "count(DISTINCT p.email) AS n",
    "max(p.email) AS hi, min(p.full_name) AS lo",
]
PREDICATES = [
    "1 = 1",
    "p.region <> 'EU' OR 1 = 1",
    "p.region = 'US'",
    "p.email = '{secret}'",
    "p.email LIKE '%{fragment}%'",
    "p.full_name LIKE '%Brien%' OR p.phone LIKE '%170%'",
    "p.national_id IS NULL",
    "p.person_id IN (SELECT q.person_id FROM crm.people q WHERE q.region <> 'EU')",
    "EXISTS (SELECT 1 FROM crm.people q WHERE q.email = p.email AND q.region = 'APAC')",
    "CAST(p.code AS INTEGER) > 3",
    "length(p.email) = 32",
]
WRAPPERS = [
    "{select}",
    "WITH x AS ({select}) SELECT * FROM x",
    "SELECT * FROM ({select}) AS sub",
    "{select} UNION ALL {select}",
]


@st.composite
def sql_texts(draw: st.DrawFn) -> str:
    projection = draw(st.sampled_from(PROJECTIONS))
    predicate = draw(st.sampled_from(PREDICATES)).format(
        secret=draw(st.sampled_from(SECRETS)).replace("'", "''"), fragment=draw(fragments).replace("'", "''")
    )
    select = f"SELECT {projection} FROM crm.people p WHERE {predicate}"
    if "count(*)" in projection and "p.region" in projection:
        select += " GROUP BY p.region"
    wrapper = draw(st.sampled_from(WRAPPERS))
    if "UNION" in wrapper and projection == "*":
        wrapper = "{select}"
    sql = wrapper.format(select=select)
    if draw(st.booleans()):
        sql += f" LIMIT {draw(st.integers(0, 80))}"
    return sql


@PROPERTIES
@given(principal=principals, sql=sql_texts())
def test_run_sql_never_reveals_masked_values_or_hidden_rows(connector: Connector, principal: Any, sql: str) -> None:
    view = govern(contract(), principal)
    statement = rewrite_sql(
        parse_product_sql(sql), {"crm.people": view}, dialect=connector.dialect, hash_salt=SALT, limits=Limits()
    )
    try:
        rowset = execute(connector, statement, Limits())
    except DataProductsError as exc:  # e.g. a cast of a masked value: the store says no
        assert_clean_error(exc)
        return
    assert_governed(view, rowset.columns, rowset.rows)
    visible = len(EU_ROWS) if view.row_filters else len(ROWS)
    factor = 2 if "UNION" in sql else 1
    assert len(rowset.rows) <= visible * factor
    if "n" in rowset.columns:
        assert sum(r[rowset.columns.index("n")] for r in rowset.rows) <= visible * factor
    for index, name in enumerate(rowset.columns):
        if name in ("e", "u", "s", "joined", "maybe", "nid", "hi", "lo"):
            assert not leaked(repr([r[index] for r in rowset.rows]))


ATTACKS = [
    "DELETE FROM crm.people",
    "DELETE FROM people",
    "UPDATE crm.people SET email = 'x'",
    "INSERT INTO people (person_id, region) VALUES (999, 'EU')",
    "DROP TABLE people",
    "CREATE TABLE stolen AS SELECT * FROM people",
    "SELECT * INTO stolen FROM crm.people",
    "SELECT * FROM people",
    "SELECT email FROM people",
    "SELECT * FROM crm.people p JOIN people raw ON raw.person_id = p.person_id",
    "SELECT (SELECT email FROM people LIMIT 1) FROM crm.people",
    "WITH people AS (SELECT * FROM people) SELECT * FROM people",
    "SELECT * FROM (WITH people AS (SELECT 1) SELECT 1) s, people",
    "SELECT * FROM main.people",
    "SELECT * FROM public.people",
    "SELECT * FROM source.main.people",
    "SELECT * FROM sqlite_master",
    "SELECT * FROM pg_catalog.pg_tables",
    "SELECT * FROM information_schema.columns",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT pg_read_file('/etc/passwd') FROM crm.people",
    "SELECT readfile('/etc/passwd') FROM crm.people",
    "SELECT load_extension('/tmp/evil') FROM crm.people",
    "SELECT pg_sleep(5) FROM crm.people",
    "SELECT current_setting('data_directory') FROM crm.people",
    "SELECT set_config('transaction_read_only', 'off', true) FROM crm.people",
    "SELECT md5(email) FROM crm.people",
    "SELECT * FROM crm.people FOR UPDATE",
    "COPY people TO '/tmp/stolen.csv'",
    "ATTACH '/tmp/evil.db' AS evil",
    "PRAGMA query_only = OFF",
    "SET statement_timeout = 0",
    "SELECT 1; DELETE FROM people",
    "SELECT * FROM crm.people; SELECT * FROM people",
]
VARIANTS = [
    lambda s: s,
    str.lower,
    lambda s: s.replace(" ", "\n  "),
    lambda s: s.replace(" FROM ", " /* hi */ FROM "),
    lambda s: s + ";",
    lambda s: "  " + s.replace("SELECT", "select", 1),
]


@settings(PROPERTIES, max_examples=80)
@given(attack=st.sampled_from(ATTACKS), variant=st.sampled_from(VARIANTS), principal=principals)
def test_hostile_sql_is_refused_or_stays_governed(
    connector: Connector, attack: str, variant: Any, principal: Any
) -> None:
    view = govern(contract(), principal)
    try:
        parsed = parse_product_sql(variant(attack))
    except SQLRefusedError as exc:
        assert exc.message
        return
    # Accepted text only names products: anything else is an unknown product the registry refuses.
    assume(parsed.products == ["crm.people"])
    statement = rewrite_sql(parsed, {"crm.people": view}, dialect=connector.dialect, hash_salt=SALT, limits=Limits())
    rowset = execute(connector, statement, Limits())
    assert_governed(view, rowset.columns, rowset.rows)


def test_the_store_still_holds_every_row_after_the_attacks(connector: Connector) -> None:
    view = govern(contract(), ANALYST)
    statement = rewrite_sql(
        parse_product_sql("SELECT count(*) AS n, count(DISTINCT email) AS e FROM crm.people"),
        {"crm.people": view},
        dialect=connector.dialect,
        hash_salt=SALT,
        limits=Limits(),
    )
    assert execute(connector, statement, Limits()).rows == [(len(ROWS), len(ROWS))]
