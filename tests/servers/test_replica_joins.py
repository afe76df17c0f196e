"""run_sql across stores: a SQLite product joined with a PostgreSQL product through their DuckDB replicas."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError
from catalog.principal import Principal
from catalog.registry import Registry
from servers.service import DataProductsService
from servers.settings import Settings
from tests.connectors import replica_fixtures as shop

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]
EU = Principal(name="eve", roles=frozenset({"eu"}))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _customers(**replica: object) -> ProductContract:
    data = {
        "name": "crm.customers",
        "version": "1.0.0",
        "title": "Customers",
        "description": "One row per customer",
        "owner": {"team": "crm"},
        "source": {"connection": "crm", "table": "customers"},
        "primary_key": ["email"],
        "columns": [
            {"name": "email", "type": "string", "description": "e-mail"},
            {"name": "tier", "type": "string", "description": "gold or basic"},
        ],
        "policy": {"access": ["*"]},
        **({"replicas": {"analytical": replica}} if replica else {}),
    }
    return ProductContract.model_validate(data)


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    shop.create(
        engine := shop.engine(tmp_path / "shop.db"),
        [(i, f"u{i % 4}@x.org", "EU" if i % 2 else "US", Decimal(i), dt.datetime(2026, 1, 1)) for i in range(12)],
    )
    engine.dispose()
    crm = sa.create_engine(pg_url)
    with crm.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (email TEXT PRIMARY KEY, tier TEXT)")
        conn.exec_driver_sql("INSERT INTO customers VALUES ('u1@x.org', 'gold'), ('u3@x.org', 'basic')")
    crm.dispose()
    return Settings(
        workspace=tmp_path,
        hash_salt=SecretStr("pepper"),
        connections={
            "shop": {"kind": "sqlite", "path": str(tmp_path / "shop.db")},
            "crm": {"kind": "postgresql", "url": SecretStr(pg_url)},
        },
    )


SQL = (
    "SELECT c.tier, count(*) AS n, sum(o.amount) AS total FROM shop.orders AS o "
    "JOIN crm.customers AS c ON c.email = o.customer_email GROUP BY c.tier ORDER BY c.tier"
)


async def test_products_of_two_stores_join_through_their_replicas_under_each_ones_governance(
    settings: Settings,
) -> None:
    with Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace) as registry:
        registry.register(shop.contract(), actor="tests")
        registry.register(_customers(refresh="full"), actor="tests")
    async with DataProductsService.open(settings) as service:
        with pytest.raises(InvalidRequestError, match="has not been synced yet"):
            await service.run_sql(EU, SQL)
        await service.sync_replicas()
        result = await service.run_sql(EU, SQL)
    assert result.store["name"] == "replica"
    # eve sees EU orders only (odd order ids) with hashed e-mails: the hashes match no customer
    assert result.rows == []
    pii = Principal(name="pat", roles=frozenset({"pii"}))
    async with DataProductsService.open(settings) as service:
        joined = await service.run_sql(pii, SQL)
    assert joined.store["name"] == "replica"
    # u1: orders 1, 5, 9 (gold); u3: orders 3, 7, 11 (basic)
    assert joined.rows == [["basic", 3, 21], ["gold", 3, 15]]
