"""The second wall: the store refuses what a governed statement reads outside its governed sources.

Each escape test hand-builds the statement the first wall (the SQL rewrite) should never produce — a
governed source next to a raw reference to the physical table, a system catalog, another principal's
view — and runs it with ``governed=True`` on real SQLite and PostgreSQL stores filled with
``crm.people`` (tests/catalog/governance_fixtures). DuckDB has no such wall; its tests check what it
does instead (qualified names, reported objects).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import duckdb
import psycopg
import pytest
import sqlglot
import yaml
from hypothesis import given
from pydantic import SecretStr
from sqlglot import exp

from catalog.compile import compile_query
from catalog.contract import ProductContract
from catalog.errors import ConfigError, DataProductsError, QueryExecutionError, QueryTimeoutError
from catalog.governed_source import GOVERNED, governed_source
from catalog.policy import govern
from catalog.principal import Principal
from catalog.query import Limits, Query
from catalog.sqlguard import parse_product_sql, rewrite_sql
from connectors import ConnectionConfig, Connector, connector_for
from connectors.base import Prepared
from tests.catalog.governance_fixtures import (
    ANALYST,
    CONTRACT_YAML,
    EU_ANALYST,
    EU_ROWS,
    PII_READER,
    ROWS,
    SALT,
    contract,
    fill_duckdb,
    fill_postgres,
    fill_sqlite,
    leaked,
    salted_md5,
)
from tests.catalog.test_governance_properties import PROPERTIES, aggregate_queries, principals, row_queries, sql_texts

pytestmark = pytest.mark.anyio

SCHEMA = {"sqlite": "main", "postgresql": "public"}
EVERYONE = pytest.mark.parametrize("principal", [EU_ANALYST, ANALYST, PII_READER], ids=lambda p: p.name)


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> Connector:
    if kind == "sqlite":
        fill_sqlite(tmp_path / "people.sqlite")
        return connector_for(ConnectionConfig(name="crm", kind="sqlite", path=str(tmp_path / "people.sqlite")))
    if kind == "duckdb":
        fill_duckdb(tmp_path / "people.duckdb")
        return connector_for(ConnectionConfig(name="crm", kind="duckdb", path=str(tmp_path / "people.duckdb")))
    url = request.getfixturevalue("pg_url")
    fill_postgres(url)
    return connector_for(ConnectionConfig(name="crm", kind="postgresql", url=SecretStr(url), options=options))


@pytest.fixture(params=["sqlite", "postgresql"])
async def walled(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Connector]:
    """A store that enforces governance itself, holding crm.people."""
    store = open_store(request.param, tmp_path, request)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(params=["sqlite", "postgresql", "duckdb"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Connector]:
    store = open_store(request.param, tmp_path, request)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def pg(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Connector]:
    store = open_store("postgresql", tmp_path, request)
    try:
        yield store
    finally:
        await store.aclose()


def product(version: str = "1.0.0", email_mask: str = "hash") -> ProductContract:
    data = yaml.safe_load(CONTRACT_YAML)
    data["version"] = version
    data["policy"]["masking"][0]["method"] = email_mask
    return ProductContract.model_validate(data)


def compiled(store: Connector, principal: Principal, query: Query | None = None, **kw: Any) -> exp.Select:
    view = govern(product(**kw), principal)
    query = query or Query(columns=["person_id", "email", "region", "code"], order_by=[{"column": "person_id"}])
    return compile_query(view, query, limits=Limits(), dialect=store.dialect, hash_salt=SALT).statement


def escape(store: Connector, text: str, principal: Principal = EU_ANALYST) -> exp.Query:
    """``text`` (with ``{schema}`` for the physical schema) where the table ``governed`` is the principal's
    governed source of crm.people — a statement the first wall would never build."""
    schema = SCHEMA.get(store.kind, "main")
    statement = sqlglot.parse_one(text.format(schema=schema), read=store.dialect)
    assert isinstance(statement, exp.Query)
    view = govern(contract(), principal)
    for table in [t for t in statement.find_all(exp.Table) if t.name == "governed"]:
        alias = table.args.get("alias")
        table.replace(governed_source(view, dialect=store.dialect, hash_salt=SALT, alias=alias, fence=True))
    return statement


async def refused(store: Connector, statement: exp.Query | Prepared) -> str:
    """The store's refusal of ``statement``: a clear message without raw values or the salt."""
    with pytest.raises(QueryExecutionError) as caught:
        await store.execute(statement, Limits(), governed=True)
    message = caught.value.message
    assert not leaked(message), leaked(message)
    assert SALT not in message
    return message


