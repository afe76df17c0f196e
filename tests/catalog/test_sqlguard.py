"""The run_sql guard: what is refused and why, and how accepted SQL is rewritten onto governed sources."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from sqlglot import exp

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError, SQLRefusedError
from catalog.policy import GovernedView, govern
from catalog.query import Limits
from catalog.sqlguard import ALLOWED, connection_of, parse_product_sql, rewrite_sql
from tests.catalog.governance_fixtures import (
    ANALYST,
    CONTRACT_YAML,
    EU_ANALYST,
    EU_ROWS,
    ROWS,
    SALT,
    DirectStore,
    contract,
    leaked,
    salted_md5,
    store_for,
)


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectStore]:
    pg_cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    with store_for(request.param, tmp_path_factory, pg_cluster) as filled:
        yield filled


def rewrite(sql: str, view: GovernedView, *, dialect: str = "postgres", max_rows: int = 1000) -> exp.Query:
    parsed = parse_product_sql(sql)
    views = dict.fromkeys(parsed.products, view)
    return rewrite_sql(parsed, views, dialect=dialect, hash_salt=SALT, limits=Limits(max_rows=max_rows))


def run(store: DirectStore, sql: str, view: GovernedView) -> list[tuple[object, ...]]:
    return store.run(rewrite(sql, view, dialect=store.dialect))[1]


# -- refusals --------------------------------------------------------------------------------------

REFUSED = [
    ("DELETE FROM crm.people", "DELETE statements are not allowed"),
    ("INSERT INTO crm.people VALUES (1)", "INSERT statements are not allowed"),
    ("UPDATE crm.people SET email = 'x'", "UPDATE statements are not allowed"),
    ("MERGE INTO crm.people USING crm.people AS s ON 1 = 1 WHEN MATCHED THEN DELETE", "not allowed"),
    ("DROP TABLE people", "DROP statements are not allowed"),
    ("CREATE TABLE x AS SELECT * FROM crm.people", "CREATE statements are not allowed"),
    ("TRUNCATE TABLE people", "not allowed"),
    ("COPY people TO '/tmp/x'", "COPY statements are not allowed"),
    ("COPY (SELECT * FROM crm.people) TO '/tmp/x.csv'", "COPY statements are not allowed"),
    ("PRAGMA table_info(people)", "PRAGMA statements are not allowed"),
    ("SET search_path = public", "SET statements are not allowed"),
    ("ATTACH 'other.db' AS other", "could not parse"),
    ("DETACH other", "not allowed"),
    ("CALL dbgen(sf = 1)", "CALL statements are not allowed"),
    ("EXPORT DATABASE '/tmp/x'", "could not parse"),
    ("INSTALL httpfs", "not allowed"),
    ("LOAD httpfs", "LOAD statements are not allowed"),
    ("VACUUM", "not allowed"),
    ("SHOW TABLES", "not allowed"),
    ("EXPLAIN SELECT * FROM crm.people", "not allowed"),
    ("DESCRIBE crm.people", "not allowed"),
    ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
    ("SELECT * FROM crm.people; DROP TABLE people", "exactly one statement, got 2"),
    ("", "exactly one statement, got 0"),
    ("SELEC * FROM crm.people", "could not parse"),
    ("SELECT * FROM crm.people WHERE", "could not parse"),
    ("SELECT 1", "reads no product"),
    # functions that read files, sleep or look at the server
    ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "table functions"),
    ("SELECT read_parquet('/x.parquet') FROM crm.people", "function read_parquet() is not allowed"),
    ("SELECT * FROM 'data.csv'", "unknown table 'data.csv'"),
    ("SELECT pg_read_file('/etc/passwd') FROM crm.people", "function pg_read_file() is not allowed"),
    ("SELECT pg_read_binary_file('/etc/passwd') FROM crm.people", "function pg_read_binary_file() is not allowed"),
    ("SELECT pg_ls_dir('.') FROM crm.people", "not allowed"),
    ("SELECT pg_sleep(10) FROM crm.people", "function pg_sleep() is not allowed"),
    ("SELECT lo_import('/etc/passwd') FROM crm.people", "function lo_import() is not allowed"),
    ("SELECT dblink('host=x', 'select 1') FROM crm.people", "function dblink() is not allowed"),
    ("SELECT load_extension('x.so') FROM crm.people", "function load_extension() is not allowed"),
    ("SELECT readfile('/etc/passwd') FROM crm.people", "function readfile() is not allowed"),
    ("SELECT writefile('/tmp/x', email) FROM crm.people", "function writefile() is not allowed"),
    ("SELECT * FROM glob('/etc/*')", "could not parse"),
    ("SELECT current_setting('data_directory') FROM crm.people", "function current_setting() is not allowed"),
    ("SELECT set_config('role', 'postgres', false) FROM crm.people", "function set_config() is not allowed"),
    ("SELECT getenv('HOME') FROM crm.people", "function getenv() is not allowed"),
    ("SELECT version() FROM crm.people", "function version() is not allowed"),
    ("SELECT current_user FROM crm.people", "not allowed"),
    ("SELECT * FROM read_text('/etc/passwd')", "table functions"),
    ("SELECT * FROM query_table('people')", "table functions"),
    ("SELECT * FROM duckdb_settings()", "table functions"),
    ("SELECT * FROM generate_series(1, 3)", "table functions"),
    ("SELECT md5(email) FROM crm.people", "function md5() is not allowed"),
    # anything that is not a product
    ("SELECT * FROM people", "unknown table 'people'"),
    ("SELECT * FROM sqlite_master", "unknown table 'sqlite_master'"),
    ("SELECT * FROM main.sqlite_master", "system catalog"),
    ("SELECT * FROM main.people", "system catalog"),
    ("SELECT * FROM pg_catalog.pg_authid", "system catalog"),
    ("SELECT * FROM pg_class", "unknown table 'pg_class'"),
    ("SELECT * FROM information_schema.tables", "system catalog"),
    ("SELECT * FROM source.main.people", "name products as domain.product"),
    ('SELECT * FROM "crm.people"', "unknown table 'crm.people'"),
    ("SELECT * FROM crm.people p JOIN people q ON p.person_id = q.person_id", "unknown table 'people'"),
    ("SELECT * FROM crm.people WHERE person_id IN (SELECT person_id FROM people)", "unknown table 'people'"),
    ("SELECT * FROM (WITH people AS (SELECT 1) SELECT 1) s, people", "unknown table 'people'"),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT * FROM crm.people) SELECT * FROM a", "unknown table 'b'"),
    ("WITH people AS (SELECT * FROM people) SELECT * FROM people", "unknown table 'people'"),
    ("WITH d AS (DELETE FROM people RETURNING *) SELECT * FROM d", "not allowed"),
    ("SELECT * FROM (VALUES (1)) AS v(x)", "VALUES lists are not allowed"),
    ("SELECT * FROM crm.people, LATERAL (SELECT 1) x", "not allowed"),
    ("SELECT * FROM crm.people TABLESAMPLE (10)", "not allowed"),
    # writes and locks in SELECT form, parameters, casts to system types
    ("SELECT * INTO copy_of_people FROM crm.people", "SELECT ... INTO writes a table"),
    ("SELECT * FROM crm.people FOR UPDATE", "locking clauses"),
    ("SELECT * FROM crm.people FOR SHARE", "locking clauses"),
    ("SELECT * FROM crm.people WHERE person_id = ?", "parameters are not supported"),
    ("SELECT @@version FROM crm.people", "not allowed"),
    ("SELECT 'pg_authid'::regclass FROM crm.people", "cast to type 'regclass' is not allowed"),
    ("SELECT CAST(1 AS oid) FROM crm.people", "not allowed"),
    ("SELECT * FROM crm.people FETCH FIRST 3 ROWS ONLY", "use LIMIT n"),
]


@pytest.mark.parametrize(("sql", "fragment"), REFUSED, ids=[s[:50] for s, _ in REFUSED])
def test_the_guard_refuses_and_says_why(sql: str, fragment: str) -> None:
    with pytest.raises(SQLRefusedError) as info:
        parse_product_sql(sql)
    assert fragment in info.value.message
    assert info.value.code == "sql_refused"


def test_refusals_say_what_is_allowed() -> None:
    with pytest.raises(SQLRefusedError) as info:
        parse_product_sql("DELETE FROM crm.people")
    assert ALLOWED in info.value.message
    with pytest.raises(SQLRefusedError, match="Allowed functions: .*count.*upper"):
        parse_product_sql("SELECT pg_sleep(1) FROM crm.people")


def test_the_outer_limit_must_be_a_literal() -> None:
    with pytest.raises(SQLRefusedError, match="integer literal"):
        rewrite("SELECT * FROM crm.people LIMIT (SELECT 1)", govern(contract(), ANALYST))
    with pytest.raises(SQLRefusedError, match="integer literal"):
        rewrite("SELECT * FROM crm.people LIMIT 1 OFFSET (SELECT 1)", govern(contract(), ANALYST))


# -- what is accepted ------------------------------------------------------------------------------


def test_products_are_listed_once_and_sorted() -> None:
    parsed = parse_product_sql(
        "WITH recent AS (SELECT * FROM sales.orders) "
        "SELECT * FROM CRM.People p JOIN recent r ON r.customer = p.email JOIN sales.orders o ON 1 = 1"
    )
    assert parsed.products == ["crm.people", "sales.orders"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT region, count(*) AS n FROM crm.people GROUP BY region HAVING count(*) > 1 ORDER BY n DESC",
        "WITH eu AS (SELECT * FROM crm.people WHERE region = 'EU') SELECT count(*) FROM eu",
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
        "SELECT email FROM crm.people UNION SELECT phone FROM crm.people ORDER BY 1 LIMIT 5",
        "SELECT p.region, row_number() OVER (PARTITION BY p.region ORDER BY p.amount DESC) AS rk FROM crm.people p",
        "SELECT * FROM crm.people p WHERE EXISTS (SELECT 1 FROM crm.people q WHERE q.email = p.email)",
        "SELECT CASE WHEN amount > 10 THEN 'big' ELSE 'small' END AS size, coalesce(note, '') FROM crm.people",
        "SELECT upper(region), length(note), CAST(amount AS INT), round(amount, 1) FROM crm.people",
        "SELECT date_trunc('month', signup) AS m, sum(amount) FROM crm.people GROUP BY 1",
        "SELECT count(DISTINCT email) FILTER (WHERE score > 1) FROM crm.people",
    ],
)
def test_ordinary_analytics_sql_is_accepted(sql: str) -> None:
    if "RECURSIVE" in sql:
        sql = sql + ", crm.people"
    rewrite(sql, govern(contract(), EU_ANALYST))


def test_products_become_governed_sources_with_their_alias() -> None:
    sql = rewrite("SELECT p.email FROM crm.people AS p WHERE p.region = 'US'", govern(contract(), EU_ANALYST)).sql(
        "postgres"
    )
    assert sql.startswith('SELECT p."email" FROM (SELECT "_source"."person_id", MD5(')
    assert "WHERE (\"_source\".region = 'EU') OFFSET 0) AS p WHERE p.\"region\" = 'US' LIMIT 1001" in sql
    assert 'FROM "people" AS "_source"' in sql


def test_unaliased_products_are_named_after_the_product() -> None:
    sql = rewrite("SELECT crm.people.email, people.phone FROM crm.people", govern(contract(), ANALYST)).sql()
    assert sql.startswith('SELECT people."email", people."phone" FROM (SELECT')
    assert sql.endswith(') AS "people" LIMIT 1001')
    assert "OFFSET 0" not in sql  # no row filter applies to this principal: no fence needed


def test_the_outer_limit_is_capped_at_max_rows_plus_one() -> None:
    view = govern(contract(), ANALYST)
    assert rewrite("SELECT * FROM crm.people LIMIT 5", view, max_rows=10).args["limit"].expression.name == "5"
    assert rewrite("SELECT * FROM crm.people LIMIT 500", view, max_rows=10).args["limit"].expression.name == "11"
    union = rewrite("SELECT email FROM crm.people UNION ALL SELECT email FROM crm.people", view, max_rows=10)
    assert union.sql().endswith("LIMIT 11")


def test_unknown_columns_get_a_suggestion() -> None:
    view = govern(contract(), ANALYST)
    with pytest.raises(InvalidRequestError, match=r"unknown column 'emial' in crm.people \(p\); did you mean 'email'"):
        rewrite("SELECT p.emial FROM crm.people p", view)
    with pytest.raises(InvalidRequestError, match="unknown column 'amout'; did you mean 'amount'"):
        rewrite("WITH x AS (SELECT * FROM crm.people) SELECT amout FROM x", view)
    with pytest.raises(InvalidRequestError, match="unknown column 'user'"):
        rewrite("SELECT user FROM crm.people", view)
    with pytest.raises(InvalidRequestError, match="unknown column '\\$1'"):
        rewrite("SELECT $1 FROM crm.people", view)


def test_products_on_different_connections_cannot_be_combined() -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data.update(name="crm.elsewhere", source={"connection": "other", "table": "people"})
    other = govern(ProductContract.model_validate(data), ANALYST)
    view = govern(contract(), ANALYST)
    assert connection_of({"crm.people": view}) == "crm"
    with pytest.raises(InvalidRequestError, match="different connections"):
        connection_of({"crm.people": view, "crm.elsewhere": other})


# -- on the stores ---------------------------------------------------------------------------------


def test_masked_columns_stay_masked_through_any_sql(store: DirectStore) -> None:
    view = govern(contract(), ANALYST)
    rows = run(store, "SELECT person_id, email, phone, full_name, national_id FROM crm.people ORDER BY 1", view)
    assert [r[1] for r in rows] == [salted_md5(r[1]) for r in ROWS]
    assert {r[3] for r in rows} == {"***"} and {r[4] for r in rows} == {None}
    for sql in [
        "SELECT * FROM crm.people",
        "SELECT lower(email), upper(full_name), substr(phone, 1, 20), note FROM crm.people",
        "SELECT email FROM crm.people WHERE email LIKE '%exämple%' OR full_name LIKE '%Brien%'",
        "SELECT p.email, q.phone FROM crm.people p JOIN crm.people q ON p.email = q.email",
        "WITH x AS (SELECT email AS e FROM crm.people) SELECT max(e), min(e) FROM x",
    ]:
        assert not leaked(repr(run(store, sql, view))), sql
    joined = run(store, "SELECT count(*) FROM crm.people p JOIN crm.people q ON p.email = q.email", view)
    assert joined == [(len(ROWS),)]  # hashes are stable: joins on masked columns still work


def test_row_filters_hold_through_any_sql(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)
    for sql in [
        "SELECT count(*) FROM crm.people WHERE region <> 'EU' OR 1 = 1",
        "SELECT count(*) FROM crm.people p WHERE p.region = 'US' OR p.region = 'EU' OR p.region IS NULL",
        "SELECT count(*) FROM (SELECT * FROM crm.people UNION ALL SELECT * FROM crm.people WHERE 1 = 0) x",
    ]:
        assert run(store, sql, view) == [(len(EU_ROWS),)], sql
    regions = run(
        store, "SELECT DISTINCT p.region FROM crm.people p, crm.people q WHERE p.person_id = q.person_id", view
    )
    assert regions == [("EU",)]


def test_expressions_that_fail_on_hidden_rows_never_run_on_them(store: DirectStore) -> None:
    view = govern(contract(), EU_ANALYST)  # code is numeric text only in EU rows
    rows = run(store, "SELECT count(*) FROM crm.people p WHERE CAST(p.code AS INTEGER) >= 0", view)
    assert rows == [(len(EU_ROWS),)]
    hidden = next(r[0] for r in ROWS if r[5] != "EU")
    rows = run(store, f"SELECT count(*) FROM crm.people p WHERE 10 / (p.person_id - {hidden}) IS NOT NULL", view)
    assert rows == [(len(EU_ROWS),)]


def test_quoted_column_references_cannot_reach_server_functions(store: DirectStore) -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data["columns"][-1]["name"] = "user"  # a product column named like a SQL keyword function
    data["source"] = {
        "connection": "crm",
        "query": "SELECT person_id, email, phone, full_name, national_id, region, "
        'amount, score, signup, note, code AS "user" FROM people',
    }
    view = govern(ProductContract.model_validate(data), EU_ANALYST)
    rows = run(store, "SELECT DISTINCT user FROM crm.people ORDER BY 1 LIMIT 3", view)
    assert rows[0][0] in {r[10] for r in EU_ROWS}
