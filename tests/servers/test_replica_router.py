"""The router: aggregates from a fresh replica answer exactly as the source does, on SQLite and PostgreSQL.

The property test draws rows and batches of inserts, updates and deletes; after each incremental sync
every aggregate query, for a row-filtered masked reader and an unrestricted one, returns the same rows
from the replica (through the service: routed, governed, audited) as from the source.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from catalog.audit import AuditLog
from catalog.errors import InvalidRequestError
from catalog.metric_query import MetricsRequest
from catalog.policy import govern
from catalog.principal import Principal
from catalog.query import Query
from catalog.registry import Registry
from catalog.replica_log import ReplicaLog
from connectors import _replica_file
from servers.replica_router import ReplicaRouter
from servers.service import DataProductsService
from servers.settings import Settings
from tests.connectors import replica_fixtures as shop

EU = Principal(name="eve", roles=frozenset({"eu"}))  # EU rows only, e-mail hashed
PII = Principal(name="pat", roles=frozenset({"pii"}))  # every row, raw e-mail
QUERIES = [
    Query.model_validate({"group_by": ["region"], "aggregates": [{"fn": "count"}, {"fn": "sum", "column": "amount"}]}),
    Query.model_validate(
        {
            "aggregates": [
                {"fn": "count_distinct", "column": "customer_email"},
                {"fn": "max", "column": "updated_at"},
                {"fn": "min", "column": "amount"},
                {"fn": "avg", "column": "amount"},
            ]
        }
    ),
    Query.model_validate(
        {
            "where": [{"column": "amount", "op": ">", "value": 10}],
            "group_by": ["customer_email"],
            "aggregates": [{"fn": "count", "as": "n"}],
        }
    ),
]


def _settings(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if store == "sqlite":
        connection: dict[str, Any] = {"kind": "sqlite", "path": str(tmp_path / "shop.db")}
    else:
        connection = {"kind": "postgresql", "url": SecretStr(request.getfixturevalue("pg_url"))}
    return Settings(workspace=tmp_path, hash_salt=SecretStr("pepper"), connections={"shop": connection})


def _source(settings: Settings) -> sa.Engine:
    config = settings.connection("shop")
    return shop.engine(config.path or (config.url.get_secret_value() if config.url else ""))


def _empty_table(settings: Settings) -> None:
    engine = _source(settings)
    shop.create(engine, [])
    engine.dispose()


def _register(settings: Settings, **replica: Any) -> None:
    registry = Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace)
    try:
        registry.register(shop.contract(**replica), actor="tests")
    finally:
        registry.close()


def _normal(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return round(float(value), 6)
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        return value.replace("T", " ")[:19]
    return value


def _rows(rows: list[list[Any]]) -> list[list[Any]]:
    return sorted(([_normal(v) for v in row] for row in rows), key=repr)


async def _from_source(service: DataProductsService, principal: Principal, query: Query) -> list[list[Any]]:
    view = govern(await service.contract("shop.orders"), principal)
    connector = await service.connector("shop")
    compiled = service.compiler(connector).compile(view, query)
    rowset = await connector.execute(connector.prepare(compiled))
    return _rows([list(r) for r in rowset.rows])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[DataProductsService]:
    settings = _settings(store, tmp_path, request)
    _empty_table(settings)
    _register(settings, refresh="incremental", cursor="updated_at", deletes={"full_compare_every": 1})
    async with DataProductsService.open(settings) as opened:
        yield opened


_ROW = st.tuples(
    st.sampled_from(["a@x.org", "b@x.org", "c@y.org", None]),
    st.sampled_from(["EU", "US"]),
    st.one_of(st.none(), st.integers(0, 400).map(lambda q: Decimal(q) / 4)),
)
_BATCH = st.tuples(
    st.lists(_ROW, max_size=6),  # inserts
    st.lists(st.tuples(st.integers(0, 40), _ROW), max_size=4),  # updates (by position among live keys)
    st.lists(st.integers(0, 40), max_size=3),  # deletes (by position)
)


@pytest.mark.anyio
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.lists(_ROW, max_size=25), batches=st.lists(_BATCH, min_size=1, max_size=3))
async def test_a_fresh_replica_answers_aggregates_as_the_source_does(
    service: DataProductsService, initial: list[tuple[Any, ...]], batches: list[tuple[Any, ...]]
) -> None:
    engine = _source(service.settings)
    try:
        await _changes_answer_alike(service, engine, initial, batches)
    finally:
        engine.dispose()


async def _changes_answer_alike(
    service: DataProductsService, engine: sa.Engine, initial: list[tuple[Any, ...]], batches: list[tuple[Any, ...]]
) -> None:
    clock = dt.datetime(2026, 1, 1, 8, 0)
    keys: list[int] = []

    def row(key: int, values: tuple[Any, ...]) -> tuple[Any, ...]:
        return (key, values[0], values[1], values[2], clock)

    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM orders")
        shop.insert(conn, [row(i, values) for i, values in enumerate(initial)])
    keys = list(range(len(initial)))
    next_key = 1000
    await service.sync_replicas(["shop.orders"], full=True)
    for inserts, updates, deletes in batches:
        clock += dt.timedelta(minutes=5)
        with engine.begin() as conn:
            new = [row(next_key + i, values) for i, values in enumerate(inserts)]
            next_key += len(new)
            shop.insert(conn, new)
            keys += [r[0] for r in new]
            for position, values in updates:
                if keys:
                    key = keys[position % len(keys)]
                    conn.exec_driver_sql(f"DELETE FROM orders WHERE order_id = {key}")
                    shop.insert(conn, [row(key, values)])
            for position in deletes:
                if keys:
                    key = keys.pop(position % len(keys))
                    conn.exec_driver_sql(f"DELETE FROM orders WHERE order_id = {key}")
        report = (await service.sync_replicas(["shop.orders"]))[0]
        assert report.mode == "incremental"
        for principal in (EU, PII):
            for query in QUERIES:
                result = await service.query_product(principal, "shop.orders", query)
                assert result.store["name"] == "replica", result.store.get("fallback_reason")
                expected = await _from_source(service, principal, query)
                assert _rows(result.rows) == expected, (principal.name, query, result.rows, expected)


async def _synced(service: DataProductsService, rows: int = 30) -> None:
    engine = _source(service.settings)
    with engine.begin() as conn:
        shop.insert(
            conn,
            [(i, f"u{i}@x.org", "EU" if i % 3 else "US", Decimal(i), dt.datetime(2026, 1, 1)) for i in range(rows)],
        )
    engine.dispose()
    await service.sync_replicas(["shop.orders"])


@pytest.mark.anyio
async def test_a_stale_replica_is_not_used_and_the_result_says_why(service: DataProductsService) -> None:
    await _synced(service)
    query = QUERIES[0]
    fresh = await service.query_product(PII, "shop.orders", query)
    assert fresh.store["name"] == "replica" and fresh.store.get("fallback_reason") is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    service.replicas = ReplicaRouter(ReplicaLog(service.registry), now=lambda: later)
    stale = await service.query_product(PII, "shop.orders", query)
    assert stale.store["name"] == "source"
    assert "behind, over max_lag 15m" in stale.store.get("fallback_reason", "")
    assert _rows(stale.rows) == _rows(fresh.rows)
    await service.replicas.aclose()


@pytest.mark.anyio
async def test_row_reads_go_to_the_source_and_an_unsynced_replica_says_so(service: DataProductsService) -> None:
    lookup = Query.model_validate({"where": [{"column": "order_id", "op": "=", "value": 3}]})
    unsynced = await service.query_product(PII, "shop.orders", QUERIES[0])
    assert unsynced.store["name"] == "source"
    assert "has not been synced yet" in unsynced.store.get("fallback_reason", "")
    await _synced(service)
    result = await service.query_product(PII, "shop.orders", lookup)
    assert (result.store["name"], result.store.get("fallback_reason"), result.row_count) == ("source", None, 1)
    assert result.store["as_of"] is not None


@pytest.mark.anyio
async def test_metrics_and_sql_aggregates_are_answered_by_the_replica(service: DataProductsService) -> None:
    await _synced(service)
    request = MetricsRequest.model_validate(
        {"metrics": ["revenue"], "product": "shop.orders", "group_by": [{"dimension": "region"}]}
    )
    metrics = await service.query_metrics(EU, request)
    assert metrics.store["name"] == "replica" and metrics.store["as_of"] is not None
    assert _rows(metrics.rows) == [["EU", float(sum(i for i in range(30) if i % 3))]]
    sql = await service.run_sql(EU, "SELECT region, count(*) AS n FROM shop.orders GROUP BY region")
    assert sql.store["name"] == "replica"
    assert _rows(sql.rows) == [["EU", 20]]
    rows = await service.run_sql(EU, "SELECT order_id FROM shop.orders WHERE order_id = 1")
    assert rows.store["name"] == "source" and rows.rows == [[1]]


@pytest.mark.anyio
async def test_a_masked_at_rest_replica_serves_only_the_masked_view(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DuckDB compresses strings (FSST, dictionaries): stored uncompressed, raw bytes would show in a scan
    monkeypatch.setitem(_replica_file._CONFIG, "force_compression", "uncompressed")
    settings = _settings(store, tmp_path, request)
    _empty_table(settings)
    _register(settings, masked_at_rest=True)
    async with DataProductsService.open(settings) as service:
        await _synced(service)
        query = QUERIES[2]
        masked = await service.query_product(EU, "shop.orders", query)
        assert masked.store["name"] == "replica"
        assert _rows(masked.rows) == await _from_source(service, EU, query)
        raw = await service.query_product(PII, "shop.orders", query)
        assert raw.store["name"] == "source" and "not the masked one" in raw.store.get("fallback_reason", "")
        assert any("@x.org" in str(r[0]) for r in raw.rows)
    files = list((tmp_path / ".dataproducts" / "replicas").rglob("*.duckdb"))
    assert files  # PostgreSQL through the postgres scanner, SQLite through the connector: no raw e-mail stored
    assert all(b"@x.org" not in path.read_bytes() for path in files)


def test_anyio_runs() -> None:  # the module's async tests need the anyio plugin's backend fixture
    assert anyio.get_all_backends()


@pytest.mark.anyio
async def test_serve_syncs_a_replica_on_its_schedule(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = _settings(store, tmp_path, request)
    _empty_table(settings)
    _register(settings, sync={"every": "1h"})
    async with DataProductsService.open(settings) as service:
        assert await service.due_replicas() == ["shop.orders"]  # never synced: due at once
        async with service.replicas_on_schedule(tick_s=0.05):
            with anyio.fail_after(30):
                while await service.replicas.current("shop.orders") is None:
                    await anyio.sleep(0.05)
        assert await service.due_replicas() == []  # synced: due again in an hour
        result = await service.query_product(PII, "shop.orders", QUERIES[0])
        assert result.store["name"] == "replica"


@pytest.mark.anyio
async def test_a_read_answered_by_the_replica_is_audited_with_the_replica_it_read(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = _settings(store, tmp_path, request)
    _empty_table(settings)
    _register(settings)
    async with DataProductsService.open(settings) as service:
        await _synced(service)
        await service.query_product(EU, "shop.orders", QUERIES[0])
        await service.query_product(EU, "shop.orders", Query.model_validate({"limit": 1}))
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        aggregate, rows = AuditLog.from_registry(registry).query(principal="eve", tool="query_product")[::-1]
    assert (aggregate.outcome, aggregate.objects) == ("ok", ["replica_shop__orders.main.replica"])
    assert rows.outcome == "ok" and rows.objects and "replica" not in rows.objects[0]


@pytest.mark.anyio
async def test_aggregate_only_groups_are_suppressed_alike_on_the_replica(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = _settings(store, tmp_path, request)
    _empty_table(settings)
    _register(settings, aggregate_only=[{"columns": ["amount"], "min_group_size": 12}])
    query = Query.model_validate({"group_by": ["region"], "aggregates": [{"fn": "sum", "column": "amount"}]})
    async with DataProductsService.open(settings) as service:
        before = await service.query_product(PII, "shop.orders", query)  # not synced: the source answers
        await _synced(service)  # 30 rows: EU 20, US 10 — the US group is under 12 rows
        after = await service.query_product(PII, "shop.orders", query)
        with pytest.raises(InvalidRequestError, match="aggregate-only"):
            await service.query_product(PII, "shop.orders", Query.model_validate({"columns": ["amount"]}))
    assert (before.store["name"], after.store["name"]) == ("source", "replica")
    assert _rows(after.rows) == [["EU", float(sum(i for i in range(30) if i % 3))]]
    assert any("1 group" in w for w in after.warnings), after.warnings