def pg_admin(store: Connector) -> psycopg.Connection[Any]:
    assert store.config.url is not None
    return psycopg.connect(plain(store.config.url.get_secret_value()), autocommit=True)


# -- (a) governed statements return what they returned before ------------------------------------


@EVERYONE
async def test_a_governed_statement_returns_the_rows_it_returned_before(
    any_store: Connector, principal: Principal
) -> None:
    statement = compiled(any_store, principal)
    before = await any_store.execute(statement, Limits())
    after = await any_store.execute(statement, Limits(), governed=True)
    assert after.columns == before.columns and after.rows == before.rows
    assert len(after.rows) == len(EU_ROWS if principal is EU_ANALYST else ROWS)


@EVERYONE
async def test_run_sql_statements_return_the_same_rows_behind_the_wall(
    any_store: Connector, principal: Principal
) -> None:
    text = (
        "SELECT region, count(*) AS n, count(DISTINCT p.email) AS e FROM crm.people p GROUP BY region ORDER BY region"
    )
    view = govern(contract(), principal)
    statement = rewrite_sql(
        parse_product_sql(text), {"crm.people": view}, dialect=any_store.dialect, hash_salt=SALT, limits=Limits()
    )
    before = await any_store.execute(statement, Limits())
    after = await any_store.execute(statement, Limits(), governed=True)
    assert after.rows == before.rows


async def test_a_prepared_statement_runs_again_and_again(any_store: Connector) -> None:
    prepared = any_store.prepare(compiled(any_store, EU_ANALYST))
    first = await any_store.execute(prepared, Limits())
    again = await any_store.execute(prepared, Limits(), governed=True)
    assert first.rows == again.rows
    assert [r[1] for r in first.rows] == [salted_md5(r[1]) for r in EU_ROWS]


async def test_count_star_and_the_primary_key_alone_read_through_the_view(any_store: Connector) -> None:
    counted = await any_store.execute(
        compiled(any_store, ANALYST, Query(aggregates=[{"fn": "count"}])), Limits(), governed=True
    )
    assert counted.rows == [(len(ROWS),)]
    keys = await any_store.execute(compiled(any_store, ANALYST, Query(columns=["person_id"])), Limits(), governed=True)
    assert len(keys.rows) == len(ROWS)


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "duckdb"])
def module_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    """One store per kind for the whole module (hypothesis runs many examples against it)."""
    tmp = tmp_path_factory.mktemp(f"walls-{request.param}")
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").create_database(f"walls_{tmp.name}")
        fill_postgres(url)
        store = connector_for(ConnectionConfig(name="crm", kind="postgresql", url=SecretStr(url)))
    else:
        store = open_store(request.param, tmp, request)
    try:
        yield store
    finally:
        anyio.run(store.aclose)


def outcome(store: Connector, statement: exp.Query, *, governed: bool) -> Counter[tuple[Any, ...]] | str:
    try:
        return Counter(anyio.run(lambda: store.execute(statement, Limits(), governed=governed)).rows)
    except DataProductsError as exc:
        return type(exc).__name__


@PROPERTIES
@given(principal=principals, raw=row_queries | aggregate_queries)
def test_any_structured_query_returns_the_same_rows_behind_the_wall(
    module_store: Connector, principal: Principal, raw: dict[str, Any]
) -> None:
    try:
        statement = compile_query(
            govern(contract(), principal),
            Query.model_validate(raw),
            limits=Limits(),
            dialect=module_store.dialect,
            hash_salt=SALT,
        ).statement
    except DataProductsError:
        return
    assert outcome(module_store, statement, governed=True) == outcome(module_store, statement, governed=False)


