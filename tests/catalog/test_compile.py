"""compile_query: one governed SELECT per neutral query, checked on SQLite, DuckDB and PostgreSQL."""

from __future__ import annotations

import base64
import decimal
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlglot import exp

from catalog.compile import CompiledQuery, compile_query, next_cursor
from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError
from catalog.governed_source import governed_source
from catalog.policy import GovernedView, govern
from catalog.query import Limits, Query, RowSet
from tests.catalog.governance_fixtures import (
    ANALYST,
    CONTRACT_YAML,
    EU_ANALYST,
    EU_ROWS,
    NOTES,
    PII_READER,
    ROWS,
    SALT,
    DirectStore,
    contract,
    leaked,
    normalise,
    salted_md5,
    store_for,
)

STORES = ["sqlite", "duckdb", "postgresql"]


@pytest.fixture(scope="module", params=STORES)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectStore]:
    pg_cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    with store_for(request.param, tmp_path_factory, pg_cluster) as filled:
        yield filled


def q(**kwargs: Any) -> Query:
    return Query.model_validate(kwargs)


def compiled(view: GovernedView, query: Query, *, dialect: str = "postgres", max_rows: int = 1000) -> CompiledQuery:
    return compile_query(view, query, limits=Limits(max_rows=max_rows), dialect=dialect, hash_salt=SALT)


def run(store: DirectStore, view: GovernedView, query: Query, max_rows: int = 1000) -> tuple[list[str], list[Any]]:
    statement = compiled(view, query, dialect=store.dialect, max_rows=max_rows).statement
    return store.run(statement)


# -- the governed source ---------------------------------------------------------------------------


def test_the_governed_source_masks_columns_and_holds_the_row_filter_inside() -> None:
    view = govern(contract(), EU_ANALYST)
    sql = compiled(view, q(where=[{"column": "region", "op": "=", "value": "US"}])).statement.sql("postgres")
    inner, outer = sql.split(') AS "people"')
    assert 'FROM "people" AS "_source" WHERE ("_source".region = \'EU\')' in inner
    assert 'MD5(\'pe\'\'pper\\salt\' || CAST("_source"."email" AS TEXT)) AS "email"' in inner
    assert '"people"."region" = \'US\'' in outer
    assert "'US'" not in inner


def test_the_fence_renders_per_dialect() -> None:
    view = govern(contract(), EU_ANALYST)
    fenced = {d: governed_source(view, dialect=d, hash_salt=SALT, fence=True).sql(d) for d in ("sqlite", "postgres")}
    assert fenced["sqlite"].endswith('LIMIT -1 OFFSET 0) AS "people"')
    assert fenced["postgres"].endswith('OFFSET 0) AS "people"')
    assert "OFFSET" not in compiled(view, q()).statement.find(exp.Subquery).sql("postgres")  # type: ignore[union-attr]


def test_inner_references_are_qualified_so_they_cannot_resolve_to_an_outer_query() -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data["policy"]["row_filters"] = [{"when": "role:eu", "where": "people.region = 'EU' AND score IS NOT NULL"}]
    view = govern(ProductContract.model_validate(data), EU_ANALYST)
    inner = governed_source(view, dialect="postgres", hash_salt=SALT).this
    assert {c.table for c in inner.find_all(exp.Column)} == {"_source"}


def test_a_source_query_is_wrapped_and_aliased() -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data["source"] = {"connection": "crm", "query": "SELECT * FROM people WHERE person_id > 0"}
    view = govern(ProductContract.model_validate(data), EU_ANALYST)
    sql = governed_source(view, dialect="duckdb", hash_salt=SALT).sql("duckdb")
    assert 'FROM (SELECT * FROM people WHERE person_id > 0) AS "_source" WHERE ("_source".region = \'EU\')' in sql


def test_masks_render_and_run_on_every_store(store: DirectStore) -> None:
    view = govern(contract(), ANALYST)
    columns, rows = run(store, view, q(columns=["person_id", "email", "phone", "full_name", "national_id"]))
    assert columns == ["person_id", "email", "phone", "full_name", "national_id"]
    raw = {r[0]: r for r in ROWS}
    assert len(rows) == len(ROWS)
    for person_id, email, phone, name, national_id in rows:
        source = raw[person_id]
        assert email == salted_md5(source[1])
        assert phone == (None if source[2] is None else "***" + source[2][-4:])
        assert name == "***"
        assert national_id is None
        assert not leaked(repr((email, phone, name, national_id)))


