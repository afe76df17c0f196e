"""``policy.aggregate_only``: raw values never leave the store, small groups are suppressed.

``crm.people`` with ``amount`` aggregate-only (groups of at least 5 rows) unless ``role:hr``, read
through the real connectors on SQLite, DuckDB and PostgreSQL. Property tests compare what
``query_product`` and ``run_sql`` return with a Python oracle over the principal's visible rows;
attack tests check that every other shape of ``run_sql`` is refused.
"""

from __future__ import annotations

import decimal
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from catalog.compile import compile_query, next_cursor
from catalog.contract import ProductContract
from catalog.errors import DataProductsError, InvalidRequestError, SQLRefusedError
from catalog.metric_query import MetricsRequest
from catalog.metrics import compile_metrics
from catalog.policy import GovernedView, govern
from catalog.principal import Principal
from catalog.query import Limits, Query, RowSet
from catalog.sqlguard import parse_product_sql, rewrite_sql
from connectors import Connector
from servers.results import describe
from tests.catalog.governance_fixtures import (
    ANALYST,
    COLUMNS,
    CONTRACT_YAML,
    EU_ANALYST,
    ROWS,
    SALT,
    normalise,
    open_connector,
)

PROPERTIES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HR = Principal(name="hana", roles=frozenset({"analyst", "hr"}))
SIZE = 5
AMOUNT = COLUMNS.index("amount")
GROUPABLE = ("region", "score", "note", "signup")


def aggregate_only_yaml(rule: str = "{columns: [amount], min_group_size: 5, unless: role:hr}") -> str:
    return CONTRACT_YAML + f"  aggregate_only: {rule}\n"


def people() -> ProductContract:
    return ProductContract.model_validate(yaml.safe_load(aggregate_only_yaml()))


# -- contract and policy -----------------------------------------------------------------------------


def test_a_single_rule_becomes_a_list_and_govern_names_the_columns() -> None:
    contract = people()
    assert len(contract.policy.aggregate_only) == 1
    assert govern(contract, ANALYST).aggregate_only == {"amount": 5}
    assert govern(contract, HR).aggregate_only == {}


def test_the_largest_group_size_of_several_rules_wins() -> None:
    rules = "[{columns: [amount, score], min_group_size: 3}, {columns: [amount], min_group_size: 8, unless: role:hr}]"
    contract = ProductContract.model_validate(yaml.safe_load(aggregate_only_yaml(rules)))
    assert govern(contract, ANALYST).aggregate_only == {"amount": 8, "score": 3}
    assert govern(contract, HR).aggregate_only == {"amount": 3, "score": 3}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{columns: [salary]}", "unknown column 'salary'"),
        ("{columns: [amount], min_group_size: 1}", "greater than or equal to 2"),
        ("{columns: []}", "at least 1 item"),
        ("{columns: [email]}", "also masked by policy.masking[0]"),
        ("{columns: [amount], size: 3}", "size"),
    ],
)
def test_invalid_rules_are_refused(rule: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ProductContract.model_validate(yaml.safe_load(aggregate_only_yaml(rule)))


def test_a_masked_column_may_be_aggregate_only_when_one_rule_applies_to_nobody() -> None:
    text = aggregate_only_yaml("{columns: [email], unless: '*'}")
    assert govern(ProductContract.model_validate(yaml.safe_load(text)), ANALYST).aggregate_only == {}


# -- stores --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def connector(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    with open_connector(request, tmp_path_factory, "aggonly") as connector:
        yield connector


def execute(store: Connector, statement: Any, limits: Limits | None = None) -> RowSet:
    return anyio.run(store.execute, statement, limits or Limits())


def visible(view: GovernedView) -> list[dict[str, Any]]:
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]
    return [r for r in rows if r["region"] == "EU"] if view.row_filters else rows


def key(value: Any) -> Any:
    value = normalise(value)
    return value if value is None else str(value)


def oracle(
    rows: list[dict[str, Any]], group: str | None, where: tuple[str, Any] | None
) -> tuple[dict[Any, list[dict[str, Any]]], int]:
    """Groups of at least SIZE rows (by group key) and how many smaller groups there are."""
    if where is not None:
        rows = [r for r in rows if r[where[0]] == where[1]]
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r[group]) if group else None, []).append(r)
    if not group and not groups:
        groups[None] = []
    kept = {k: v for k, v in groups.items() if len(v) >= SIZE}
    return kept, len(groups) - len(kept)