@PROPERTIES
@given(principal=principals, sql=sql_texts())
def test_any_run_sql_statement_returns_the_same_rows_behind_the_wall(
    module_store: Connector, principal: Principal, sql: str
) -> None:
    view = govern(contract(), principal)
    statement = rewrite_sql(
        parse_product_sql(sql), {"crm.people": view}, dialect=module_store.dialect, hash_salt=SALT, limits=Limits()
    )
    walled, plain = outcome(module_store, statement, governed=True), outcome(module_store, statement, governed=False)
    if "LIMIT" in sql and not isinstance(plain, str):  # which rows an unordered LIMIT keeps is the planner's choice
        assert not isinstance(walled, str) and walled.total() == plain.total()
    else:
        assert walled == plain


# -- (c) the objects a statement touched ---------------------------------------------------------


async def test_governed_statements_report_the_physical_objects_they_read(any_store: Connector) -> None:
    result = await any_store.execute(compiled(any_store, EU_ANALYST), Limits(), governed=True)
    expected = {"sqlite": "main.people", "postgresql": "public.people", "duckdb": "source.main.people"}
    assert result.objects == [expected[any_store.kind]]
    assert (await any_store.execute(compiled(any_store, EU_ANALYST), Limits())).objects == []


# -- what governed execution refuses before it reaches the store ----------------------------------


async def test_governed_execution_refuses_statements_without_a_governed_source(any_store: Connector) -> None:
    message = await refused(any_store, exp.select("email").from_("people"))
    assert "reads none" in message
    with pytest.raises(QueryExecutionError, match="not SQL text"):
        await any_store.execute("SELECT email FROM people", Limits(), governed=True)


async def test_a_statement_prepared_for_another_connection_is_refused(any_store: Connector) -> None:
    prepared = any_store.prepare(compiled(any_store, EU_ANALYST))
    other = Prepared("elsewhere", prepared.sql, prepared.relations)
    assert "prepared for 'elsewhere'" in await refused(any_store, other)


async def test_preparing_leaves_the_statement_as_it_was(any_store: Connector) -> None:
    statement = compiled(any_store, EU_ANALYST)
    text = statement.sql(dialect=any_store.dialect)
    any_store.prepare(statement)
    assert statement.sql(dialect=any_store.dialect) == text


# -- (b) escapes the store refuses ----------------------------------------------------------------

ESCAPES = {
    "join": "SELECT p.email FROM governed AS g JOIN people AS p ON p.person_id = g.person_id",
    "qualified join": "SELECT p.email FROM governed AS g JOIN {schema}.people AS p ON p.person_id = g.person_id",
    "scalar subquery": "SELECT (SELECT email FROM people LIMIT 1) AS leak, g.person_id FROM governed AS g",
    "exists": "SELECT g.person_id FROM governed AS g WHERE EXISTS (SELECT 1 FROM people p WHERE p.email LIKE 'p1.%')",
    "union": "SELECT g.email FROM governed AS g UNION ALL SELECT email FROM {schema}.people",
    "row count": "SELECT (SELECT count(*) FROM {schema}.people) AS n FROM governed AS g",
    "cte": "WITH raw AS (SELECT email FROM people) SELECT raw.email FROM raw, governed AS g",
    "count outside a cte's scope": "SELECT (SELECT count(*) FROM people) AS n, z.x"
    " FROM (WITH people AS (SELECT 1 AS x) SELECT x FROM people) AS z, governed AS g",
}


@pytest.mark.parametrize("text", list(ESCAPES.values()), ids=list(ESCAPES))
async def test_a_raw_reference_next_to_a_governed_source_is_refused(walled: Connector, text: str) -> None:
    message = await refused(walled, escape(walled, text))
    assert "governed sources" in message


@pytest.mark.parametrize(
    "text",
    [
        "SELECT sql FROM sqlite_master, governed AS g",
        "SELECT sql FROM sqlite_temp_master, governed AS g",
        "SELECT name FROM pragma_table_info('people'), governed AS g",
    ],
)
async def test_sqlite_system_catalogs_are_refused(tmp_path: Path, request: pytest.FixtureRequest, text: str) -> None:
    async with open_store("sqlite", tmp_path, request) as store:
        await store.execute(compiled(store, PII_READER), Limits(), governed=True)  # a view holding raw values exists
        assert "governed sources" in await refused(store, escape(store, text))


