"""PostgreSQL stopped (immediate mode, as a crash) while calls run, then started again.

While the cluster is down every call fails with a clear ``unavailable`` error (``store_unavailable``
when only a product's source is down) and nothing is served unaudited; once it is back the same
server serves again without a restart, and every call it served has its audit row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from catalog.errors import DataProductsError
from catalog.query import Query
from servers.mcp import create_server
from servers.service import DataProductsService
from tests.pgcluster import PostgresCluster, find_pg_bindir
from tests.servers.fault_workspace import READER, open_service, postgresql_source

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test alone: it is stopped and started again under the test's calls."""
    if find_pg_bindir() is None:
        pytest.fail("PostgreSQL binaries are required (apt-get install postgresql-15, or set DATAPRODUCTS_PG_BINDIR)")
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class CallLog:
    """What the client saw: served calls and failures by code, in order."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    @property
    def served(self) -> int:
        return self.outcomes.count("ok")

    def codes(self) -> Counter[str]:
        return Counter(o for o in self.outcomes if o != "ok")


async def _call(service: DataProductsService, calls: CallLog) -> None:
    try:
        await service.query_product(READER, "shop.orders", Query(columns=["id", "amount"]))
        calls.outcomes.append("ok")
    except DataProductsError as exc:
        calls.outcomes.append(exc.code)


async def _through_an_outage(service: DataProductsService, cluster: PostgresCluster, *, clients: int = 4) -> CallLog:
    """Calls from ``clients`` concurrent callers while the cluster is stopped and started again.

    Returns once each caller failed while it was down and was served again after it came back.
    """
    calls = CallLog()
    for _ in range(3):
        await _call(service, calls)
    assert calls.outcomes == ["ok"] * 3
    phase = {"down": False, "back": False}
    failed_down = [0] * clients
    served_back = [0] * clients

    async def caller(i: int) -> None:
        with anyio.fail_after(120):
            while served_back[i] < 2:
                before = len(calls.outcomes)
                await _call(service, calls)
                outcome = calls.outcomes[before]
                if phase["down"] and not phase["back"] and outcome != "ok":
                    failed_down[i] += 1
                if phase["back"] and outcome == "ok":
                    served_back[i] += 1
                await anyio.sleep(0.01)

    async def outage() -> None:
        await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(cluster.halt)
        phase["down"] = True
        with anyio.fail_after(60):
            while min(failed_down) < 2:
                await anyio.sleep(0.05)
        await anyio.to_thread.run_sync(cluster.resume)
        phase["back"] = True

    async with anyio.create_task_group() as group:
        group.start_soon(outage)
        for i in range(clients):
            group.start_soon(caller, i)
    return calls


async def test_a_stopped_registry_fails_calls_as_unavailable_and_recovers_without_a_restart(
    tmp_path: Path, own_cluster: PostgresCluster
) -> None:
    registry_url = own_cluster.create_database("registry")
    source = postgresql_source(own_cluster.create_database("shop"))
    service = open_service(tmp_path, source, registry_url=registry_url, settings={"contract_cache_s": 0.0})
    async with service:
        calls = await _through_an_outage(service, own_cluster)
        # down: the registry and its audit log are gone, so nothing may be served (fail closed)
        assert set(calls.codes()) == {"unavailable"}, calls.codes()
        rows = service.audit.query(tool="query_product", limit=10_000)
    served = [r for r in rows if r.outcome == "ok"]
    # every served call has its row; a row whose commit was cut off by the crash may add one per caller
    assert calls.served <= len(served) <= calls.served + 4
    # a failure is audited only when the database came back between the read and the audit write
    assert {r.error_code for r in rows if r.outcome != "ok"} <= {"unavailable"}


async def test_a_stopped_source_fails_calls_as_store_unavailable_and_every_call_is_audited(
    tmp_path: Path, own_cluster: PostgresCluster
) -> None:
    source = postgresql_source(own_cluster.create_database("shop"))
    service = open_service(tmp_path, source)  # the registry is a SQLite file: it stays up
    async with service:
        calls = await _through_an_outage(service, own_cluster)
        assert set(calls.codes()) == {"store_unavailable"}, calls.codes()
        rows = service.audit.query(tool="query_product", limit=10_000)
    assert Counter(r.error_code or "ok" for r in rows) == Counter(calls.outcomes)


async def test_the_unavailable_message_names_the_database_and_says_to_retry(
    tmp_path: Path, own_cluster: PostgresCluster
) -> None:
    registry_url = own_cluster.create_database("registry")
    source = postgresql_source(own_cluster.create_database("shop"))
    service = open_service(tmp_path, source, registry_url=registry_url, settings={"contract_cache_s": 0.0})
    async with service:
        await anyio.to_thread.run_sync(own_cluster.halt)
        with pytest.raises(DataProductsError) as info:
            await service.describe_product(READER, "shop.orders")
        await anyio.to_thread.run_sync(own_cluster.resume)
        assert (await service.describe_product(READER, "shop.orders")).name == "shop.orders"
    assert info.value.code == "unavailable"
    message = info.value.message
    assert f"127.0.0.1:{own_cluster.port}/registry" in message
    assert "cannot be reached" in message and "retry" in message
    assert "Traceback" not in message and "sqlalchemy" not in message.lower()


async def test_an_agent_reads_one_unavailable_line_while_the_registry_is_down(
    tmp_path: Path, own_cluster: PostgresCluster
) -> None:
    registry_url = own_cluster.create_database("registry")
    source = postgresql_source(own_cluster.create_database("shop"))
    service = open_service(tmp_path, source, registry_url=registry_url, settings={"contract_cache_s": 0.0})
    async with service, Client(create_server(service.settings, principal=READER, service=service)) as agent:
        args = {"product": "shop.orders", "limit": 2}
        assert not (await agent.call_tool("query_product", args)).is_error
        await anyio.to_thread.run_sync(own_cluster.halt)
        down = await agent.call_tool("query_product", args)
        await anyio.to_thread.run_sync(own_cluster.resume)
        back = await agent.call_tool("query_product", args)
    assert down.is_error
    text = down.content[0].text  # type: ignore[union-attr]
    assert text.startswith("unavailable: ") and "retry" in text and "\n" not in text
    assert not back.is_error