def test_partial_masks_hide_short_values_entirely(store: DirectStore) -> None:
    view = govern(contract(), ANALYST)
    select = governed_source(view, dialect=store.dialect, hash_salt=SALT).this
    phone = next(p for p in select.expressions if p.alias_or_name == "phone")
    for value, expected in [("1234567", "***"), ("12345678", "***5678"), ("", "***"), ("äöüß✓äöü", "***✓äöü")]:
        source = exp.select(exp.alias_(exp.cast(exp.Literal.string(value), "text"), "phone", quoted=True))
        _, rows = store.run(exp.select(phone.copy()).from_(source.subquery(exp.to_identifier("_source", quoted=True))))
        assert rows == [(expected,)]


def test_a_pii_reader_sees_raw_values(store: DirectStore) -> None:
    view = govern(contract(), PII_READER)
    _, rows = run(store, view, q(columns=["email"], order_by=[{"column": "person_id"}]))
    assert [r[0] for r in rows] == [r[1] for r in ROWS]


def test_the_row_filter_cannot_be_escaped_with_an_or(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)
    anything = {"or": [{"column": "region", "op": "!=", "value": "EU"}, {"column": "region", "op": "=", "value": "EU"}]}
    _, rows = run(store, view, q(columns=["region"], where=[anything]))
    assert len(rows) == len(EU_ROWS) and {r[0] for r in rows} == {"EU"}


# -- filters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("note", [n for n in NOTES if n is not None])
def test_string_values_are_quoted_safely_on_every_store(store: DirectStore, note: str) -> None:
    view = govern(contract(), PII_READER)
    _, rows = run(store, view, q(columns=["person_id"], where=[{"column": "note", "op": "=", "value": note}]))
    assert sorted(r[0] for r in rows) == sorted(r[0] for r in ROWS if r[9] == note)


def test_hostile_strings_stay_values(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)
    for value in ["'; DROP TABLE people; --", "\\'; SELECT 1; --", "' OR '1'='1", "é' OR region <> 'EU"]:
        _, rows = run(store, view, q(columns=["region"], where=[{"column": "note", "op": "!=", "value": value}]))
        assert {r[0] for r in rows} <= {"EU"}
        _, rows = run(store, view, q(where=[{"column": "note", "op": "=", "value": value}]))
        assert rows == []


def test_every_operator_runs_on_every_store(store: DirectStore) -> None:
    view = govern(contract(), PII_READER)
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"column": "score", "op": "=", "value": 3}, lambda r: r[7] == 3),
        ({"column": "score", "op": "!=", "value": 3}, lambda r: r[7] is not None and r[7] != 3),
        ({"column": "score", "op": "<", "value": 2}, lambda r: r[7] is not None and r[7] < 2),
        ({"column": "score", "op": "<=", "value": 2}, lambda r: r[7] is not None and r[7] <= 2),
        ({"column": "amount", "op": ">", "value": 50.5}, lambda r: r[6] is not None and r[6] > 50.5),
        ({"column": "amount", "op": ">=", "value": 50}, lambda r: r[6] is not None and r[6] >= 50),
        ({"column": "region", "op": "in", "value": ["EU", "US"]}, lambda r: r[5] in ("EU", "US")),
        ({"column": "region", "op": "not_in", "value": ["EU"]}, lambda r: r[5] != "EU"),
        ({"column": "note", "op": "like", "value": "%\\\\%"}, lambda r: r[9] is not None and "\\" in r[9]),
        ({"column": "note", "op": "like", "value": "100\\%%"}, lambda r: r[9] is not None and r[9].startswith("100%")),
        (
            {"column": "note", "op": "like", "value": "%\\_sure\\_"},
            lambda r: r[9] is not None and r[9].endswith("_sure_"),
        ),
        ({"column": "note", "op": "like", "value": "Zo_ %"}, lambda r: r[9] is not None and r[9].startswith("Zoë ")),
        ({"column": "email", "op": "like", "value": "p1%"}, lambda r: r[1].startswith("p1")),
        ({"column": "phone", "op": "is_null"}, lambda r: r[2] is None),
        ({"column": "phone", "op": "is_not_null"}, lambda r: r[2] is not None),
        ({"column": "score", "op": "between", "value": [1, 3]}, lambda r: r[7] is not None and 1 <= r[7] <= 3),
        ({"column": "signup", "op": ">=", "value": "2024-03-01"}, lambda r: r[8].isoformat() >= "2024-03-01"),
    ]
    for condition, expected in cases:
        _, rows = run(store, view, q(columns=["person_id"], where=[condition]))
        assert sorted(r[0] for r in rows) == sorted(r[0] for r in ROWS if expected(r)), condition