async def test_sqlite_refuses_a_cte_named_after_a_governed_view(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """SQLite reports reads inside a CTE as the CTE's, so a CTE that borrows a view's name would pass."""
    async with open_store("sqlite", tmp_path, request) as store:
        statement = escape(
            store, "WITH borrowed AS (SELECT email FROM people) SELECT borrowed.email FROM borrowed, governed AS g"
        )
        name = store.prepare(statement).relations[0].name
        for node in statement.find_all(exp.Identifier):
            if node.name == "borrowed":
                node.set("this", name)
        assert "reuses the name of a governed source" in await refused(store, statement)


async def test_another_principals_view_is_refused(walled: Connector) -> None:
    pii = walled.prepare(compiled(walled, PII_READER))
    assert leaked(repr((await walled.execute(pii, Limits())).rows))  # its view holds raw values
    (relation,) = pii.relations
    schema = "temp" if walled.kind == "sqlite" else "dataproducts_governed"
    statement = escape(walled, "SELECT o.email FROM governed AS g, other AS o")
    other = next(t for t in statement.find_all(exp.Table) if t.name == "other")
    other.replace(exp.table_(relation.name, db=schema, quoted=True, alias="o"))
    await refused(walled, statement)
    await refused(walled, statement)  # again, now a statement the store knows (PostgreSQL: pipelined)


async def test_a_governed_statement_that_reads_only_its_view_is_served(walled: Connector) -> None:
    """The wall refuses escapes, not ordinary statements over the governed source."""
    statement = escape(walled, "WITH eu AS (SELECT g.email FROM governed AS g) SELECT count(*) AS n FROM eu")
    assert (await walled.execute(statement, Limits(), governed=True)).rows == [(len(EU_ROWS),)]


async def test_ctes_used_without_their_columns_are_served(walled: Connector) -> None:
    statement = escape(
        walled,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3),"
        " eu AS (SELECT 1 AS one FROM governed)"
        " SELECT (SELECT count(*) FROM r) AS three, (SELECT count(*) FROM eu) AS people",
    )
    assert (await walled.execute(statement, Limits(), governed=True)).rows == [(3, len(EU_ROWS))]