def amount_sum(rows: list[dict[str, Any]]) -> str | None:
    values = [r["amount"] for r in rows if r["amount"] is not None]
    return f"{sum(values, decimal.Decimal(0)):.2f}" if values else None


def check_groups(rowset: RowSet, expected: dict[Any, list[dict[str, Any]]], grouped: bool) -> None:
    """Each returned row is a group the oracle keeps, with its count and sum; every kept group is there."""
    got = {}
    for row in rowset.rows:
        record = dict(zip(rowset.columns, row, strict=True))
        group = key(record["g"]) if grouped else None
        got[group] = (record["n"], normalise(record["total"]))
    want = {k: (len(v), amount_sum(v)) for k, v in expected.items()}
    assert got == want


WHERES = st.one_of(st.none(), st.sampled_from([("region", "US"), ("score", 1), ("score", 3), ("region", "EU")]))
PRINCIPALS = st.sampled_from([ANALYST, EU_ANALYST])


# -- query_product ---------------------------------------------------------------------------------------


@PROPERTIES
@given(principal=PRINCIPALS, group=st.one_of(st.none(), st.sampled_from(GROUPABLE)), where=WHERES, data=st.data())
def test_query_product_returns_only_groups_of_the_minimum_size(
    connector: Connector, principal: Principal, group: str | None, where: tuple[str, Any] | None, data: Any
) -> None:
    view = govern(people(), principal)
    extra = data.draw(st.sampled_from(["min", "max", "avg", "count", "count_distinct"]))
    query = Query.model_validate(
        {
            "group_by": [group] if group else [],
            "aggregates": [
                {"fn": "count", "as": "n"},
                {"fn": "sum", "column": "amount", "as": "total"},
                {"fn": extra, "column": "amount", "as": "other"},
            ],
            "where": [{"column": where[0], "op": "=", "value": where[1]}] if where else [],
            "order_by": [{"column": "n", "direction": "desc"}],
        }
    )
    compiled = compile_query(view, query, limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    rowset = execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit))
    if group:
        rowset = RowSet(columns=["g", *rowset.columns[1:]], rows=rowset.rows, truncated=rowset.truncated)
    expected, small = oracle(visible(view), group, where)
    check_groups(rowset, expected, bool(group))
    assert compiled.suppressed is not None
    assert execute(connector, compiled.suppressed).rows == [(small,)]


def test_row_queries_leave_aggregate_only_columns_out_or_refuse_them(connector: Connector) -> None:
    view = govern(people(), ANALYST)
    compiled = compile_query(view, Query(), limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    assert "amount" not in compiled.columns
    rowset = execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit))
    assert len(rowset.rows) == len(ROWS) and "amount" not in rowset.columns
    for query in [
        {"columns": ["person_id", "amount"]},
        {"order_by": [{"column": "amount"}]},
        {"where": [{"column": "amount", "op": ">", "value": 10}]},
        {
            "where": [
                {"any_of": [{"column": "region", "op": "=", "value": "EU"}, {"column": "amount", "op": "is_null"}]}
            ]
        },
        {"group_by": ["amount"], "aggregates": [{"fn": "count"}]},
        {
            "group_by": ["region"],
            "aggregates": [{"fn": "count"}],
            "where": [{"column": "amount", "op": "<", "value": 5}],
        },
    ]:
        with pytest.raises(InvalidRequestError, match="amount is aggregate-only for you"):
            compile_query(view, Query.model_validate(query), limits=Limits(), dialect=connector.dialect, hash_salt=SALT)


