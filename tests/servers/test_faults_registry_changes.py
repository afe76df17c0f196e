"""The registry changed by another process while the service runs: picked up within the contract TTL.

A contract is cached for ``contract_cache_s`` seconds (a setting) on the service's clock (here a clock the test
moves). Another process registers a new version with a tightened row filter, then one with a mask:
the very next call once the TTL has passed sees each tightening, on query_product and run_sql alike,
with a SQLite and a PostgreSQL registry.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from catalog.query import Query
from tests.servers.fault_workspace import READER, open_service, sqlite_source

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
TTL = 30.0
ROW_FILTER = """{access: [role:analyst], row_filters: [{when: role:analyst, where: "region = 'EU'"}]}"""
MASK = (
    """{access: [role:analyst], row_filters: [{when: role:analyst, where: "region = 'EU'"}],"""
    " masking: [{columns: [email], unless: role:pii-reader, method: hash}]}"
)
_REGISTER = """
import sys
from catalog.registry import Registry
from tests.servers.fault_workspace import contract

with Registry.from_url(sys.argv[1]) as registry:
    print(registry.register(contract(sys.argv[2], policy=sys.argv[3]), actor="owner").status)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def register_elsewhere(registry_url: str, version: str, policy: str) -> None:
    """Register ``shop.orders`` ``version`` with ``policy`` from another process."""
    done = subprocess.run(
        [sys.executable, "-c", _REGISTER, registry_url, version, policy],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "new_version", done.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("pg_url"))


async def test_a_tightened_policy_applies_to_the_very_next_call_after_the_ttl(
    tmp_path: Path, registry_url: str
) -> None:
    clock = Clock()
    service = open_service(
        tmp_path,
        sqlite_source(tmp_path / "shop.sqlite"),
        registry_url=registry_url,
        settings={"contract_cache_s": TTL},
        clock=clock,
    )
    query = Query(columns=["id", "email"], order_by=[{"column": "id"}])
    sql = "SELECT id, email FROM shop.orders ORDER BY id"
    async with service:
        first = await service.query_product(READER, "shop.orders", query)
        assert [r[0] for r in first.rows] == [1, 2, 3]

        register_elsewhere(registry_url, "1.1.0", ROW_FILTER)
        clock.now += TTL - 0.5  # still within the TTL of the copy read by the first call
        assert (await service.query_product(READER, "shop.orders", query)).row_count == 3
        clock.now += 0.5  # the TTL has passed: the very next calls see the row filter
        assert [r[0] for r in (await service.query_product(READER, "shop.orders", query)).rows] == [1, 3]
        assert [r[0] for r in (await service.run_sql(READER, sql)).rows] == [1, 3]
        assert (await service.describe_product(READER, "shop.orders")).version == "1.1.0"

        register_elsewhere(registry_url, "1.2.0", MASK)
        clock.now += TTL
        masked = await service.query_product(READER, "shop.orders", query)
        assert masked.masked_columns == ["email"]
        assert [r[0] for r in masked.rows] == [1, 3]
        assert "a@example.org" not in str(masked.rows) and "c@example.org" not in str(masked.rows)
        by_sql = await service.run_sql(READER, sql)
        assert by_sql.masked_columns == ["email"] and "a@example.org" not in str(by_sql.rows)