async def test_sqlite_keeps_at_most_max_views_per_connection(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connectors._sqlite_wall as wall

    monkeypatch.setattr(wall, "MAX_VIEWS", 2)
    async with open_store("sqlite", tmp_path, request) as store:
        for principal in (EU_ANALYST, ANALYST, PII_READER, EU_ANALYST):
            await store.execute(compiled(store, principal), Limits(), governed=True)
        raw: Any = store._engine.raw_connection()  # type: ignore[attr-defined]
        try:
            raw.driver_connection.set_authorizer(None)
            views = raw.driver_connection.execute("SELECT name FROM sqlite_temp_master WHERE type = 'view'").fetchall()
            assert len(views) == 2
            assert raw.driver_connection.execute("PRAGMA query_only").fetchone() == (1,)  # restored after creating
        finally:
            raw.driver_connection.set_authorizer(wall.read_only_authorizer)
            raw.close()


# -- PostgreSQL: the reader role, pg_views, role games ---------------------------------------------


async def test_view_definitions_in_pg_views_hold_no_salt(pg: Connector) -> None:
    for principal in (EU_ANALYST, ANALYST):
        await pg.execute(compiled(pg, principal), Limits(), governed=True)
    result = await pg.execute(
        escape(
            pg,
            "SELECT v.definition FROM pg_catalog.pg_views AS v, governed AS g"
            " WHERE v.schemaname = 'dataproducts_governed'",
        ),
        Limits(),
        governed=True,
    )
    definitions = " ".join(str(row[0]) for row in result.rows)
    assert "bound(" in definitions and SALT not in definitions and "salt" in definitions  # read from the table
    with pg_admin(pg) as admin:
        everything = " ".join(
            r[0] for r in admin.execute("SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE relkind = 'v'")
        )
    assert SALT not in everything and SALT.replace("'", "''") not in everything


@pytest.mark.parametrize(
    "text",
    [
        "SELECT s.salt FROM dataproducts_governed.salts AS s, governed AS g",
        "SELECT b.token FROM dataproducts_governed.bindings AS b, governed AS g",
        "SELECT set_config('role', 'none', true) AS r,"
        " query_to_xml('select email from public.people', true, false, '') AS x FROM governed AS g",
        "SELECT set_config('session_authorization', 'postgres', true) AS r FROM governed AS g",
        "SELECT table_to_xml('public.people', true, false, '') AS x FROM governed AS g",
    ],
    ids=["salts", "bindings", "reset role then dynamic sql", "session authorization", "table_to_xml"],
)
async def test_postgres_role_games_are_refused(pg: Connector, text: str) -> None:
    await pg.execute(compiled(pg, PII_READER), Limits(), governed=True)
    await refused(pg, escape(pg, text))


async def test_appended_statements_cannot_run_as_the_login(pg: Connector) -> None:
    """Even a forged Prepared whose text appends RESET ROLE runs as one statement, as the reader."""
    prepared = pg.prepare(compiled(pg, EU_ANALYST))
    for text in ("RESET ROLE; SELECT email FROM public.people", f"{prepared.sql}; RESET ROLE", "RESET ROLE"):
        await refused(pg, Prepared(prepared.connection, text, prepared.relations))


async def test_the_reader_role_is_nologin_and_cannot_read_base_tables(pg: Connector) -> None:
    await pg.execute(compiled(pg, EU_ANALYST), Limits(), governed=True)
    with pg_admin(pg) as admin:
        (can_login,) = admin.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'dataproducts_reader'"
        ).fetchone() or (True,)
        assert can_login is False
        admin.execute("BEGIN READ ONLY")
        admin.execute("SET LOCAL ROLE dataproducts_reader")
        for table in ("public.people", "dataproducts_governed.salts", "dataproducts_governed.bindings"):
            admin.execute("SAVEPOINT probe")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                admin.execute(f"SELECT * FROM {table}")
            admin.execute("ROLLBACK TO SAVEPOINT probe")
        admin.execute("ROLLBACK")
        url = plain(pg.config.url.get_secret_value())  # type: ignore[union-attr]
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(url.replace("postgres@", "dataproducts_reader@")).close()


async def test_a_view_dropped_under_a_running_service_is_created_again(pg: Connector) -> None:
    prepared = pg.prepare(compiled(pg, EU_ANALYST))
    first = await pg.execute(prepared, Limits())
    with pg_admin(pg) as admin:
        admin.execute(f'DROP VIEW dataproducts_governed."{prepared.relations[0].name}"')
    assert (await pg.execute(prepared, Limits())).rows == first.rows


async def test_a_statement_reading_one_view_twice_that_the_store_rejects_is_refused_cleanly(pg: Connector) -> None:
    # both references bind to one view; after an undefined-table error its binding is forgotten once
    statement = escape(pg, "SELECT a.person_id FROM governed AS a JOIN governed AS b ON a.person_id = c.person_id")
    message = await refused(pg, statement)
    assert "missing FROM-clause entry" in message or 'table "c"' in message