def test_column_names_in_another_case_are_the_same_column(connector: Connector) -> None:
    view = govern(people(), ANALYST)
    query = Query.model_validate({"group_by": ["person_id"], "aggregates": [{"fn": "max", "column": "AMOUNT"}]})
    compiled = compile_query(view, query, limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    assert compiled.min_group_size == SIZE
    assert execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit)).rows == []
    for bad in [{"columns": ["Amount"]}, {"where": [{"column": "AMOUNT", "op": ">", "value": 1}]}]:
        with pytest.raises(InvalidRequestError, match="amount is aggregate-only"):
            compile_query(view, Query.model_validate(bad), limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    for sql in [
        'SELECT "AMOUNT" FROM crm.people',
        "SELECT Amount FROM crm.people",
        "SELECT p.AMOUNT FROM crm.people p",
    ]:
        with pytest.raises(SQLRefusedError, match="aggregate-only"):
            rewrite(sql, view, connector)
    rows = execute(connector, rewrite("SELECT MAX(AMOUNT) AS m FROM crm.people GROUP BY person_id", view, connector))
    assert rows.rows == []


def test_the_exempt_principal_reads_raw_values(connector: Connector) -> None:
    view = govern(people(), HR)
    query = Query.model_validate({"columns": ["person_id", "amount"], "order_by": [{"column": "person_id"}]})
    compiled = compile_query(view, query, limits=Limits(), dialect=connector.dialect, hash_salt=SALT)
    rowset = execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit))
    assert [normalise(r[1]) for r in rowset.rows] == [normalise(r[AMOUNT]) for r in ROWS]
    rowset = execute(connector, rewrite("SELECT person_id, amount FROM crm.people", view, connector))
    assert len(rowset.rows) == len(ROWS)


def test_aggregate_queries_page_by_offset(connector: Connector) -> None:
    view = govern(people(), ANALYST)
    query = {
        "group_by": ["score"],
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "amount", "as": "total"}],
        "limit": 2,
    }
    seen: list[Any] = []
    cursor = None
    for _ in range(5):
        compiled = compile_query(
            view,
            Query.model_validate({**query, "cursor": cursor}),
            limits=Limits(),
            dialect=connector.dialect,
            hash_salt=SALT,
        )
        rowset = execute(connector, compiled.statement, Limits(max_rows=compiled.row_limit))
        seen += [r[0] for r in rowset.rows[: compiled.row_limit]]
        cursor = next_cursor(compiled, rowset)
        if cursor is None:
            break
    expected, _ = oracle(visible(view), "score", None)
    assert sorted(map(str, map(key, seen))) == sorted(map(str, expected))


# -- run_sql -----------------------------------------------------------------------------------------------


def rewrite(sql: str, view: GovernedView, connector: Connector) -> Any:
    parsed = parse_product_sql(sql)
    return rewrite_sql(parsed, {"crm.people": view}, dialect=connector.dialect, hash_salt=SALT, limits=Limits())


SHAPES = [
    "SELECT {g} COUNT(*) AS n, SUM(amount) AS total{x} FROM crm.people {w} {gb}",
    "SELECT * FROM (SELECT {g} COUNT(*) AS n, SUM(p.amount) AS total{x} FROM crm.people p {w} {gb}) AS t",
    "WITH t AS (SELECT {g} COUNT(*) AS n, SUM(amount) AS total{x} FROM crm.people {w} {gb}) SELECT * FROM t",
]
EXTRAS = ["", ", MAX(amount) AS hi", ", COUNT(DISTINCT amount) AS d", ", AVG(amount) AS mean",
          ", COUNT(CASE WHEN amount > 50 THEN 1 END) AS big", ", MIN(amount) AS lo"]  # fmt: skip


@PROPERTIES
@given(
    principal=PRINCIPALS,
    shape=st.sampled_from(SHAPES),
    extra=st.sampled_from(EXTRAS),
    group=st.one_of(st.none(), st.sampled_from(GROUPABLE)),
    where=WHERES,
    having=st.booleans(),
)
def test_run_sql_returns_only_groups_of_the_minimum_size(
    connector: Connector,
    principal: Principal,
    shape: str,
    extra: str,
    group: str | None,
    where: tuple[str, Any] | None,
    having: bool,
) -> None:
    view = govern(people(), principal)
    condition = ""
    if where is not None:
        condition = f"WHERE {where[0]} = " + (f"'{where[1]}'" if isinstance(where[1], str) else str(where[1]))
    grouping = f"GROUP BY {group}" if group else ""
    if having:  # the caller's own HAVING, ANDed with the group-size rule
        grouping += " HAVING COUNT(*) > 0 OR COUNT(*) = 0"
    sql = shape.format(g=f"{group} AS g," if group else "", x=extra, w=condition, gb=grouping)
    rowset = execute(connector, rewrite(sql, view, connector))
    expected, _ = oracle(visible(view), group, where)
    check_groups(rowset, expected, bool(group))
    assert "amount" not in rowset.columns


