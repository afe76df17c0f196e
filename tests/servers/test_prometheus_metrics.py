"""Prometheus metrics fed by the real service: runs of checks and indexing, and bounded tool labels."""

from __future__ import annotations

import pytest
from mcp import Client

from catalog.errors import NotFoundError
from servers.mcp import create_server
from servers.prometheus_metrics import REGISTRY
from servers.service import DataProductsService
from servers.settings import Settings

pytestmark = pytest.mark.anyio


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_check_runs_are_counted_by_outcome_and_timed(settings: Settings) -> None:
    ok, failed = (
        value("dataproducts_runs_total", kind="check", outcome="ok"),
        value("dataproducts_runs_total", kind="check", outcome="error"),
    )
    timed = value("dataproducts_run_duration_seconds_count", kind="check")
    async with DataProductsService.open(settings) as service:
        assert await service.run_checks(["shop.orders"])
        with pytest.raises(NotFoundError):
            await service.run_checks(["shop.nope"])
    assert value("dataproducts_runs_total", kind="check", outcome="ok") == ok + 1
    assert value("dataproducts_runs_total", kind="check", outcome="error") == failed + 1
    assert value("dataproducts_run_duration_seconds_count", kind="check") == timed + 2


async def test_a_failed_index_run_is_counted_as_an_error(settings: Settings) -> None:
    failed = value("dataproducts_runs_total", kind="index", outcome="error")
    async with DataProductsService.open(settings) as service:
        with pytest.raises(NotFoundError):
            await service.index_products(product="shop.nope")
    assert value("dataproducts_runs_total", kind="index", outcome="error") == failed + 1


async def test_a_tool_name_the_caller_made_up_is_counted_as_other(settings: Settings) -> None:
    other = value("dataproducts_calls_total", tool="other", outcome="error")
    made_up = value("dataproducts_calls_total", tool="made_up_tool_1", outcome="error")
    async with Client(create_server(settings, principal=settings.principal("sam"))) as sam:
        assert (await sam.call_tool("made_up_tool_1", {})).is_error
    assert value("dataproducts_calls_total", tool="other", outcome="error") == other + 1
    assert value("dataproducts_calls_total", tool="made_up_tool_1", outcome="error") == made_up == 0
    assert value("dataproducts_refusals_total", reason="unknown_tool") >= 1