def test_filters_on_masked_columns_compare_masked_values(store: DirectStore) -> None:
    view = govern(contract(), ANALYST)
    raw_email = ROWS[0][1]
    _, rows = run(store, view, q(where=[{"column": "email", "op": "=", "value": raw_email}]))
    assert rows == []
    _, rows = run(
        store, view, q(columns=["person_id"], where=[{"column": "email", "op": "=", "value": salted_md5(raw_email)}])
    )
    assert rows == [(ROWS[0][0],)]
    _, rows = run(store, view, q(where=[{"column": "full_name", "op": "like", "value": "%O'Brien%"}]))
    assert rows == []


def test_unknown_columns_suggest_a_close_match() -> None:
    view = govern(contract(), ANALYST)
    with pytest.raises(InvalidRequestError) as info:
        compiled(view, q(where=[{"column": "amout", "op": ">", "value": 1}]))
    message = info.value.message
    assert message.startswith("unknown column 'amout' in crm.people; did you mean 'amount'?")
    assert "columns are person_id, email, phone" in message
    with pytest.raises(InvalidRequestError, match="unknown column 'zzz' in crm.people; columns are"):
        compiled(view, q(columns=["zzz"]))


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"column": "amount", "op": "=", "value": "ten"}, "column 'amount' is decimal; 'ten' does not fit"),
        ({"column": "score", "op": "=", "value": True}, "column 'score' is integer"),
        ({"column": "region", "op": "=", "value": 3}, "column 'region' is string"),
        ({"column": "signup", "op": "=", "value": "yesterday"}, "ISO 8601"),
        ({"column": "score", "op": "like", "value": "1%"}, "'like' needs a string column"),
        ({"column": "email", "op": ">", "value": 3}, "masked for you"),
        ({"column": "region", "op": "in", "value": ["EU", None]}, "use is_null"),
        ({"column": "note", "op": "=", "value": "nul\x00"}, "NUL"),
        ({"column": "amount", "op": ">", "value": float("inf")}, "finite"),
        ({"column": "note", "op": "like", "value": "ends\\"}, "lone backslash"),
    ],
)
def test_values_must_fit_the_visible_column_type(condition: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        compiled(govern(contract(), ANALYST), q(where=[condition]))


# -- aggregates ------------------------------------------------------------------------------------


def test_aggregates_group_and_order_on_every_store(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)
    query = q(
        group_by=["score"],
        aggregates=[
            {"fn": "count"},
            {"fn": "count", "column": "phone", "as": "phones"},
            {"fn": "count_distinct", "column": "email", "as": "emails"},
            {"fn": "sum", "column": "amount", "as": "total"},
            {"fn": "min", "column": "phone", "as": "low"},
        ],
        order_by=[{"column": "count", "direction": "desc"}],
    )
    columns, rows = run(store, view, query)
    assert columns == ["score", "count", "phones", "emails", "total", "low"]
    expected = Counter(r[7] for r in EU_ROWS)
    assert {r[0]: r[1] for r in rows} == dict(expected)
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert sum(r[1] for r in rows) == len(EU_ROWS)
    for row in rows:
        assert row[3] == row[1]  # hashed e-mails stay distinct
        assert row[5] is None or row[5].startswith("***")
        assert not leaked(repr(row))


def test_a_global_aggregate_returns_one_row_without_a_cursor(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)
    query = q(aggregates=[{"fn": "count"}, {"fn": "avg", "column": "score", "as": "mean"}])
    result = compiled(view, query, dialect=store.dialect)
    columns, rows = store.run(result.statement)
    assert rows[0][0] == len(EU_ROWS)
    assert next_cursor(result, RowSet(columns=columns, rows=rows, truncated=True)) is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"aggregates": [{"fn": "sum", "column": "email"}]}, "sum needs a numeric column; 'email' is string, masked"),
        ({"aggregates": [{"fn": "avg", "column": "region"}]}, "avg needs a numeric column"),
        ({"group_by": ["region"], "aggregates": [{"fn": "count", "as": "region"}]}, "used twice"),
        (
            {"group_by": ["region"], "aggregates": [{"fn": "count"}], "order_by": [{"column": "amount"}]},
            "order by one of region, count",
        ),
        ({"group_by": ["regoin"], "aggregates": [{"fn": "count"}]}, "did you mean 'region'"),
    ],
)
def test_invalid_aggregates_say_what_would_work(query: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        compiled(govern(contract(), ANALYST), q(**query))


# -- limits and cursors ----------------------------------------------------------------------------


def test_the_statement_fetches_one_row_more_than_the_page() -> None:
    view = govern(contract(), ANALYST)
    assert compiled(view, q(limit=10), max_rows=5).row_limit == 5
    result = compiled(view, q(limit=3), max_rows=5)
    assert result.row_limit == 3
    assert result.statement.args["limit"].expression.name == "4"
    assert compiled(view, q(), max_rows=7).row_limit == 7


def pages(store: DirectStore, view: GovernedView, query: Query, *, limit: int) -> list[list[tuple[Any, ...]]]:
    """Follow next_cursor to the end, running each page like a connector would (max_rows = row_limit)."""
    out: list[list[tuple[Any, ...]]] = []
    cursor = None
    while True:
        page_query = query.model_copy(update={"cursor": cursor, "limit": limit})
        result = compiled(view, page_query, dialect=store.dialect)
        columns, rows = store.run(result.statement)
        assert len(rows) <= result.row_limit + 1
        shown = RowSet(columns=columns, rows=rows[: result.row_limit], truncated=len(rows) > result.row_limit)
        out.append(shown.rows)
        cursor = next_cursor(result, shown)
        if cursor is None:
            return out
        assert len(out) < 100


@pytest.mark.parametrize(
    "order_by",
    [
        [],
        [{"column": "score", "direction": "desc"}],
        [{"column": "score"}, {"column": "amount", "direction": "desc"}],
        [{"column": "email"}],
        [{"column": "signup", "direction": "desc"}],
    ],
)
def test_keyset_pages_cover_every_row_once_in_order(store: DirectStore, order_by: list[dict[str, str]]) -> None:
    view = govern(contract(), EU_ANALYST)
    query = q(order_by=order_by)
    assert compiled(view, query).pagination == "keyset"
    _, everything = run(store, view, query)
    walked = pages(store, view, query, limit=4)
    assert [r for page in walked for r in page] == everything
    assert len(everything) == len(EU_ROWS)


def test_offset_pages_serve_projections_without_the_key(store: DirectStore) -> None:
    view = govern(contract(), ANALYST)
    query = q(columns=["region", "score"], order_by=[{"column": "score"}])
    assert compiled(view, query).pagination == "offset"
    walked = [r for page in pages(store, view, query, limit=7) for r in page]
    assert Counter(walked) == Counter((r[5], r[7]) for r in ROWS)


def test_aggregate_pages_use_offsets(store: DirectStore) -> None:
    view = govern(contract(), ANALYST)
    query = q(group_by=["region", "score"], aggregates=[{"fn": "count"}])
    walked = [r for page in pages(store, view, query, limit=5) for r in page]
    assert Counter({(r[0], r[1]): r[2] for r in walked}) == Counter((r[5], r[7]) for r in ROWS)


def test_a_product_without_primary_key_pages_by_offset(store: DirectStore) -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data["primary_key"] = []
    view = govern(ProductContract.model_validate(data), EU_ANALYST)
    query = q(columns=["person_id", "note"])
    assert compiled(view, query).pagination == "offset"
    walked = [r for page in pages(store, view, query, limit=6) for r in page]
    assert sorted(r[0] for r in walked) == sorted(r[0] for r in EU_ROWS)


def test_cursor_values_round_trip_dates_and_decimals(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)
    query = q(columns=["person_id", "amount", "signup"], order_by=[{"column": "amount"}, {"column": "signup"}])
    walked = pages(store, view, query, limit=3)
    assert sorted(r[0] for page in walked for r in page) == sorted(r[0] for r in EU_ROWS)
    amounts = [decimal.Decimal(normalise(r[1])) for page in walked for r in page if r[1] is not None]
    assert amounts == sorted(decimal.Decimal(normalise(r[6])) for r in EU_ROWS if r[6] is not None)
    assert len(walked) > 3


def test_a_cursor_from_another_query_is_rejected() -> None:
    view = govern(contract(), ANALYST)
    first = compiled(view, q(order_by=[{"column": "score"}], limit=2))
    cursor = next_cursor(first, RowSet(columns=list(view.columns), rows=[ROWS[0], ROWS[1]], truncated=True))
    assert cursor is not None
    compiled(view, q(order_by=[{"column": "score"}], limit=5, cursor=cursor))  # only limit changed: fine
    with pytest.raises(InvalidRequestError, match="different query"):
        compiled(view, q(order_by=[{"column": "amount"}], cursor=cursor))
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        compiled(view, q(order_by=[{"column": "score"}], cursor="not-a-cursor"))
    forged = base64.urlsafe_b64encode(json.dumps({"v": 1, "s": first.shape, "m": "offset", "o": -3}).encode())
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        compiled(view, q(order_by=[{"column": "score"}], cursor=forged.decode()))


def test_no_cursor_after_the_last_page() -> None:
    view = govern(contract(), ANALYST)
    result = compiled(view, q(limit=2))
    assert next_cursor(result, RowSet(columns=list(view.columns), rows=[ROWS[0], ROWS[1]])) is None
    assert next_cursor(result, RowSet(columns=list(view.columns), rows=[], truncated=True)) is None
    three = RowSet(columns=list(view.columns), rows=[ROWS[0], ROWS[1], ROWS[2]])
    assert next_cursor(result, three) is not None