HOSTILE_OUTPUTS = [
    "region",
    "score",
    "amount",
    "SUM(amount) AS s",
    "MAX(amount) AS hi",
    "COUNT(DISTINCT amount) AS d",
    "SUM(CASE WHEN person_id < 10 THEN amount END) AS picked",
    "SUM(amount) OVER () AS w",
    "COUNT(CASE WHEN amount > 50 THEN 1 END) AS big",
    "MIN(amount) + 0 AS lo",
]


@PROPERTIES
@given(
    principal=PRINCIPALS,
    outputs=st.lists(st.sampled_from(HOSTILE_OUTPUTS), min_size=1, max_size=3, unique=True),
    where=st.sampled_from(["", "WHERE region = 'US'", "WHERE amount > 50", "WHERE person_id = 8",
                           "WHERE amount IS NULL"]),
    group=st.sampled_from(["", "GROUP BY region", "GROUP BY score", "GROUP BY amount", "GROUP BY person_id",
                           "GROUP BY region, score"]),
    having=st.sampled_from(["", "HAVING SUM(amount) > 10", "HAVING COUNT(*) < 3", "HAVING MAX(amount) > 0 OR 1 = 1"]),
    order=st.sampled_from(["", "ORDER BY n", "ORDER BY amount", "ORDER BY 1"]),
    wrapper=st.sampled_from(["{}", "SELECT * FROM ({}) AS t", "WITH t AS ({}) SELECT * FROM t"]),
)  # fmt: skip
def test_run_sql_hostile_shapes_are_refused_or_return_only_large_groups(
    connector: Connector,
    principal: Principal,
    outputs: list[str],
    where: str,
    group: str,
    having: str,
    order: str,
    wrapper: str,
) -> None:
    """Random mixes of the column in every position: refused, or every row a group of at least SIZE rows."""
    view = govern(people(), principal)
    inner = f"SELECT COUNT(*) AS n, {', '.join(outputs)} FROM crm.people {where} {group} {having}"
    sql = wrapper.format(inner) + (f" {order}" if order else "")
    try:
        statement = rewrite(sql, view, connector)
        rowset = execute(connector, statement)
    except DataProductsError:
        return  # refused by us, or the store rejected invalid SQL (no values in the message)
    assert "amount" not in rowset.columns
    if "amount" in inner:  # counting rows alone is not restricted (an outer ORDER BY reads no product)
        assert all(row[rowset.columns.index("n")] >= SIZE for row in rowset.rows), (sql, rowset.rows)


ATTACKS = [
    "SELECT amount FROM crm.people",
    "SELECT person_id, amount FROM crm.people",
    "SELECT * FROM crm.people",
    "SELECT p.* FROM crm.people p",
    "SELECT s FROM (SELECT amount AS s FROM crm.people) AS t",
    "WITH t AS (SELECT amount FROM crm.people) SELECT SUM(amount) FROM t",
    "WITH t AS (SELECT * FROM crm.people) SELECT region, SUM(amount) FROM t GROUP BY region",
    "SELECT COUNT(*) FROM crm.people WHERE amount > 50",
    "SELECT amount, COUNT(*) FROM crm.people GROUP BY amount",
    "SELECT COUNT(*) FROM crm.people GROUP BY amount",
    "SELECT COUNT(*) FROM crm.people GROUP BY CAST(amount AS INT)",
    "SELECT region, SUM(amount) FROM crm.people GROUP BY region ORDER BY amount",
    "SELECT region, COUNT(*) FROM crm.people GROUP BY region HAVING MAX(person_id) > 0 AND amount > 1",
    "SELECT SUM(amount) OVER () FROM crm.people",
    "SELECT person_id, SUM(amount) OVER (PARTITION BY person_id) FROM crm.people",
    "SELECT RANK() OVER (ORDER BY amount) FROM crm.people",
    "SELECT SUM(CASE WHEN person_id = 7 THEN amount END) FROM crm.people",
    "SELECT MAX(amount * (person_id = 7)) FROM crm.people",
    "SELECT SUM(amount) FILTER (WHERE person_id = 7) FROM crm.people",
    "SELECT GROUP_CONCAT(amount) FROM crm.people",
    "SELECT STRING_AGG(CAST(amount AS TEXT), ',') FROM crm.people",
    "SELECT MEDIAN(amount) FROM crm.people",
    "SELECT ANY_VALUE(amount) FROM crm.people",
    "SELECT person_id, MAX(amount) FROM crm.people",
    "SELECT full_name, MAX(amount) FROM crm.people GROUP BY region",
    "SELECT a.region, SUM(a.amount) FROM crm.people a JOIN crm.people b ON a.region = b.region GROUP BY a.region",
    "SELECT SUM(a.amount) FROM crm.people a, crm.people b",
    "SELECT SUM(amount) FROM crm.people UNION ALL SELECT 1",
    "SELECT region FROM crm.people UNION SELECT region FROM crm.people",
    "SELECT region, (SELECT MAX(q.person_id) FROM crm.people q WHERE q.amount = p.amount) FROM crm.people p",
    "SELECT region, SUM(amount), (SELECT 1) FROM crm.people GROUP BY region",
    "SELECT COUNT(*) FROM crm.people p WHERE EXISTS (SELECT 1 FROM crm.people q WHERE q.amount = p.amount)",
    "SELECT region, SUM(amount) FROM crm.people GROUP BY ROLLUP (region)",
    "SELECT people, 1 AS people FROM crm.people",
    "SELECT c7 FROM crm.people AS p(c1, c2, c3, c4, c5, c6, c7)",
    "SELECT x FROM crm.people AS p(person_id, email, phone, full_name, national_id, region, x)",
    "SELECT SUM(1 / (amount - 96.25)) FROM crm.people WHERE person_id = 8",
    "SELECT SUM(CAST(amount AS INT)) FROM crm.people",
    "SELECT SUM(amount * 1000) FROM crm.people",
    "SELECT COUNT(CASE WHEN amount > 50 THEN 1 / 0 END) FROM crm.people",
    "SELECT MAX(ABS(amount)) FROM crm.people",
    "SELECT region, COUNT(*) FROM crm.people p GROUP BY region HAVING EXISTS (SELECT 1 WHERE p.amount > 1)",
    "SELECT SUM(amount) FROM crm.people p GROUP BY p.region ORDER BY p.amount",
]


