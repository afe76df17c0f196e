"""A read's audit row commits in the thread that ran its statement (leader/follower group commit), with
every guarantee of the writer thread's path: one row per call, durable before the call returns."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import servers.service
from catalog.errors import DataProductsError
from catalog.principal import Principal
from catalog.query import Query
from servers.prometheus_metrics import REGISTRY
from servers.service import DataProductsService
from servers.settings import Settings

pytestmark = pytest.mark.anyio


def rows_elsewhere(settings: Settings, principal: str) -> list[tuple[Any, ...]]:
    """The principal's audit rows read on a connection of its own (committed, not just queued)."""
    engine = create_engine(settings.resolved_registry_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT tool, outcome, error_code, rows FROM dp_audit WHERE principal = :p ORDER BY id"),
                {"p": principal},
            )
            return [tuple(row) for row in found]
    finally:
        engine.dispose()


def watching(service: DataProductsService) -> dict[str, list[str]]:
    """Record which thread hands each audit row to the log, and how."""
    calls: dict[str, list[str]] = {"lead": [], "submit": []}
    for how in calls:
        write = getattr(service.audit, how)

        def counted(rec: Any, write: Any = write, how: str = how) -> Any:
            calls[how].append(threading.current_thread().name)
            return write(rec)

        setattr(service.audit, how, counted)
    return calls


async def test_a_lookup_commits_its_row_in_the_statement_thread_readable_once_the_call_returns(
    settings: Settings,
) -> None:
    sam = Principal(name="led-sam", roles=frozenset({"analyst", "sales", "pii-reader"}))
    async with DataProductsService.open(settings) as service:
        calls = watching(service)
        result = await service.query_product(sam, "shop.orders", Query(limit=2))
        assert rows_elsewhere(settings, "led-sam") == [("query_product", "ok", None, result.row_count)]
    assert calls["submit"] == [] and len(calls["lead"]) == 1
    assert calls["lead"][0] != threading.main_thread().name  # a worker thread, never the event loop


async def test_a_result_that_fails_to_build_leaves_exactly_one_error_row(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("result building failed")

    monkeypatch.setattr(servers.service, "query_result", broken)
    sam = Principal(name="led-broken", roles=frozenset({"analyst", "sales"}))
    async with DataProductsService.open(settings) as service:
        calls = watching(service)
        with pytest.raises(RuntimeError, match="result building failed"):
            await service.query_product(sam, "shop.orders", Query(limit=2))
    assert rows_elsewhere(settings, "led-broken") == [("query_product", "error", "internal_error", 0)]
    assert calls["lead"] == [] and len(calls["submit"]) == 1  # no row led: the failure wrote its own


async def test_a_refused_lookup_is_audited_once_through_the_writer_thread(settings: Settings) -> None:
    nobody = Principal(name="led-nobody", roles=frozenset({"guest"}))
    async with DataProductsService.open(settings) as service:
        calls = watching(service)
        with pytest.raises(DataProductsError):
            await service.query_product(nobody, "shop.orders", Query(limit=2))
    assert rows_elsewhere(settings, "led-nobody") == [("query_product", "denied", "access_denied", 0)]
    assert calls["lead"] == [] and len(calls["submit"]) == 1


async def test_concurrent_lookups_each_return_after_their_own_row_committed(settings: Settings) -> None:
    seen: list[bool] = []
    async with DataProductsService.open(settings) as service:
        before = service.audit.transactions

        async def call(i: int) -> None:
            principal = Principal(name=f"led-many-{i}", roles=frozenset({"analyst", "sales"}))
            await service.query_product(principal, "shop.orders", Query(limit=1 + i % 3))
            found = await anyio.to_thread.run_sync(rows_elsewhere, settings, principal.name)
            seen.append(found == [("query_product", "ok", None, 1 + i % 3)])

        async with anyio.create_task_group() as group:
            for i in range(24):
                group.start_soon(call, i)
        transactions = service.audit.transactions - before
    assert seen == [True] * 24  # each call's own row, committed when it returned
    assert 1 <= transactions <= 24


async def test_a_led_row_is_counted_in_the_metrics_like_a_submitted_one(settings: Settings) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    calls = value("dataproducts_calls_total", tool="query_product", outcome="ok")
    writes = value("dataproducts_audit_write_duration_seconds_count")
    sam = Principal(name="led-counted", roles=frozenset({"analyst", "sales"}))
    async with DataProductsService.open(settings) as service:
        calls_led = watching(service)
        await service.query_product(sam, "shop.orders", Query(limit=1))
    assert len(calls_led["lead"]) == 1
    assert value("dataproducts_calls_total", tool="query_product", outcome="ok") == calls + 1
    assert value("dataproducts_audit_write_duration_seconds_count") == writes + 1


async def test_run_sql_commits_its_row_in_the_statement_thread_too(settings: Settings) -> None:
    sam = Principal(name="led-sql", roles=frozenset({"analyst", "sales"}))
    async with DataProductsService.open(settings) as service:
        calls = watching(service)
        result = await service.run_sql(sam, "SELECT region FROM shop.orders LIMIT 2")
        assert rows_elsewhere(settings, "led-sql") == [("run_sql", "ok", None, result.row_count)]
    assert calls["submit"] == [] and len(calls["lead"]) == 1
    assert calls["lead"][0] != threading.main_thread().name