async def test_old_views_are_dropped_when_new_ones_are_created(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = open_store("postgresql", tmp_path, request, governed_view_max_age_days=0)
    async with store:
        old = store.prepare(compiled(store, EU_ANALYST))
        await store.execute(old, Limits())
        new = store.prepare(compiled(store, ANALYST))
        await store.execute(new, Limits())
        with pg_admin(store) as admin:
            views = {
                r[0] for r in admin.execute("SELECT viewname FROM pg_views WHERE schemaname = 'dataproducts_governed'")
            }
        assert views == {new.relations[0].name}
        assert len((await store.execute(old, Limits())).rows) == len(EU_ROWS)  # created again on its next use


async def test_a_login_that_cannot_create_the_reader_role_gets_the_dba_steps(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("pg_url")
    fill_postgres(url)
    login, reader = f"crm_login_{tmp_path.name[-6:]}".lower(), f"crm_reader_{tmp_path.name[-6:]}".lower()
    with psycopg.connect(plain(url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{login}" LOGIN')
        admin.execute(f'GRANT SELECT ON people TO "{login}"')
        admin.execute(f'GRANT CREATE ON DATABASE "{url.rsplit("/", 1)[1]}" TO "{login}"')
    config = ConnectionConfig(
        name="crm",
        kind="postgresql",
        url=SecretStr(url.replace("postgres@", f"{login}@")),
        options={"reader_role": reader},
    )
    async with connector_for(config) as store:
        with pytest.raises(ConfigError, match=f"CREATE ROLE {reader} NOLOGIN; GRANT {reader} TO {login}"):
            await store.execute(compiled(store, EU_ANALYST), Limits(), governed=True)
        with psycopg.connect(plain(url), autocommit=True) as admin:  # what the DBA runs
            admin.execute(f'CREATE ROLE "{reader}" NOLOGIN')
            admin.execute(f'GRANT "{reader}" TO "{login}"')
        result = await store.execute(compiled(store, EU_ANALYST), Limits(), governed=True)
        assert len(result.rows) == len(EU_ROWS) and not leaked(repr(result.rows))


async def test_a_reader_that_could_read_the_table_directly_is_a_config_error(pg: Connector) -> None:
    with pg_admin(pg) as admin:
        admin.execute("GRANT SELECT ON people TO PUBLIC")
    with pytest.raises(ConfigError, match="can read public.people directly"):
        await pg.execute(compiled(pg, EU_ANALYST), Limits(), governed=True)


# -- (e) a new contract version gets a new view; the old one is not used ---------------------------


async def test_a_new_contract_version_gets_a_new_view_and_the_old_one_is_not_bound(walled: Connector) -> None:
    old = walled.prepare(compiled(walled, EU_ANALYST, version="1.0.0", email_mask="hash"))
    new = walled.prepare(compiled(walled, EU_ANALYST, version="1.1.0", email_mask="redact"))
    assert old.relations[0].name != new.relations[0].name
    assert {r[1] for r in (await walled.execute(old, Limits())).rows} != {"***"}
    assert {r[1] for r in (await walled.execute(new, Limits())).rows} == {"***"}
    schema = "temp" if walled.kind == "sqlite" else "dataproducts_governed"
    statement = compiled(walled, EU_ANALYST, version="1.1.0", email_mask="redact")
    statement.join(exp.table_(old.relations[0].name, db=schema, quoted=True, alias="o"), on="TRUE", copy=False)
    await refused(walled, statement)


# -- DuckDB: no wall, qualified names ------------------------------------------------------------


async def test_duckdb_says_it_cannot_enforce_governance_and_qualifies_names(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with open_store("duckdb", tmp_path, request) as store:
        assert store.capabilities.supports_store_governance is False
        prepared = store.prepare(compiled(store, EU_ANALYST))
        assert '"source"."main"."people"' in prepared.sql and prepared.relations[0].name == ""
    with duckdb.connect(str(tmp_path / "people.duckdb")) as conn:
        conn.execute(f"COPY people TO '{tmp_path / 'people.csv'}' (HEADER)")
    files = ConnectionConfig(name="crm", kind="duckdb", files={"people": str(tmp_path / "people.csv")})
    async with connector_for(files) as store:
        statement = compiled(store, EU_ANALYST)
        assert '"files"."main"."people"' in store.prepare(statement).sql
        assert (await store.execute(statement, Limits(), governed=True)).objects == ["files.main.people"]


def test_sqlite_and_postgresql_enforce_governance_themselves(tmp_path: Path) -> None:
    sqlite = connector_for(ConnectionConfig(name="crm", kind="sqlite", path=str(tmp_path / "x.sqlite")))
    postgres = connector_for(ConnectionConfig(name="crm", kind="postgresql", url=SecretStr("postgresql://u@h/db")))
    assert sqlite.capabilities.supports_store_governance and postgres.capabilities.supports_store_governance


def test_postgresql_wall_options_must_be_identifiers() -> None:
    with pytest.raises(ConfigError, match="governed_schema must be a lower-case identifier"):
        connector_for(
            ConnectionConfig(
                name="crm", kind="postgresql", url=SecretStr("postgresql://u@h/db"), options={"governed_schema": "x; y"}
            )
        )


async def test_a_view_over_a_missing_table_says_which_product_it_serves(pg: Connector) -> None:
    data = yaml.safe_load(CONTRACT_YAML)
    data["source"]["table"] = "nosuch"
    view = govern(ProductContract.model_validate(data), EU_ANALYST)
    statement = compile_query(view, Query(), limits=Limits(), dialect=pg.dialect, hash_salt=SALT).statement
    with pytest.raises(QueryExecutionError, match='cannot create the governed view of crm.people: .*"public.nosuch"'):
        await pg.execute(statement, Limits(), governed=True)


async def test_sqlite_says_so_when_a_product_reads_a_view_of_the_database(tmp_path: Path) -> None:
    """SQLite reports reads inside a database view as that view's: the wall refuses and names it."""
    fill_sqlite(tmp_path / "people.sqlite")
    with sqlite3.connect(tmp_path / "people.sqlite") as conn:
        conn.execute("CREATE VIEW people_v AS SELECT * FROM people")
    data = yaml.safe_load(CONTRACT_YAML)
    data["source"]["table"] = "people_v"
    view = govern(ProductContract.model_validate(data), EU_ANALYST)
    async with connector_for(
        ConnectionConfig(name="crm", kind="sqlite", path=str(tmp_path / "people.sqlite"))
    ) as store:
        statement = compile_query(view, Query(), limits=Limits(), dialect=store.dialect, hash_salt=SALT).statement
        assert "reads main.people through people_v" in await refused(store, statement)


async def test_views_that_filter_rows_apply_their_filters_first(walled: Connector) -> None:
    """A body with row filters is fenced (SQLite) or a security barrier (PostgreSQL), so no condition of the
    statement (an escaped one that fails on hidden rows included) runs before them; an unfiltered body stays
    flat, so the store keeps pushing conditions into it."""
    filtered, flat = (walled.prepare(compiled(walled, p)) for p in (EU_ANALYST, ANALYST))
    assert filtered.relations[0].filters_rows and not flat.relations[0].filters_rows
    if walled.kind == "sqlite":
        assert filtered.relations[0].body.endswith("LIMIT -1 OFFSET 0") and "OFFSET" not in flat.relations[0].body
        return
    for prepared in (filtered, flat):
        await walled.execute(prepared, Limits())
    names = [filtered.relations[0].name, flat.relations[0].name]
    with pg_admin(walled) as admin:
        rows = admin.execute(
            "SELECT relname, coalesce(reloptions, '{}') FROM pg_class WHERE relname = ANY(%s)", [names]
        ).fetchall()
    assert dict(rows) == {names[0]: ["security_barrier=true"], names[1]: []}


async def test_a_governed_statement_is_cancelled_after_its_time_budget(walled: Connector) -> None:
    slow = escape(
        walled,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100000000)"
        " SELECT count(*) AS c FROM r, governed AS g",
    )
    prepared = walled.prepare(slow)
    for _ in range(2):  # the second run is of a known statement (on PostgreSQL: opened, run, rolled back at once)
        with pytest.raises(QueryTimeoutError):
            await walled.execute(prepared, Limits(timeout_s=0.3))
        assert len((await walled.execute(compiled(walled, EU_ANALYST), Limits(), governed=True)).rows) == len(EU_ROWS)


async def test_a_salt_in_a_shape_the_wall_does_not_know_is_never_written_into_a_view(pg: Connector) -> None:
    statement = compiled(pg, EU_ANALYST)
    source = next(s for s in statement.find_all(exp.Subquery) if GOVERNED in s.meta)
    body = source.this
    assert isinstance(body, exp.Select)
    body.select(exp.alias_(exp.Upper(this=exp.Literal.string(SALT)), "shout", quoted=True), copy=False)
    with pytest.raises(QueryExecutionError, match="without its hash salt in the definition"):
        await pg.execute(statement, Limits(), governed=True)