@pytest.mark.parametrize("sql", ATTACKS)
def test_run_sql_refuses_every_other_read_of_an_aggregate_only_column(sql: str) -> None:
    view = govern(people(), ANALYST)
    try:
        parsed = parse_product_sql(sql)
    except SQLRefusedError:
        return  # refused by the guard already (a function or syntax outside the allow-list)
    with pytest.raises((SQLRefusedError, InvalidRequestError)):
        rewrite_sql(parsed, {"crm.people": view}, dialect="sqlite", hash_salt=SALT, limits=Limits())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT region, COUNT(*) FROM crm.people GROUP BY region",
        "SELECT region, MAX(person_id) FROM crm.people p JOIN crm.people q USING (region) GROUP BY region",
    ],
)
def test_run_sql_reading_no_aggregate_only_column_is_not_suppressed(sql: str, connector: Connector) -> None:
    view = govern(people(), ANALYST)
    if "JOIN" in sql:
        with pytest.raises(SQLRefusedError, match="read it alone"):
            rewrite(sql, view, connector)
        return
    rows = execute(connector, rewrite(sql, view, connector)).rows
    assert sorted(n for _, n in rows) == sorted(Counter(r[5] for r in ROWS).values())


def test_the_callers_having_is_evaluated_only_for_large_groups(connector: Connector) -> None:
    view = govern(people(), ANALYST)  # person 8 has amount 96.25: the caller's HAVING would divide by zero
    sql = (
        "SELECT region, SUM(amount) AS total FROM crm.people WHERE person_id = 8 GROUP BY region "
        "HAVING 1 / (SUM(amount) - 96.25) > 0"
    )
    assert execute(connector, rewrite(sql, view, connector)).rows == []


def test_expressions_over_aggregates_of_small_groups_are_never_evaluated(connector: Connector) -> None:
    view = govern(people(), ANALYST)  # casting '96.25' to an integer fails: it must not run for a 1-row group
    sql = "SELECT CAST(CAST(SUM(amount) AS TEXT) AS INT) AS x FROM crm.people WHERE person_id = 8"
    assert execute(connector, rewrite(sql, view, connector)).rows == []


def test_run_sql_ands_the_group_size_rule_with_the_callers_having(connector: Connector) -> None:
    view = govern(people(), EU_ANALYST)  # 16 EU rows: score 3 in 8 of them, 0 in 4, NULL in 4
    sql = "SELECT score, COUNT(*), SUM(amount) AS total FROM crm.people GROUP BY score HAVING COUNT(*) > 0 OR 1 = 1"
    assert [r[:2] for r in execute(connector, rewrite(sql, view, connector)).rows] == [(3, 8)]
    sql = "SELECT SUM(amount) AS total, COUNT(*) AS n FROM crm.people"
    (row,) = execute(connector, rewrite(sql, view, connector)).rows
    assert row[1] == 16


# -- query_metrics -------------------------------------------------------------------------------------------

METRICS_YAML = """\
metrics:
  - {name: total_amount, expr: "sum(amount)", description: Sum of amounts}
  - {name: people_count, expr: "count(*)", description: People}
  - {name: big_people, expr: "count(*)", filter: "amount > 50", description: People with a large amount}
  - {name: mean_amount, expr: "total_amount / people_count", description: Mean amount}
dimensions:
  - {name: region, column: region}
  - {name: score, column: score}
  - {name: amount_band, column: amount}
  - {name: signup_day, column: signup, time_grains: [day, month]}
"""


def people_with_metrics() -> ProductContract:
    data = yaml.safe_load(aggregate_only_yaml())
    data.update(yaml.safe_load(METRICS_YAML))
    return ProductContract.model_validate(data)


def compile_request(view: GovernedView, request: dict[str, Any], dialect: str) -> Any:
    return compile_metrics(
        MetricsRequest.model_validate({"product": "crm.people", **request}),
        {"crm.people": view},
        limits=Limits(),
        dialect=dialect,
        hash_salt=SALT,
    )


@PROPERTIES
@given(
    principal=PRINCIPALS,
    group=st.one_of(st.none(), st.sampled_from(["region", "score"])),
    metric=st.sampled_from(["total_amount", "big_people", "mean_amount"]),
    where=st.one_of(st.none(), st.sampled_from([("region", "US"), ("score", 1), ("region", "EU")])),
)
def test_query_metrics_over_aggregate_only_columns_returns_only_groups_of_the_minimum_size(
    connector: Connector, principal: Principal, group: str | None, metric: str, where: tuple[str, Any] | None
) -> None:
    view = govern(people_with_metrics(), principal)
    request: dict[str, Any] = {"metrics": ["people_count", metric]}
    if group:
        request["group_by"] = [{"dimension": group}]
    if where:
        request["where"] = [{"dimension": where[0], "op": "=", "value": where[1]}]
    compiled = compile_request(view, request, connector.dialect)
    assert compiled.min_group_size == SIZE and compiled.aggregate_only_read == ("amount",)
    rowset = execute(connector, compiled, compiled.limits)
    expected, _ = oracle(visible(view), group, where)
    got = {(key(r[0]) if group else None): r[1 if group else 0] for r in compiled.rows(rowset)}
    assert got == {k: len(v) for k, v in expected.items()}


def test_query_metrics_not_reading_aggregate_only_columns_keeps_small_groups(connector: Connector) -> None:
    view = govern(people_with_metrics(), EU_ANALYST)
    compiled = compile_request(view, {"metrics": ["people_count"], "group_by": [{"dimension": "score"}]}, "sqlite")
    assert compiled.min_group_size is None
    compiled = compile_request(
        view, {"metrics": ["people_count"], "group_by": [{"dimension": "score"}]}, connector.dialect
    )
    assert sorted(r[1] for r in compiled.rows(execute(connector, compiled, compiled.limits))) == [4, 4, 8]


@pytest.mark.parametrize(
    "request_",
    [
        {"metrics": ["people_count"], "group_by": [{"dimension": "amount_band"}]},
        {"metrics": ["total_amount"], "where": [{"dimension": "amount_band", "op": ">", "value": 3}]},
    ],
)
def test_query_metrics_refuses_aggregate_only_dimensions(request_: dict[str, Any]) -> None:
    view = govern(people_with_metrics(), ANALYST)
    with pytest.raises(InvalidRequestError, match="aggregate-only for you"):
        compile_request(view, request_, "sqlite")
    exempt = compile_request(govern(people_with_metrics(), HR), request_, "sqlite")
    assert exempt.min_group_size is None


def test_describe_product_names_the_group_size_of_aggregate_only_columns() -> None:
    columns = {c.name: c for c in describe(govern(people(), ANALYST)).columns}
    assert columns["amount"].aggregate_only == SIZE and columns["region"].aggregate_only is None
    assert describe(govern(people(), HR)).columns[COLUMNS.index("amount")].aggregate_only is None
